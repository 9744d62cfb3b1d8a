//! What a run on the control plane measured, read from where it really happened:
//! - the node agent's pod timelines (every container's start and exit, to the microsecond):
//!   a task's input wait runs from the start of Argo's `init` container, which downloads its
//!   inputs, to the start of `main`;
//! - the gateway's log (one line per `GetObject`, `hit` or `miss`, with the object's URI):
//!   which inputs a task read from the cache;
//! - the origin's own access log (moto's, one line per request it answered) with the cache's
//!   manifests (when each object became cached): GETs the origin answered for objects that
//!   were in the cache when they were read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};

/// One pod's containers as the agent ran them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodTimes {
    /// The first container's start (Argo's `init`).
    pub start: Option<DateTime<Utc>>,
    /// `main`'s start: the inputs are in place.
    pub main_start: Option<DateTime<Utc>>,
    /// `main`'s exit: the compute is done.
    pub main_exit: Option<DateTime<Utc>>,
    /// The last container's exit (`wait` has uploaded the outputs).
    pub end: Option<DateTime<Utc>>,
}

/// Reads a timeline (`timeline.jsonl` of the agent's pod directory).
pub fn pod_times(text: &str) -> PodTimes {
    let mut times = PodTimes::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(at) = event["at"]
            .as_str()
            .and_then(|a| a.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let main = event["container"] == "main";
        match event["event"].as_str() {
            Some("started") => {
                times.start = Some(times.start.map_or(at, |s| s.min(at)));
                if main {
                    times.main_start = Some(at);
                }
            }
            Some("exited") => {
                times.end = Some(times.end.map_or(at, |e| e.max(at)));
                if main {
                    times.main_exit = Some(at);
                }
            }
            _ => {}
        }
    }
    times
}

/// The task and instance of an Argo node name: `WF.train` → (`train`, ``),
/// `WF.preprocess(1:1)` → (`preprocess`, `1:1`).
pub fn task_of_node(workflow: &str, node: &str) -> Option<(String, String)> {
    let rest = node.strip_prefix(workflow)?.strip_prefix('.')?;
    match rest.split_once('(') {
        Some((task, instance)) => {
            Some((task.to_string(), instance.trim_end_matches(')').to_string()))
        }
        None => Some((rest.to_string(), String::new())),
    }
}

/// One `GetObject` the gateway answered.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRead {
    pub at: DateTime<Utc>,
    pub uri: String,
    pub hit: bool,
    /// Bytes served from the cache (hits only).
    pub bytes: Option<u64>,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// The `hit` and `miss` lines of the gateway's log (`tracing`'s text format at debug level:
/// `TIME DEBUG kfcache_gateway::service: hit uri=… start=… end=…`).
pub fn gateway_reads(text: &str) -> Vec<GatewayRead> {
    let mut reads = Vec::new();
    for line in text.lines() {
        let plain = strip_ansi(line);
        let line = plain.as_str();
        if !line.contains("kfcache_gateway") {
            continue;
        }
        let hit = line.contains(": hit ");
        if !(hit || line.contains(": miss ")) {
            continue;
        }
        let (Some(at), Some(uri)) = (
            line.split_whitespace()
                .next()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok()),
            field(line, "uri"),
        ) else {
            continue;
        };
        let bytes = match (field(line, "start"), field(line, "end")) {
            (Some(start), Some(end)) => start
                .parse::<u64>()
                .ok()
                .zip(end.parse::<u64>().ok())
                .map(|(s, e)| e.saturating_sub(s)),
            _ => None,
        };
        reads.push(GatewayRead {
            at,
            uri: uri.to_string(),
            hit,
            bytes: if hit { bytes } else { None },
        });
    }
    reads
}

/// `line` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A task instance's loading window, and the S3 URIs (objects or prefixes) it reads.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub inputs: Vec<String>,
}

