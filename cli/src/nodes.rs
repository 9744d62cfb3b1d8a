//! `kfcache nodes [--deadline 30m] [--nodes-file F] [-f table|json]`: the node list ranking of
//! Algorithm 2 (GPU task monitoring and node ranking paper) and the node a new GPU task with
//! that deadline would go to.
//!
//! The reports come from the cache's node space (`NS/n/NODE`, written by the `kfcache-watch`
//! sidecars through [`kfcache_sidecar::EventLog::report_node`]) or, offline and in tests, from a
//! JSON file. The ranking itself is [`kfcache_sidecar::ranking`]: provisionable nodes by free
//! GPU memory, most first; the pick is the first whose deadline float time exceeds the new
//! task's deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use kfcache_ignite::Client;
use kfcache_prefetcher::IgniteSink;
use kfcache_sidecar::ranking::{self, Ranked};
use kfcache_sidecar::{EventLog, NodeReport};
use serde::{Deserialize, Serialize};

use crate::config::{human_size, ConnectionArgs};
use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// The new GPU task's deadline: a duration (`90s`, `30m`, `1h30m`) or an RFC 3339 time;
    /// the pick is the first ranked node whose float time exceeds it.
    #[arg(long, value_name = "DURATION|TIME")]
    pub deadline: Option<String>,

    /// Read node reports from this JSON file (a list of reports, or what `-f json` prints)
    /// instead of the cache.
    #[arg(long, value_name = "FILE")]
    pub nodes_file: Option<PathBuf>,

    /// Leave out reports older than this (`10m`): nodes that stopped reporting.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,

    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// What `-f json` prints, and what `--nodes-file` reads back.
#[derive(Debug, Serialize)]
struct Ranking<'a> {
    deadline_s: Option<f64>,
    pick: Option<&'a str>,
    nodes: &'a [Ranked],
}

/// A nodes file: a list of reports, or the JSON of `kfcache nodes -f json`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NodesFile {
    Reports(Vec<NodeReport>),
    Ranking { nodes: Vec<RankedEntry> },
}

#[derive(Debug, Deserialize)]
struct RankedEntry {
    report: NodeReport,
}

pub async fn run(_global: &GlobalArgs, args: NodesArgs) -> Result<()> {
    let now = Utc::now();
    let deadline_s = args
        .deadline
        .as_deref()
        .map(|d| seconds_until(d, now))
        .transpose()
        .context("--deadline")?;
    let max_age_s = args
        .max_age
        .as_deref()
        .map(|d| seconds_until(d, now))
        .transpose()
        .context("--max-age")?;
    let mut reports = read_reports(args.nodes_file.as_deref(), &args.connection).await?;
    if let Some(max_age_s) = max_age_s {
        reports.retain(|r| (now - r.at).num_milliseconds() as f64 / 1000.0 <= max_age_s);
    }
    let ranked = ranking::rank(&reports);
    let pick = deadline_s.and_then(|d| ranking::pick(&ranked, d));
    match args.format {
        Format::Json => {
            let out = Ranking {
                deadline_s,
                pick: pick.map(|n| n.node.as_str()),
                nodes: &ranked,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => print!("{}", render_table(&ranked, deadline_s, pick)),
    }
    Ok(())
}

/// The ranked table and the pick, as printed.
fn render_table(ranked: &[Ranked], deadline_s: Option<f64>, pick: Option<&NodeReport>) -> String {
    if ranked.is_empty() {
        return "no node has reported yet (the kfcache-watch sidecars of instrumented GPU tasks \
                report their node)\n"
            .to_string();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "RANK",
        "NODE",
        "STATE",
        "GPU MEMORY FREE",
        "CORES",
        "FLOAT TIME",
        "MISSES",
        "REPORTED (UTC)",
    ]);
    for node in ranked {
        let r = &node.report;
        table.add_row([
            node.rank.to_string(),
            r.node.clone(),
            node.reason.unwrap_or("provisionable").to_string(),
            format!(
                "{} / {}",
                human_size(r.gpu_memory_free_bytes()),
                human_size(r.gpu_memory_total_bytes)
            ),
            format!("{:.0} %", r.gpu_utilization_pct),
            format_seconds(r.float_time_s),
            r.deadline_misses.to_string(),
            r.at.format("%m-%d %H:%M:%S").to_string(),
        ]);
    }
    for column in [0, 3, 4, 5, 6] {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let verdict = match (deadline_s, pick) {
        (None, _) => "pick: give --deadline to choose the node for a new GPU task".to_string(),
        (Some(deadline), Some(node)) => format!(
            "pick for a deadline of {}: {} ({} free GPU memory, float time {})",
            format_seconds(deadline),
            node.node,
            human_size(node.gpu_memory_free_bytes()),
            format_seconds(node.float_time_s)
        ),
        (Some(deadline), None) => format!(
            "pick for a deadline of {}: none (no provisionable node has more float time)",
            format_seconds(deadline)
        ),
    };
    format!("{table}\n{verdict}\n")
}

/// Seconds as `1h 05m 10s`, `4m 00s`, `12.5s`; negative with a leading `-`.
fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return seconds.to_string();
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let abs = seconds.abs();
    if abs < 60.0 {
        return format!("{sign}{abs:.1}s");
    }
    let whole = abs.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{sign}{h}h {m:02}m {s:02}s")
    } else {
        format!("{sign}{m}m {s:02}s")
    }
}

