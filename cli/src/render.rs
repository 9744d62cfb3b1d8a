//! Output formats of `kfcache analyze`: a task table for terminals, the JSON contract for
//! scripts, and the DAG as Graphviz DOT or Mermaid for pictures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Value};

use kfcache_ops::analysis::Analysis;
use kfcache_ops::units::duration;

/// Column widths; with two spaces of padding per column they add up to at most 100.
const TASK_WIDTH: usize = 22;
const DEPENDS_WIDTH: usize = 16;
const INPUT_WIDTH: usize = 30;

/// One table per pipeline, under a one-line summary.
pub fn table(analyses: &[Analysis]) -> String {
    let mut out = String::new();
    for (n, analysis) in analyses.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let p = &analysis.pipeline;
        let gpu_tasks = p.tasks.iter().filter(|t| t.gpus > 0).count();
        let makespan = analysis.times.iter().map(|t| t.end_s).fold(0.0, f64::max);
        let _ = writeln!(out, "{} `{}` ({})", p.kind, p.name, p.source);
        if !p.schedules.is_empty() {
            let _ = write!(out, "schedule: {}", p.schedules.join(" | "));
            if let Some(tz) = &p.timezone {
                let _ = write!(out, " ({tz})");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} tasks, {} on GPUs, predicted makespan {}",
            p.tasks.len(),
            gpu_tasks,
            duration(makespan)
        );

        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_HORIZONTAL_ONLY)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(["TASK", "GPU", "DEPENDS ON", "INPUTS", "START", "END"]);
        for (task, times) in p.tasks.iter().zip(&analysis.times) {
            let mut id = task.id.clone();
            if let Some(fan_out) = task.fan_out {
                id.push_str(&match fan_out {
                    kfcache_parser::FanOut::Count(n) => format!(" ×{n}"),
                    kfcache_parser::FanOut::Dynamic => " ×?".to_string(),
                });
            }
            let inputs = input_lines(&task.inputs).join("\n");
            let depends = task
                .depends_on
                .iter()
                .map(|d| shorten(d, DEPENDS_WIDTH))
                .collect::<Vec<_>>();
            table.add_row(vec![
                Cell::new(wrap_id(&id, TASK_WIDTH)),
                Cell::new(if task.gpus > 0 {
                    task.gpus.to_string()
                } else {
                    "-".into()
                })
                .set_alignment(CellAlignment::Right),
                Cell::new(if depends.is_empty() {
                    "-".into()
                } else {
                    depends.join("\n")
                }),
                Cell::new(if inputs.is_empty() {
                    "-".into()
                } else {
                    inputs
                }),
                Cell::new(duration(times.start_s)).set_alignment(CellAlignment::Right),
                Cell::new(duration(times.end_s)).set_alignment(CellAlignment::Right),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    out
}

/// Break a dotted task id into lines of at most `width` characters, at the dots where it can.
fn wrap_id(id: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let segments: Vec<&str> = id.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let piece = if i + 1 < segments.len() {
            format!("{segment}.")
        } else {
            segment.to_string()
        };
        if !line.is_empty() && line.chars().count() + piece.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        line.push_str(&piece);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            lines.push(head);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

/// Shorten `text` to at most `max` characters. URIs keep their scheme and host (where the data
/// lives) and the end of their path (what it is), with `…` for what is left out.
fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let tail_of = |n: usize| -> String { text.chars().skip(count.saturating_sub(n)).collect() };
    if let Some((scheme, rest)) = text.split_once("://") {
        let host = rest.split('/').next().unwrap_or("");
        let head = format!("{scheme}://{host}/…");
        let head_len = head.chars().count();
        if head_len + 8 <= max {
            return format!("{head}{}", tail_of(max - head_len));
        }
        let head = format!("{scheme}://…");
        let head_len = head.chars().count();
        if head_len + 4 <= max {
            return format!("{head}{}", tail_of(max - head_len));
        }
    }
    format!("…{}", tail_of(max.saturating_sub(1)))
}

/// The JSON contract of one analysed pipeline.
pub fn pipeline_json(analysis: &Analysis) -> Value {
    let p = &analysis.pipeline;
    let tasks: Vec<Value> = p
        .tasks
        .iter()
        .zip(&analysis.times)
        .map(|(t, times)| {
            json!({
                "id": t.id,
                "name": t.name,
                "template": t.template,
                "kind": t.kind,
                "depends_on": t.depends_on,
                "gpus": t.gpus,
                "fan_out": t.fan_out,
                "condition": t.condition,
                "retries": t.retries,
                "params": t.params,
                "inputs": t.inputs,
                "outputs": t.outputs.iter().map(|o| json!({"name": o.name, "location": o.location, "path": o.path})).collect::<Vec<_>>(),
                "role": t.role,
                "parallelism": t.parallelism,
                "node_selector": t.node_selector,
                "image": t.image,
                "line": t.line,
                "predicted_start_s": times.start_s,
                "predicted_end_s": times.end_s,
            })
        })
        .collect();
    json!({
        "pipeline": {
            "name": p.name,
            "kind": p.kind.as_str(),
            "schedule": p.schedule(),
            "schedules": p.schedules,
            "timezone": p.timezone,
            "source": p.source,
            "parameters": p.parameters,
            "parallelism": p.parallelism,
        },
        "tasks": tasks,
    })
}

/// One object for one pipeline, an array of them for several.
pub fn json(analyses: &[Analysis]) -> Result<String> {
    let value = match analyses {
        [one] => pipeline_json(one),
        many => Value::Array(many.iter().map(pipeline_json).collect()),
    };
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: one cluster per pipeline, GPU tasks filled and labelled with their count.
pub fn dot(analyses: &[Analysis]) -> String {
    let mut out = String::from("digraph kfcache {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    for (n, analysis) in analyses.iter().enumerate() {
        let p = &analysis.pipeline;
        let _ = writeln!(
            out,
            "  subgraph cluster_{n} {{\n    label=\"{}\";",
            dot_escape(&p.name)
        );
        for (i, t) in p.tasks.iter().enumerate() {
            let mut label = dot_escape(&t.id);
            if t.gpus > 0 {
                let _ = write!(label, "\\n{} GPU", t.gpus);
                let _ = writeln!(
                    out,
                    "    p{n}t{i} [label=\"{label}\", style=\"rounded,filled\", fillcolor=\"#76b900\", fontcolor=white];"
                );
            } else {
                let _ = writeln!(out, "    p{n}t{i} [label=\"{label}\"];");
            }
        }
        for (from, to) in analysis.dag.edges() {
            let _ = writeln!(out, "    p{n}t{from} -> p{n}t{to};");
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart: GPU tasks in the `gpu` class.
pub fn mermaid(analyses: &[Analysis]) -> String {
    let mut out =
        String::from("flowchart LR\n  classDef gpu fill:#76b900,color:#fff,stroke:#4a7500\n");
    for (n, analysis) in analyses.iter().enumerate() {
        let p = &analysis.pipeline;
        let _ = writeln!(
            out,
            "  subgraph p{n}[\"{}\"]",
            p.name.replace('"', "#quot;")
        );
        for (i, t) in p.tasks.iter().enumerate() {
            let mut label = t.id.replace('"', "#quot;");
            if t.gpus > 0 {
                let _ = write!(label, "<br/>{} GPU", t.gpus);
            }
            let _ = writeln!(out, "    p{n}t{i}[\"{label}\"]");
        }
        for (from, to) in analysis.dag.edges() {
            let _ = writeln!(out, "    p{n}t{from} --> p{n}t{to}");
        }
        out.push_str("  end\n");
        let gpu: Vec<String> = p
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.gpus > 0)
            .map(|(i, _)| format!("p{n}t{i}"))
            .collect();
        if !gpu.is_empty() {
            let _ = writeln!(out, "  class {} gpu", gpu.join(","));
        }
    }
    out
}

/// How many of a loop's per-item inputs of one name the table lists before it counts the rest.
const ITEM_LINES: usize = 3;

/// The table's lines for a task's inputs: one per input, except that past [`ITEM_LINES`] of the
/// per-item inputs of one name, the rest are counted on one line.
fn input_lines(inputs: &[kfcache_parser::Input]) -> Vec<String> {
    let mut per_item: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for input in inputs.iter().filter(|i| i.item.is_some()) {
        per_item.entry(input.name.as_str()).or_default().1 += 1;
    }
    let mut lines = Vec::new();
    for input in inputs {
        if input.item.is_some() {
            let (seen, total) = per_item.entry(input.name.as_str()).or_default();
            *seen += 1;
            if *seen > ITEM_LINES {
                if seen == total {
                    let line = format!("… {} more items of `{}`", *total - ITEM_LINES, input.name);
                    lines.push(shorten(&line, INPUT_WIDTH));
                }
                continue;
            }
        }
        lines.push(shorten(
            input.source.as_deref().unwrap_or(&input.name),
            INPUT_WIDTH,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_scheme_and_tail() {
        let s = shorten("s3://ml-datasets/imagenet/train/shard-000123.tar", 36);
        assert!(s.starts_with("s3://ml-datasets/…"), "{s}");
        assert!(s.ends_with("shard-000123.tar"), "{s}");
        assert!(s.chars().count() <= 36, "{s}");
        assert_eq!(shorten("short", 30), "short");
    }

    #[test]
    fn long_ids_wrap_at_dots() {
        assert_eq!(
            wrap_id("model-family.train-and-evaluate.train", 22),
            "model-family.\ntrain-and-evaluate.\ntrain"
        );
        assert_eq!(wrap_id("short", 22), "short");
        let long = "x".repeat(30);
        assert!(wrap_id(&long, 22).lines().all(|l| l.chars().count() <= 22));
    }

    #[test]
    fn a_long_loop_lists_its_first_items_and_counts_the_rest() {
        let input = |name: &str, source: &str, item: Option<u32>| kfcache_parser::Input {
            name: name.into(),
            source: Some(source.into()),
            path: None,
            item,
        };
        let mut inputs = vec![input("labels", "s3://b/labels.csv", None)];
        for i in 0..5 {
            inputs.push(input("shard", &format!("s3://b/shard-{i}.bin"), Some(i)));
        }
        inputs.push(input("ckpt", "s3://b/ckpt-0.pt", Some(0)));
        assert_eq!(
            input_lines(&inputs),
            [
                "s3://b/labels.csv",
                "s3://b/shard-0.bin",
                "s3://b/shard-1.bin",
                "s3://b/shard-2.bin",
                "… 2 more items of `shard`",
                "s3://b/ckpt-0.pt",
            ]
        );
    }
}
