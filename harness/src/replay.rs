//! The replay profile of an end-to-end benchmark: what the pipeline's inputs and outputs
//! weigh and how long each task computes, read from a `*.profile.yaml` beside the pipeline,
//! and the deterministic bytes every object of a run holds. `kfcache bench e2e` (the replay)
//! and the benchmark on the real control plane share it, so both load the same data.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::units::parse_size;

/// The replay's sizes and compute times.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub compute: BTreeMap<String, f64>,
    #[serde(default)]
    pub jitter: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    /// Per input URI: how many objects, of how many bytes each. A URI ending in `/` is a
    /// directory (an S3 prefix) of objects `part-00000.bin`, `part-00001.bin`, ...
    pub inputs: BTreeMap<String, (u64, u64)>,
    outputs: BTreeMap<String, u64>,
    compute: BTreeMap<String, f64>,
    jitter: f64,
    scale: f64,
    time_scale: f64,
}

const DEFAULT_INPUT: u64 = 64 << 20;
const DEFAULT_OUTPUT: u64 = 16 << 20;

impl Profile {
    pub fn load(path: Option<&Path>, scale: f64, time_scale: f64) -> Result<Profile> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the profile {}", path.display()))?;
                serde_yaml::from_str::<ProfileFile>(&text)
                    .with_context(|| format!("{}: not a replay profile", path.display()))?
            }
            None => ProfileFile::default(),
        };
        let sizes = |map: &BTreeMap<String, String>, what: &str| -> Result<BTreeMap<String, u64>> {
            map.iter()
                .map(|(k, v)| {
                    parse_size(v)
                        .map(|n| (k.clone(), n))
                        .map_err(|e| anyhow::anyhow!("profile {what} {k}: {e}"))
                })
                .collect()
        };
        for (task, seconds) in &file.compute {
            if !(seconds.is_finite() && *seconds >= 0.0) {
                bail!("profile compute {task}: {seconds} is not a number of seconds");
            }
        }
        let mut inputs = BTreeMap::new();
        for (uri, text) in &file.inputs {
            let (count, size) = match text.split_once('x') {
                Some((count, size)) => (
                    count
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| {
                            format!("profile input {uri}: {text:?} is not N x SIZE")
                        })?,
                    size,
                ),
                None => (1, text.as_str()),
            };
            let size = parse_size(size).map_err(|e| anyhow::anyhow!("profile input {uri}: {e}"))?;
            inputs.insert(uri.clone(), (count, size));
        }
        Ok(Profile {
            inputs,
            outputs: sizes(&file.outputs, "output")?,
            compute: file.compute,
            jitter: file.jitter.unwrap_or(0.05).clamp(0.0, 1.0),
            scale,
            time_scale,
        })
    }

    pub fn scaled(&self, bytes: u64) -> u64 {
        ((bytes as f64 * self.scale).round() as u64).max(1)
    }

    /// The objects behind an input URI, with their sizes.
    pub fn objects(&self, uri: &str) -> Vec<(String, u64)> {
        let (count, size) = self.inputs.get(uri).copied().unwrap_or((1, DEFAULT_INPUT));
        let size = self.scaled(size);
        if count == 1 && !uri.ends_with('/') {
            return vec![(uri.to_string(), size)];
        }
        let base = uri.trim_end_matches('/');
        (0..count)
            .map(|i| (format!("{base}/part-{i:05}.bin"), size))
            .collect()
    }

    /// The bytes behind an input URI (every object of a directory).
    pub fn input_size(&self, uri: &str) -> u64 {
        self.objects(uri).iter().map(|(_, size)| size).sum()
    }

    pub fn output_size(&self, task: &str, artifact: &str) -> u64 {
        let key = format!("{task}/{artifact}");
        self.scaled(self.outputs.get(&key).copied().unwrap_or(DEFAULT_OUTPUT))
    }

    /// A compute time for one run of `task`: log-normal around the median.
    pub fn compute(&self, task: &str, gpus: u32, rng: &mut impl Rng) -> f64 {
        let median = self
            .compute
            .get(task)
            .copied()
            .unwrap_or(if gpus > 0 { 5.0 } else { 2.0 });
        let sigma = (1.0 + self.jitter * self.jitter).ln().sqrt();
        // Box–Muller for one standard normal draw.
        let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * self.time_scale * (sigma * z).exp()
    }
}

/// `s3://BUCKET/KEY` as (bucket, key).
pub fn split_s3(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://")?.split_once('/')
}

/// Deterministic bytes for an object (the same every run for the same seed).
pub fn content(uri: &str, size: u64, seed: u64) -> Bytes {
    let mut hash = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in uri.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(hash);
    let mut data = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    rng.fill_bytes(&mut data);
    Bytes::from(data)
}
