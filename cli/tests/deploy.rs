//! The Kubernetes manifests in deploy/: every object the kustomization renders is valid
//! against the Kubernetes JSON schemas (scripts/validate-manifests.sh, with the schemas of the
//! `kubernetes-validate` package from PyPI), the kfcache config file it ships is one the
//! binary accepts, and the gateway Deployment's arguments start a gateway.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::WithoutKfcacheEnv;
use serde::Deserialize;

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
        "Deployment",
        "PodDisruptionBudget",
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

/// The rendered gateway Deployment's container (its args, and the values its `$(VAR)`s name).
fn rendered_gateway() -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let root = common::workspace();
    let out = Command::new("bash")
        .arg(root.join("scripts/validate-manifests.sh"))
        .arg("--print")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = None;
    let mut values = std::collections::BTreeMap::new();
    for document in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let object = serde_yaml::Value::deserialize(document).unwrap();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if kind == "Deployment" && name == "kfcache-gateway" {
            let container = &object["spec"]["template"]["spec"]["containers"][0];
            args = Some(serde_yaml::from_value::<Vec<String>>(container["args"].clone()).unwrap());
        }
        if kind == "ConfigMap" && name.starts_with("kfcache-values") {
            values = serde_yaml::from_value(object["data"].clone()).unwrap();
        }
    }
    (
        args.expect("no kfcache-gateway Deployment rendered"),
        values,
    )
}

#[test]
fn the_gateway_deployment_starts_a_gateway_with_its_own_arguments() {
    let (args, values) = rendered_gateway();
    // As the kubelet expands $(VAR) from the container's environment; only the listen
    // addresses change, to free loopback ports.
    let args: Vec<String> = args
        .iter()
        .map(|arg| {
            let mut arg = arg.clone();
            for (name, value) in &values {
                arg = arg.replace(&format!("$({name})"), value);
            }
            assert!(
                !arg.contains("$("),
                "{arg}: a variable values.env does not define"
            );
            match arg.as_str() {
                "0.0.0.0:9000" | "0.0.0.0:9090" => "127.0.0.1:0".to_string(),
                _ => arg,
            }
        })
        .collect();
    let db = tempfile::tempdir().unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("kfcache"))
        .current_dir(common::workspace())
        .without_kfcache_env()
        .env("KFCACHE_DB", db.path().join("kfcache.db"))
        .args(&args)
        .args(["--ignite", "127.0.0.1:1"])
        .env("KFCACHE_CONFIG", "deploy/kfcache-config.toml")
        .env("AWS_ACCESS_KEY_ID", "key")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let started = lines.by_ref().map_while(Result::ok).find(|line| {
        line.starts_with("kfcache gateway for namespace") || line.starts_with("error")
    });
    let _ = child.kill();
    let _ = child.wait();
    let started = started.expect("the gateway printed nothing");
    assert!(
        started.starts_with(&format!(
            "kfcache gateway for namespace {}:",
            values["KFCACHE_PIPELINE_NAMESPACE"]
        )),
        "{started}"
    );
    assert!(started.contains("not reachable yet"), "{started}");
}