/// Seconds from `now` until `text`: a duration (`90s`, `30m`, `1h30m`) or an RFC 3339 time.
pub fn seconds_until(text: &str, now: DateTime<Utc>) -> Result<f64> {
    let at = kfcache_sidecar::spec::parse_deadline(text, now)?;
    Ok((at - now).num_milliseconds() as f64 / 1000.0)
}

/// Node reports from `nodes_file`, else from the cache the connection settings name.
pub async fn read_reports(
    nodes_file: Option<&Path>,
    connection: &ConnectionArgs,
) -> Result<Vec<NodeReport>> {
    if let Some(path) = nodes_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the nodes file {}", path.display()))?;
        let file: NodesFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: not a list of node reports: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        return Ok(match file {
            NodesFile::Reports(reports) => reports,
            NodesFile::Ranking { nodes } => nodes.into_iter().map(|n| n.report).collect(),
        });
    }
    let settings = connection.resolve()?;
    let addresses = settings.client.addresses.join(",");
    let client = Client::connect(settings.client.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the Ignite cluster for the node reports: tried {addresses} (from {})",
                settings.addresses_origin
            )
        })?;
    let sink = IgniteSink::open(client, &settings.sink)
        .await
        .with_context(|| format!("cannot open Ignite cache {:?}", settings.sink.cache_name))?;
    let log = EventLog::new(Arc::new(sink), settings.base_namespace.clone());
    let reports = log.nodes().await.context("cannot read the node reports")?;
    if reports.iter().any(|r| r.node.is_empty()) {
        bail!("a node report in the cache names no node");
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_like_the_deadline_annotation() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(seconds_until("30m", now).expect("30m"), 1800.0);
        assert_eq!(seconds_until("1h30m", now).expect("1h30m"), 5400.0);
        assert_eq!(
            seconds_until("2026-01-01T00:01:00Z", now).expect("time"),
            60.0
        );
        assert!(seconds_until("soon", now).is_err());
    }

    #[test]
    fn seconds_print_in_hours_minutes_and_seconds() {
        assert_eq!(format_seconds(12.54), "12.5s");
        assert_eq!(format_seconds(240.0), "4m 00s");
        assert_eq!(format_seconds(3910.0), "1h 05m 10s");
        assert_eq!(format_seconds(-75.0), "-1m 15s");
    }
}
