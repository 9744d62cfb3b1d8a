//! `kfcache prefetch` as a user runs it on the GPU training fixture, against the real Ignite
//! and moto S3 servers started by scripts/services.sh: `--dry-run` shows the plan and changes
//! nothing; a prefetch stages exactly the GPU tasks' external inputs, each before its
//! deadline, the input three tasks share once; a second prefetch copies nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::Value;

const FIXTURE: &str = "fixtures/argo/gpu-training-pipeline.yaml";

/// The fixture's objects: (bucket, key, bytes).
const OBJECTS: &[(&str, &str, usize)] = &[
    ("ml-datasets", "imagenet-subset/v3/labels.csv", 100_000),
    ("ml-datasets", "imagenet-subset/v3/manifest.json", 2_000),
    ("ml-datasets", "imagenet-subset/v3/raw/test.tar", 1_500_000),
    (
        "ml-datasets",
        "imagenet-subset/v3/raw/train-00.tar",
        1_000_000,
    ),
    (
        "ml-models",
        "pretrained/resnet50-imagenet1k-v2.pth",
        2_500_000,
    ),
    ("ml-models", "pretrained/vit-b16-imagenet21k.pth", 3_000_000),
];

/// What the GPU tasks read from S3 (the rest is produced by upstream tasks or read only by
/// CPU tasks).
const GPU_INPUTS: &[&str] = &[
    "s3://ml-datasets/imagenet-subset/v3/labels.csv",
    "s3://ml-datasets/imagenet-subset/v3/raw/test.tar",
    "s3://ml-models/pretrained/resnet50-imagenet1k-v2.pth",
    "s3://ml-models/pretrained/vit-b16-imagenet21k.pth",
];

async fn upload_fixture_objects(endpoint: &str) {
    for bucket in ["ml-datasets", "ml-models"] {
        common::create_bucket(endpoint, bucket).await;
    }
    for (n, (bucket, key, bytes)) in OBJECTS.iter().enumerate() {
        let store = common::s3_store(endpoint, bucket);
        let data: Vec<u8> = (0..*bytes).map(|i| (i * 7 + n) as u8).collect();
        store
            .put(&StorePath::from(*key), PutPayload::from(data))
            .await
            .unwrap();
    }
}

struct Setup {
    db: tempfile::TempDir,
    ignite: String,
    endpoint: String,
    namespace: String,
}

impl Setup {
    /// `kfcache ARGS…` with the connection flags after them.
    fn kfcache(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = common::kfcache(self.db.path());
        cmd.env("XDG_CONFIG_HOME", self.db.path()).args(args).args([
            "--ignite",
            &self.ignite,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--key-prefix",
            &self.namespace,
        ]);
        cmd
    }

