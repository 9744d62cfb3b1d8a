//! Cache keys are scoped per Kubernetes namespace, against the real Ignite and moto S3
//! servers started by scripts/services.sh: an object staged for namespace `team-a` is a hit
//! for a pod of `team-a` and a miss (read from the origin) for a pod of `team-b`; a pod cannot
//! name another namespace's tenant; names that are not Kubernetes namespace names are refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use assert_cmd::Command;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::{json, Value};

struct World {
    ignite: String,
    endpoint: String,
    namespace: String,
    uri: String,
    data: Vec<u8>,
}

impl World {
    fn kfcache(&self, dir: &Path) -> Command {
        let mut cmd = common::kfcache(dir);
        cmd.env("XDG_CONFIG_HOME", dir)
            .env("KFCACHE_IGNITE", &self.ignite);
        cmd
    }

    /// The cache flags, given after the subcommand.
    fn connection(&self) -> [&str; 4] {
        [
            "--key-prefix",
            &self.namespace,
            "--s3-endpoint",
            &self.endpoint,
        ]
    }

    /// `kfcache sidecar init` of a pod in Kubernetes namespace `pod_namespace` reading the
    /// object into `target`; its exit code, JSON report (when it succeeded) and stderr.
    fn init(&self, dir: &Path, target: &Path, pod_namespace: &str, extra: &[&str]) -> Init {
        let spec = json!({
            "pipeline": "tenants",
            "template": "train",
            "inputs": [{"name": "data", "source": self.uri, "path": "/data/train.bin"}],
        })
        .to_string();
        let out = self
            .kfcache(dir)
            .args(["sidecar", "init", "--run", "tenants-x1", "--task", "train"])
            .arg(format!("--run-namespace={pod_namespace}"))
            .args(["--spec", &spec, "--format", "json"])
            .args(["--target", target.to_str().unwrap()])
            .args(extra)
            .args(self.connection())
            .output()
            .unwrap();
        Init {
            code: out.status.code(),
            report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn listed(&self, dir: &Path, tenant: Option<&str>) -> Vec<String> {
        let mut cmd = self.kfcache(dir);
        cmd.args(["cache", "ls", "-o", "json"])
            .args(self.connection());
        if let Some(tenant) = tenant {
            cmd.args(["--k8s-namespace", tenant]);
        }
        let listed: Value = serde_json::from_str(&common::stdout_of(&mut cmd)).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uri"].as_str().unwrap().to_string())
            .collect()
    }
}

struct Init {
    code: Option<i32>,
    report: Value,
    stderr: String,
}

async fn world() -> World {
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let key = format!("{}/train.bin", common::unique("tenants"));
    let data: Vec<u8> = (0..(5 << 20) + 11u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let store = common::s3_store(&endpoint, &bucket);
    store
        .put(
            &StorePath::from(key.as_str()),
            PutPayload::from(data.clone()),
        )
        .await
        .unwrap();
    World {
        ignite,
        endpoint,
        namespace: common::unique("tenants-ns").replace('.', "-"),
        uri: format!("s3://{bucket}/{key}"),
        data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reads_only_what_was_staged_for_its_namespace() {
    let world = world().await;
    let dir = tempfile::tempdir().unwrap();
    common::stdout_of(
        world
            .kfcache(dir.path())
            .args(["cache", "put", &world.uri, "--k8s-namespace", "team-a"])
            .args(world.connection()),
    );
    assert_eq!(
        world.listed(dir.path(), Some("team-a")),
        vec![world.uri.clone()]
    );
    assert!(world.listed(dir.path(), Some("team-b")).is_empty());
    assert!(
        world.listed(dir.path(), None).is_empty(),
        "no tenant is its own namespace"
    );

    // A pod of team-a: a hit, the origin's bytes.
    let target_a = tempfile::tempdir().unwrap();
    let a = world.init(dir.path(), target_a.path(), "team-a", &[]);
    assert_eq!(a.code, Some(0), "{}", a.stderr);
    assert_eq!(a.report["hits"], 1, "{}", a.report);
    assert_eq!(a.report["files"][0]["outcome"], "hit", "{}", a.report);
    assert!(std::fs::read(target_a.path().join("data/train.bin")).unwrap() == world.data);

    // A pod of team-b asks for the same URI: a miss read from the origin, same bytes.
    let target_b = tempfile::tempdir().unwrap();
    let b = world.init(dir.path(), target_b.path(), "team-b", &[]);
    assert_eq!(b.code, Some(0), "{}", b.stderr);
    assert_eq!(b.report["hits"], 0, "{}", b.report);
    assert_eq!(b.report["files"][0]["outcome"], "miss", "{}", b.report);
    assert_eq!(b.report["bytes_from_cache"], 0);
    assert!(std::fs::read(target_b.path().join("data/train.bin")).unwrap() == world.data);

    // Filling on demand, team-b's copy lands in team-b's namespace; team-a's stays alone.
    let target_b2 = tempfile::tempdir().unwrap();
    let filled = world.init(
        dir.path(),
        target_b2.path(),
        "team-b",
        &["--fill-budget", "64MiB"],
    );
    assert_eq!(filled.code, Some(0), "{}", filled.stderr);
    assert_eq!(
        world.listed(dir.path(), Some("team-b")),
        vec![world.uri.clone()]
    );
    assert_eq!(
        world.listed(dir.path(), Some("team-a")),
        vec![world.uri.clone()]
    );

    // A pod of team-b cannot name team-a's tenant: refused before anything is read.
    let target_c = tempfile::tempdir().unwrap();
    let refused = world.init(
        dir.path(),
        target_c.path(),
        "team-b",
        &["--k8s-namespace", "team-a"],
    );
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("\"team-a\"") && refused.stderr.contains("\"team-b\""),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_dir(target_c.path()).unwrap().count(), 0);

    for tenant in ["team-a", "team-b"] {
        common::stdout_of(world.kfcache(dir.path()).args([
            "cache",
            "clear",
            "--k8s-namespace",
            tenant,
        ]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_kubernetes_namespaces_are_refused() {
    let world = world().await;
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../team-a", "Team-A", "team.a", "-team"] {
        let out = world
            .kfcache(dir.path())
            .args(["cache", "ls", &format!("--k8s-namespace={bad}")])
            .args(world.connection())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{bad:?}")) && stderr.contains("not a Kubernetes namespace"),
            "{stderr}"
        );

        let target = tempfile::tempdir().unwrap();
        let init = world.init(dir.path(), target.path(), bad, &[]);
        assert_eq!(init.code, Some(2), "{bad}: {}", init.stderr);
        assert!(init.stderr.contains("--run-namespace"), "{}", init.stderr);
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    }
}
