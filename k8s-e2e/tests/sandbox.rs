//! The container sandbox on this host (root and mount namespaces needed, no cluster): a
//! command runs chrooted with the host's tools, sees its volume mounts (a single-file subPath, a
//! subPath that does not exist yet, a read-only mount), its environment and working directory,
//! and its termination message reaches the agent.

use std::time::Duration;

use kfcache_k8s_e2e::sandbox::{spawn, ContainerPlan, HostTools, MountPlan, PidNamespace};

#[tokio::test]
async fn a_container_sees_its_mounts_env_workdir_and_only_its_own_processes() {
    let work = tempfile::tempdir().expect("tempdir");
    let volume = work.path().join("volumes/input-artifacts");
    std::fs::create_dir_all(&volume).expect("volume");
    std::fs::write(volume.join("data"), b"payload").expect("data");
    let shared = work.path().join("volumes/shared");
    std::fs::create_dir_all(&shared).expect("shared");
    let readonly = work.path().join("volumes/ro");
    std::fs::create_dir_all(&readonly).expect("ro");
    let bin = work.path().join("image-bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(
        bin.join("hello-from-image"),
        b"#!/bin/sh\necho image-bin-ok\n",
    )
    .expect("script");
    std::fs::set_permissions(
        bin.join("hello-from-image"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let script = "set -e; \
        test \"$(cat /tmp/inputs/data)\" = payload; \
        test -d /var/run/argo/newdir; \
        echo written > /shared/out; \
        if touch /ro/x 2>/dev/null; then echo ro-is-writable; exit 3; fi; \
        test \"$(pwd)\" = /shared; \
        test \"$GREETING\" = hi; \
        hello-from-image; \
        test ! -e /work-marker; \
        test \"$$\" = 1; \
        test \"$(ls -d /proc/[0-9]* | wc -l)\" -lt 5; \
        if kill -CONT -1 2>/dev/null; then echo kill-reached-other-processes; exit 4; fi; \
        echo done > /dev/termination-log; \
        exit 7";
    std::fs::write(work.path().join("work-marker"), b"").expect("marker");
    let plan = ContainerPlan {
        name: "main".into(),
        root: work.path().join("roots/main"),
        host_dirs: kfcache_k8s_e2e::AgentConfig::default_host_dirs(),
        image_bin: Some(bin.clone()),
        termination_message_file: work.path().join("termination/main"),
        termination_message_target: "/dev/termination-log".into(),
        mounts: vec![
            MountPlan {
                source: volume.join("data"),
                target: "/tmp/inputs/data".into(),
                read_only: false,
            },
            MountPlan {
                source: shared.join("newdir"),
                target: "/var/run/argo/newdir".into(),
                read_only: false,
            },
            MountPlan {
                source: shared.clone(),
                target: "/shared".into(),
                read_only: false,
            },
            MountPlan {
                source: readonly.clone(),
                target: "/ro".into(),
                read_only: true,
            },
        ],
        working_dir: "/shared".into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            (
                "PATH".into(),
                format!("{}:/usr/bin:/bin", kfcache_k8s_e2e::config::IMAGE_BIN_DIR),
            ),
            ("GREETING".into(), "hi".into()),
        ],
        prelude: work.path().join("prelude.sh"),
        log: work.path().join("main.log"),
    };
    let mut child =
        spawn(&plan, &HostTools::find().expect("tools"), PidNamespace::Own).expect("spawn");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("container finished in time")
        .expect("wait");
    let log = std::fs::read_to_string(&plan.log).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(7),
        "log:\n{log}\nprelude:\n{}",
        std::fs::read_to_string(&plan.prelude).unwrap_or_default()
    );
    assert!(log.contains("image-bin-ok"), "{log}");
    assert_eq!(
        std::fs::read_to_string(shared.join("out")).expect("out"),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(&plan.termination_message_file).expect("message"),
        "done\n"
    );
    assert!(
        shared.join("newdir").is_dir(),
        "a missing subPath is created as a directory"
    );
}