    fn cached(&self) -> BTreeSet<String> {
        let out = common::stdout_of(&mut self.kfcache(&["cache", "ls", "-o", "json"]));
        let listed: Value = serde_json::from_str(&out).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uri"].as_str().unwrap().to_string())
            .collect()
    }
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_stages_the_gpu_tasks_inputs_before_their_deadlines() {
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    upload_fixture_objects(&endpoint).await;
    let setup = Setup {
        db: tempfile::tempdir().unwrap(),
        ignite: common::env("KFCACHE_TEST_IGNITE_1"),
        endpoint,
        namespace: format!("prefetch-cli-{}", std::process::id()),
    };
    let expected: BTreeSet<String> = GPU_INPUTS.iter().map(|s| s.to_string()).collect();

    // --dry-run: the plan, and nothing in the cache afterwards.
    let out = common::stdout_of(&mut setup.kfcache(&[
        "prefetch",
        FIXTURE,
        "--budget",
        "1GiB",
        "--dry-run",
        "-f",
        "json",
    ]));
    let plan: Value = serde_json::from_str(&out).unwrap();
    let items = plan["plan"]["items"].as_array().unwrap();
    let planned: BTreeSet<String> = items
        .iter()
        .filter(|i| i["status"] == "planned")
        .map(|i| i["uri"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, expected);
    let labels = items.iter().find(|i| i["uri"] == GPU_INPUTS[0]).unwrap();
    assert_eq!(
        labels["consumers"],
        serde_json::json!(["train-resnet50", "train-vit", "evaluate"])
    );
    assert!(setup.cached().is_empty(), "--dry-run staged something");

    // The prefetch: JSON event lines (stdout is not a terminal).
    let out = common::stdout_of(&mut setup.kfcache(&["prefetch", FIXTURE, "--budget", "1GiB"]));
    let events = events(&out);
    let staged = of_kind(&events, "staged");
    let uris: Vec<&str> = staged.iter().map(|e| e["uri"].as_str().unwrap()).collect();
    assert_eq!(
        uris.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>(),
        expected
    );
    // Shared by three GPU tasks, copied once.
    assert_eq!(uris.iter().filter(|u| **u == GPU_INPUTS[0]).count(), 1);
    for event in &staged {
        assert_eq!(event["met_deadline"], true, "{event}");
        assert!(event["finished_s"].as_f64().unwrap() <= event["deadline_s"].as_f64().unwrap());
    }
    // The preprocessed dataset does not exist before `preprocess` writes it.
    assert!(of_kind(&events, "waiting")
        .iter()
        .any(|e| e["uri"] == "s3://ml-datasets/imagenet-subset/v3/preprocessed"));
    let summary = of_kind(&events, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["objects_staged"], 4);
    assert_eq!(summary[0]["failed"], 0);
    assert_eq!(setup.cached(), expected);

    // Again: everything is current, nothing is copied.
    let out = common::stdout_of(&mut setup.kfcache(&["prefetch", FIXTURE, "--budget", "1GiB"]));
    let events = self::events(&out);
    assert!(of_kind(&events, "staged").is_empty());
    assert_eq!(of_kind(&events, "hit").len(), 4);

    common::stdout_of(&mut setup.kfcache(&["cache", "clear"]));
}

#[test]
fn a_fractional_budget_without_the_region_size_is_a_clear_error() {
    let db = tempfile::tempdir().unwrap();
    let out = common::kfcache(db.path())
        .args(["prefetch", FIXTURE, "--budget", "50%", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--data-region"), "{stderr}");
}

#[test]
fn a_finished_run_anchors_the_plan_and_follow_ends_with_nothing_to_stage() {
    let setup = Setup {
        db: tempfile::tempdir().unwrap(),
        ignite: common::env("KFCACHE_TEST_IGNITE_1"),
        endpoint: common::env("KFCACHE_TEST_S3_ENDPOINT"),
        namespace: format!("prefetch-follow-{}", std::process::id()),
    };
    common::stdout_of(common::kfcache(setup.db.path()).args([
        "history",
        "import",
        "fixtures/status/gpu-training-pipeline-x7k2p.yaml",
    ]));
    let run = "gpu-training-pipeline-x7k2p";
    let out = common::stdout_of(&mut setup.kfcache(&[
        "prefetch",
        FIXTURE,
        "--run",
        run,
        "--dry-run",
        "-f",
        "json",
    ]));
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["anchor"], "2024-05-06T02:00:00Z");
    // The run was in Kubernetes namespace ml-training: its objects are staged where its
    // sidecars look.
    assert_eq!(
        plan["cache_namespace"],
        format!("{}.ml-training", setup.namespace).as_str()
    );
    // Every task of the run has finished: none of its inputs is needed any more.
    assert_eq!(plan["plan"]["items"], serde_json::json!([]));

    let out = common::stdout_of(&mut setup.kfcache(&[
        "prefetch", FIXTURE, "--run", run, "--follow", "--poll", "0.2",
    ]));
    let events = events(&out);
    assert!(of_kind(&events, "staged").is_empty());
    assert!(of_kind(&events, "note").iter().any(|e| e["text"]
        .as_str()
        .unwrap()
        .contains("every planned task has started")));
    assert_eq!(of_kind(&events, "summary")[0]["objects_staged"], 0);

    // A run that is not in the history store is named.
    let out = setup
        .kfcache(&["prefetch", FIXTURE, "--run", "no-such-run", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-run"));
}
