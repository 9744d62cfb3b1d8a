//! The Kubernetes manifests in deploy/: every object the kustomization renders is valid
//! against the Kubernetes JSON schemas (scripts/validate-manifests.sh, with the schemas of the
//! `kubernetes-validate` package from PyPI), and the kfcache config file it ships is one the
//! binary accepts.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let root = common::workspace();
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is not available: validating deploy/ needs python3 with venv and pip \
         (scripts/validate-manifests.sh installs kubernetes-validate from PyPI)"
    );
    let out = Command::new("bash")
        .arg(root.join("scripts/validate-manifests.sh"))
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/validate-manifests.sh failed ({:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Everything the deployment needs was rendered and validated.
    for kind in [
        "ConfigMap",
        "CronJob",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ] {
        assert!(stdout.contains(kind), "{kind} missing from: {stdout}");
    }
    assert!(stdout.contains("Kubernetes 1.29.0 (strict)"), "{stdout}");
}

#[test]
fn a_broken_manifest_is_reported_with_what_is_wrong() {
    let root = common::workspace();
    let broken = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken.path().join(path.file_name().unwrap())).unwrap();
    }
    let cronjob = broken.path().join("cronjob.yaml");
    let text = std::fs::read_to_string(&cronjob).unwrap();
    std::fs::write(
        &cronjob,
        text.replace(
            "\n  concurrencyPolicy: Forbid\n",
            "\n  concurrencyPolicy: Forbid\n  paralelism: 2\n",
        )
        .replace("claimName: kfcache-db", "claimName: kfcache-database"),
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/validate-manifests.sh"))
        .arg(broken.path())
        .current_dir(&root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("'paralelism' was unexpected"), "{stderr}");
    assert!(stderr.contains("kfcache-database"), "{stderr}");
}

#[test]
fn the_shipped_kfcache_config_is_accepted_by_the_binary() {
    // The config is read before anything connects: with an address nothing listens on, the
    // error must be about the connection, not about the file.
    let db = tempfile::tempdir().unwrap();
    let out = common::kfcache(db.path())
        .args([
            "cache",
            "ls",
            "--config",
            "deploy/kfcache-config.toml",
            "--ignite",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("config file"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