/// Per window: (bytes from the cache, reads from the origin). A read belongs to the window
/// that contains its time; among several, to one that names the object among its inputs, and
/// then to one that has not read that object yet (each task reads each object once).
pub fn attribute(reads: &[GatewayRead], windows: &[Window]) -> Vec<(u64, u32)> {
    let slack = chrono::Duration::milliseconds(200);
    let mut out = vec![(0u64, 0u32); windows.len()];
    let mut read_by: HashMap<(usize, &str), u32> = HashMap::new();
    for read in reads {
        let candidates: Vec<usize> = (0..windows.len())
            .filter(|&i| windows[i].start - slack <= read.at && read.at <= windows[i].end + slack)
            .collect();
        let names = |i: &usize| {
            windows[*i].inputs.iter().any(|input| {
                read.uri == *input || (input.ends_with('/') && read.uri.starts_with(input.as_str()))
            })
        };
        let named: Vec<usize> = candidates.iter().copied().filter(names).collect();
        let pool = if named.is_empty() { candidates } else { named };
        let Some(&chosen) = pool
            .iter()
            .min_by_key(|i| read_by.get(&(**i, read.uri.as_str())).copied().unwrap_or(0))
        else {
            continue;
        };
        *read_by.entry((chosen, read.uri.as_str())).or_default() += 1;
        if read.hit {
            out[chosen].0 += read.bytes.unwrap_or(0);
        } else {
            out[chosen].1 += 1;
        }
    }
    out
}

/// One GET in the origin's access log.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginGet {
    /// The second the origin logged it in (its log has whole seconds).
    pub second: DateTime<Utc>,
    pub uri: String,
}

/// The object GETs of moto's access log (`127.0.0.1 - - [05/Dec/2026 12:34:47] "GET
/// /bucket/key?x-id=GetObject HTTP/1.1" 200 -`); listings (no key) are left out.
pub fn origin_gets(text: &str) -> Vec<OriginGet> {
    let mut gets = Vec::new();
    for line in text.lines() {
        let Some(open) = line.find('[') else { continue };
        let Some(close) = line[open..].find(']').map(|c| open + c) else {
            continue;
        };
        let Ok(second) = NaiveDateTime::parse_from_str(&line[open + 1..close], "%d/%b/%Y %H:%M:%S")
        else {
            continue;
        };
        let Some(request) = line[close..].split('"').nth(1) else {
            continue;
        };
        let mut parts = request.split_whitespace();
        if parts.next() != Some("GET") {
            continue;
        }
        let Some(target) = parts.next() else { continue };
        let path = target.split('?').next().unwrap_or_default();
        let Some((bucket, key)) = path.trim_start_matches('/').split_once('/') else {
            continue;
        };
        if bucket.is_empty() || key.is_empty() {
            continue;
        }
        gets.push(OriginGet {
            second: second.and_utc(),
            uri: format!("s3://{bucket}/{}", percent_decode(key)),
        });
    }
    gets
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GETs the origin answered for objects already cached: logged in a second that began after
/// the object's manifest was written (`staged_at`). The prefetcher's own read of an object
/// ends before its manifest, so it never counts; a pod's read within the same second as the
/// staging does not count either (the log cannot order them).
pub fn gets_of_cached(gets: &[OriginGet], staged_at: &BTreeMap<String, DateTime<Utc>>) -> u64 {
    gets.iter()
        .filter(|get| staged_at.get(&get.uri).is_some_and(|at| *at < get.second))
        .count() as u64
}

/// `staged_at` of each manifest of `kfcache cache ls -o json`.
pub fn staged_times(json: &str) -> BTreeMap<String, DateTime<Utc>> {
    serde_json::from_str::<Vec<serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            Some((
                m["uri"].as_str()?.to_string(),
                m["staged_at"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The bytes of the moto access log past `offset`.
pub fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn a_timeline_gives_the_input_wait_and_the_end() {
        let text = r#"{"container":"init","kind":"init","event":"started","at":"2026-12-05T10:00:00.100000Z"}
{"container":"init","kind":"init","event":"exited","at":"2026-12-05T10:00:03.000000Z","exit_code":0}
{"container":"wait","kind":"container","event":"started","at":"2026-12-05T10:00:03.100000Z"}
{"container":"main","kind":"container","event":"started","at":"2026-12-05T10:00:03.200000Z"}
{"container":"main","kind":"container","event":"exited","at":"2026-12-05T10:00:09.000000Z","exit_code":0}
{"container":"wait","kind":"container","event":"exited","at":"2026-12-05T10:00:10.500000Z","exit_code":0}
"#;
        let times = pod_times(text);
        assert_eq!(times.start, Some(at("2026-12-05T10:00:00.1Z")));
        assert_eq!(times.main_start, Some(at("2026-12-05T10:00:03.2Z")));
        assert_eq!(times.main_exit, Some(at("2026-12-05T10:00:09Z")));
        assert_eq!(times.end, Some(at("2026-12-05T10:00:10.5Z")));
    }

    #[test]
    fn node_names_give_task_and_instance() {
        assert_eq!(
            task_of_node("wf-1", "wf-1.preprocess(1:1)"),
            Some(("preprocess".into(), "1:1".into()))
        );
        assert_eq!(
            task_of_node("wf-1", "wf-1.train-vit"),
            Some(("train-vit".into(), String::new()))
        );
        assert_eq!(task_of_node("wf-1", "other.train"), None);
    }

    #[test]
    fn gateway_lines_are_read_and_reads_go_to_the_task_that_names_them() {
        let log = "2026-12-05T10:00:01.000000Z DEBUG kfcache_gateway::service: hit uri=s3://b/d/part-0.bin start=0 end=100\n\
                   2026-12-05T10:00:01.500000Z DEBUG kfcache_gateway::service: miss uri=s3://b/labels.csv reason=not_cached\n\
                   2026-12-05T10:00:02.000000Z DEBUG kfcache_gateway::service: hit uri=s3://b/labels.csv start=0 end=40\n\
                   2026-12-05T10:00:02.000000Z INFO other: hit uri=s3://b/x start=0 end=1\n";
        let reads = gateway_reads(log);
        assert_eq!(reads.len(), 3);
        let coloured = "\u{1b}[2m2026-12-05T10:00:01.000000Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mkfcache_gateway::service\u{1b}[0m\u{1b}[2m:\u{1b}[0m hit \u{1b}[3muri\u{1b}[0m\u{1b}[2m=\u{1b}[0ms3://b/k start=0 end=5";
        assert_eq!(gateway_reads(coloured)[0].uri, "s3://b/k");
        assert_eq!(reads[0].bytes, Some(100));
        assert!(!reads[1].hit);
        let windows = vec![
            Window {
                start: at("2026-12-05T10:00:00Z"),
                end: at("2026-12-05T10:00:03Z"),
                inputs: vec!["s3://b/d/".into(), "s3://b/labels.csv".into()],
            },
            Window {
                start: at("2026-12-05T10:00:00Z"),
                end: at("2026-12-05T10:00:03Z"),
                inputs: vec!["s3://b/labels.csv".into()],
            },
        ];
        let split = attribute(&reads, &windows);
        // The directory is the first task's; each task read labels once, one from the origin.
        assert_eq!(split[0].0 + split[1].0, 140);
        assert_eq!(split[0].1 + split[1].1, 1);
        assert!(split[0].0 >= 100);
    }

    #[test]
    fn origin_gets_of_cached_objects_count_only_after_their_staging() {
        let log = "127.0.0.1 - - [05/Dec/2026 10:00:01] \"GET /b/k1?x-id=GetObject HTTP/1.1\" 200 -\n\
                   127.0.0.1 - - [05/Dec/2026 10:00:05] \"GET /b/k1 HTTP/1.1\" 200 -\n\
                   127.0.0.1 - - [05/Dec/2026 10:00:05] \"GET /b/?list-type=2&prefix=d HTTP/1.1\" 200 -\n\
                   127.0.0.1 - - [05/Dec/2026 10:00:06] \"HEAD /b/k1 HTTP/1.1\" 200 -\n\
                   127.0.0.1 - - [05/Dec/2026 10:00:07] \"GET /b/a%20b HTTP/1.1\" 200 -\n";
        let gets = origin_gets(log);
        assert_eq!(gets.len(), 3);
        assert_eq!(gets[2].uri, "s3://b/a b");
        let staged = staged_times(
            r#"[{"uri":"s3://b/k1","staged_at":"2026-12-05T10:00:01.700Z"},{"uri":"s3://b/a b","staged_at":"2026-12-05T10:00:07.200Z"}]"#,
        );
        // The read at 10:00:01 is the staging's own; 10:00:05 came after; 10:00:07 is too close.
        assert_eq!(gets_of_cached(&gets, &staged), 1);
    }
}
