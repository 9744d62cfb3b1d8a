//! The prefetch plan as a Gantt chart (SVG, drawn with plotters, in the style of
//! `kfcache predict --gantt`): staging windows against the predicted starts of the tasks
//! that need them.
//!
//! One row per GPU task the plan serves (the readers in [`Plan::readers`]), in predicted
//! start order, with its predicted window as a green bar; under it one row per plan item
//! whose first consumer it is, with the item's staging window (blue when it ends by the
//! deadline, orange when late), a thin marker where an item is already cached, an outlined
//! red box labelled "no room" over the time an item that does not fit would have needed,
//! and a black tick at each item's deadline. The time axis is in minutes (hours past two
//! hours), from the run's start.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use kfcache_prefetcher::plan::{ItemStatus, Plan, PlanItem, PlanTask};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::config::human_size;
use crate::prefetch_view::uri_tail;
use kfcache_ops::units::duration;

const GPU: RGBColor = RGBColor(0x76, 0xb9, 0x00);
const PLANNED: RGBColor = RGBColor(0x5b, 0x7d, 0xb1);
const LATE: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);
const CACHED: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const NO_ROOM: RGBColor = RGBColor(0xc6, 0x28, 0x28);
const UNSTAGED: RGBColor = RGBColor(0x9e, 0x9e, 0x9e);
const GRID: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);

/// Longest item label, in characters (URIs keep their end).
const ITEM_LABEL_WIDTH: usize = 44;
/// Longest task label, in characters.
const TASK_LABEL_WIDTH: usize = 48;

fn chart_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the plan chart: {e}")
}

/// A row of the chart.
enum Row<'a> {
    Task {
        id: &'a str,
        gpus: u32,
        start_s: f64,
        end_s: f64,
    },
    Item(&'a PlanItem),
}

/// The label of an item's row.
fn item_label(item: &PlanItem) -> String {
    uri_tail(&item.uri, ITEM_LABEL_WIDTH)
}

fn task_label(id: &str, gpus: u32) -> String {
    let suffix = if gpus > 0 {
        format!(" [{gpus} GPU]")
    } else {
        String::new()
    };
    let room = TASK_LABEL_WIDTH.saturating_sub(suffix.chars().count());
    let count = id.chars().count();
    let id = if count > room {
        format!(
            "…{}",
            id.chars()
                .skip(count - room.saturating_sub(1))
                .collect::<String>()
        )
    } else {
        id.to_string()
    };
    format!("{id}{suffix}")
}

/// The rows: each task the plan serves, in predicted start order, followed by the items
/// whose first consumer it is, in plan order.
fn rows<'a>(plan: &'a Plan, tasks: &'a [PlanTask]) -> Vec<Row<'a>> {
    // Each reader's window as the plan sees it (clamped to now, actual once started).
    let mut windows: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for reader in plan.readers.values().flatten() {
        windows
            .entry(reader.task.as_str())
            .or_insert((reader.start_s, reader.end_s));
    }
    let gpus_of = |id: &str| tasks.iter().find(|t| t.id == id).map_or(0, |t| t.gpus);
    let mut readers: Vec<(&str, (f64, f64))> = windows.into_iter().collect();
    readers.sort_by(|a, b| {
        a.1 .0
            .total_cmp(&b.1 .0)
            .then(a.1 .1.total_cmp(&b.1 .1))
            .then(a.0.cmp(b.0))
    });
    let mut rows = Vec::new();
    for (id, (start_s, end_s)) in readers {
        rows.push(Row::Task {
            id,
            gpus: gpus_of(id),
            start_s,
            end_s,
        });
        rows.extend(
            plan.items
                .iter()
                .filter(|item| item.consumers.first().map(String::as_str) == Some(id))
                .map(Row::Item),
        );
    }
    rows
}

/// Where an item's bar lies: its staging window, or for an item that is not staged the
/// time it would have needed before its deadline.
fn item_span(item: &PlanItem, now_s: f64) -> (f64, f64) {
    match item.window {
        Some(window) => window,
        None => (
            item.latest_start_s
                .max(item.ready_s)
                .max(now_s)
                .min(item.deadline_s),
            item.deadline_s,
        ),
    }
}

/// The words beside an item's bar.
fn item_note(item: &PlanItem) -> String {
    let size = if item.size_known {
        human_size(item.bytes)
    } else {
        "size unknown".to_string()
    };
    let again = if item.restage { ", staged again" } else { "" };
    match &item.status {
        ItemStatus::Planned => format!("{size}{again}"),
        ItemStatus::Late => {
            let late = item.window.map_or(0.0, |(_, end)| end - item.deadline_s);
            format!("{size}, late by {}{again}", duration(late))
        }
        ItemStatus::Cached => format!("cached, {size}"),
        ItemStatus::NoRoom { short_bytes } => {
            format!("no room: {size}, {} short", human_size(*short_bytes))
        }
        ItemStatus::WrittenThrough => "written through by its producer".to_string(),
        ItemStatus::Unsupported => "source not supported".to_string(),
    }
}

/// Draws the staging `plan` of a run of `pipeline` (whose tasks are `tasks`) as an SVG
/// document.
pub fn plan_svg(pipeline: &str, plan: &Plan, tasks: &[PlanTask]) -> Result<String> {
    let rows = rows(plan, tasks);
    let labels: Vec<String> = rows
        .iter()
        .map(|row| match row {
            Row::Task { id, gpus, .. } => task_label(id, *gpus),
            Row::Item(item) => format!("  {}", item_label(item)),
        })
        .collect();
    let label_width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, TASK_LABEL_WIDTH + 2) as u32
        * 7
        + 16;
    // At least three rows' height, so that a short chart keeps its proportions.
    let row_count = rows.len().max(3);
    let width = 1100u32.max(label_width + 700);
    /// The strip under the chart that holds the legend.
    const LEGEND_HEIGHT: u32 = 28;
    let height = 110 + LEGEND_HEIGHT + 24 * row_count as u32;

    let now_s = plan.config.now_s;
    // At least a minute, so that an empty or very short plan still has a readable axis.
    let mut end = 60.0f64;
    for row in &rows {
        match row {
            Row::Task { end_s, .. } => end = end.max(*end_s),
            Row::Item(item) => {
                end = end.max(item_span(item, now_s).1).max(item.deadline_s);
            }
        }
    }
    let (unit, unit_name) = if end > 7200.0 {
        (3600.0, "hours")
    } else {
        (60.0, "minutes")
    };
    let x_max = end / unit * 1.04;
    let decimals = if x_max < 10.0 { 1 } else { 0 };
    let min_width = x_max / 400.0;

    let staged = plan.staged().count();
    let title = format!(
        "{pipeline}: staging plan, budget {}, {} staged in {} item(s), peak {}",
        human_size(plan.config.budget_bytes),
        human_size(plan.staged_bytes()),
        staged,
        human_size(plan.peak_bytes)
    );

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (chart_area, _) = root.split_vertically(height - LEGEND_HEIGHT);
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0..x_max, 0.0..row_count as f64)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(GRID)
            .bold_line_style(GRID)
            .x_desc(format!("time from run start ({unit_name})"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .y_labels(0)
            .x_label_formatter(&|x| format!("{x:.decimals$}"))
            .draw()
            .map_err(chart_error)?;
        let area = chart.plotting_area();

        if rows.is_empty() {
            let (px, py) = area.map_coordinate(&(x_max / 2.0, row_count as f64 / 2.0));
            let grey = BLACK.mix(0.7);
            let style = TextStyle::from(("sans-serif", 15).into_font())
                .color(&grey)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text(
                "nothing to stage: no planned task reads an input",
                &style,
                (px, py),
            )
            .map_err(chart_error)?;
        }

        for (n, row) in rows.iter().enumerate() {
            // Row 0 at the top.
            let base = (row_count - n - 1) as f64;
            let (y0, y1) = (base + 0.2, base + 0.8);
            let mid = (y0 + y1) / 2.0;
            match row {
                Row::Task { start_s, end_s, .. } => {
                    let (x0, x1) = (start_s / unit, end_s / unit);
                    area.draw(&Rectangle::new(
                        [(x0, y0), (x1.max(x0 + min_width), y1)],
                        GPU.filled(),
                    ))
                    .map_err(chart_error)?;
                }
                Row::Item(item) => {
                    let (start, stop) = item_span(item, now_s);
                    let (x0, x1) = (start / unit, (stop / unit).max(start / unit + min_width));
                    let (bar_y0, bar_y1) = (base + 0.3, base + 0.7);
                    let note_color = match &item.status {
                        ItemStatus::Planned => {
                            area.draw(&Rectangle::new(
                                [(x0, bar_y0), (x1, bar_y1)],
                                PLANNED.filled(),
                            ))
                            .map_err(chart_error)?;
                            BLACK
                        }
                        ItemStatus::Late => {
                            area.draw(&Rectangle::new([(x0, bar_y0), (x1, bar_y1)], LATE.filled()))
                                .map_err(chart_error)?;
                            LATE
                        }
                        ItemStatus::Cached => {
                            let x = now_s / unit;
                            area.draw(&Rectangle::new(
                                [(x, y0), (x + min_width * 1.5, y1)],
                                CACHED.filled(),
                            ))
                            .map_err(chart_error)?;
                            CACHED
                        }
                        ItemStatus::NoRoom { .. } => {
                            area.draw(&Rectangle::new(
                                [(x0, bar_y0), (x1, bar_y1)],
                                NO_ROOM.stroke_width(1),
                            ))
                            .map_err(chart_error)?;
                            NO_ROOM
                        }
                        ItemStatus::WrittenThrough | ItemStatus::Unsupported => UNSTAGED,
                    };
                    // The deadline.
                    let deadline = item.deadline_s / unit;
                    area.draw(&PathElement::new(
                        vec![(deadline, y0), (deadline, y1)],
                        BLACK.stroke_width(2),
                    ))
                    .map_err(chart_error)?;
                    // The note beside the bar, on the side with room.
                    let right = x1.max(deadline);
                    let (px, py) = if right < x_max * 0.75 {
                        let (px, py) = area.map_coordinate(&(right, mid));
                        (px + 6, py)
                    } else {
                        let (px, py) = area.map_coordinate(&(x0.min(deadline), mid));
                        (px - 6, py)
                    };
                    let h = if right < x_max * 0.75 {
                        HPos::Left
                    } else {
                        HPos::Right
                    };
                    let style = TextStyle::from(("sans-serif", 11).into_font())
                        .color(&note_color)
                        .pos(Pos::new(h, VPos::Center));
                    root.draw_text(&item_note(item), &style, (px, py))
                        .map_err(chart_error)?;
                }
            }
            // Label left of the axis, right-aligned.
            let (px, py) = area.map_coordinate(&(0.0, mid));
            let (size, color) = match row {
                Row::Task { .. } => (13, GPU.mix(1.0)),
                Row::Item(_) => (12, BLACK.mix(0.85)),
            };
            let style = TextStyle::from(("sans-serif", size).into_font())
                .color(&color)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(&labels[n], &style, (px - 8, py))
                .map_err(chart_error)?;
        }

        // Legend.
        let legend_y = (height - LEGEND_HEIGHT / 2) as i32;
        let text_style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let mut x = 20;
        for (color, filled, text) in [
            (GPU, true, "GPU task (predicted)"),
            (PLANNED, true, "staging window"),
            (LATE, true, "late"),
            (CACHED, true, "cached"),
            (NO_ROOM, false, "no room"),
        ] {
            let style = if filled {
                color.filled()
            } else {
                color.stroke_width(1)
            };
            root.draw(&Rectangle::new(
                [(x, legend_y - 6), (x + 14, legend_y + 6)],
                style,
            ))
            .map_err(chart_error)?;
            root.draw_text(text, &text_style, (x + 20, legend_y))
                .map_err(chart_error)?;
            x += 30 + 7 * text.len() as i32;
        }
        root.draw(&PathElement::new(
            vec![(x + 7, legend_y - 7), (x + 7, legend_y + 7)],
            BLACK.stroke_width(2),
        ))
        .map_err(chart_error)?;
        root.draw_text("deadline", &text_style, (x + 20, legend_y))
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_prefetcher::plan::{plan, PlanConfig, PlanInput, PlanTask, TaskState};

    fn task(id: &str, gpus: u32, start_s: f64, inputs: &[(&str, u64)]) -> PlanTask {
        PlanTask {
            id: id.to_string(),
            gpus,
            start_s,
            end_s: start_s + 1200.0,
            runs: true,
            state: TaskState::Pending,
            inputs: inputs
                .iter()
                .map(|(uri, bytes)| PlanInput {
                    name: "data".to_string(),
                    uri: uri.to_string(),
                    bytes: Some(*bytes),
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    /// The text of every `<text>` element of an SVG document.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn prefetch_gantt_shows_every_task_item_and_no_room() {
        let long = format!(
            "s3://bucket/{}/shard-0001.tar",
            ["datasets", "imagenet", "2024", "preprocessed"]
                .repeat(4)
                .join("/")
        );
        let tasks = vec![
            task("preprocess", 0, 0.0, &[("s3://bucket/raw.csv", 1 << 20)]),
            task(
                "train",
                8,
                900.0,
                &[
                    ("s3://bucket/train.parquet", 6 << 30),
                    (long.as_str(), 1 << 30),
                ],
            ),
            task("evaluate", 1, 2400.0, &[("s3://bucket/huge.bin", 40 << 30)]),
        ];
        let config = PlanConfig {
            budget_bytes: 10 << 30,
            bandwidth_bytes_per_s: 50e6,
            ..PlanConfig::default()
        };
        let plan = plan(&tasks, &[], &config);
        assert!(
            plan.items
                .iter()
                .any(|i| matches!(i.status, ItemStatus::NoRoom { .. })),
            "the plan has an item that does not fit: {:?}",
            plan.items
        );
        let svg = plan_svg("training", &plan, &tasks).expect("draws");
        let texts = texts(&svg);
        let all = texts.join("\n");
        assert!(svg.starts_with("<svg"), "an SVG document");
        assert!(all.contains("training"), "the title names the pipeline");
        assert!(all.contains(&human_size(config.budget_bytes)), "{all}");
        assert!(all.contains(&human_size(plan.staged_bytes())), "{all}");
        // Every GPU task that reads something, and only those.
        let readers: Vec<&str> = plan
            .readers
            .values()
            .flatten()
            .map(|r| r.task.as_str())
            .collect();
        for t in &tasks {
            assert_eq!(
                texts.contains(&task_label(&t.id, t.gpus)),
                readers.contains(&t.id.as_str()),
                "row of {}",
                t.id
            );
        }
        assert!(!readers.is_empty());
        for item in &plan.items {
            let label = item_label(item);
            assert!(label.chars().count() <= ITEM_LABEL_WIDTH, "{label}");
            assert!(texts.contains(&label), "{label} missing from {texts:?}");
        }
        assert!(
            all.contains("no room:"),
            "the item that does not fit says so"
        );
        // The long URI is shown by its end.
        assert!(
            all.contains("shard-0001.tar") && !all.contains(&long),
            "{all}"
        );
    }

    #[test]
    fn prefetch_gantt_marks_cached_and_late_items() {
        let tasks = vec![task(
            "train",
            1,
            60.0,
            &[
                ("s3://bucket/cached.bin", 1 << 20),
                ("s3://bucket/slow.bin", 10 << 30),
            ],
        )];
        let cached = [kfcache_prefetcher::plan::CachedEntry {
            uri: "s3://bucket/cached.bin".to_string(),
            bytes: 1 << 20,
            leased: false,
        }];
        let config = PlanConfig {
            bandwidth_bytes_per_s: 100e6,
            ..PlanConfig::default()
        };
        let plan = plan(&tasks, &cached, &config);
        let statuses: Vec<&str> = plan.items.iter().map(|i| i.status.as_str()).collect();
        assert!(
            statuses.contains(&"cached") && statuses.contains(&"late"),
            "{statuses:?}"
        );
        let svg = plan_svg("p", &plan, &tasks).expect("draws");
        let all = texts(&svg).join("\n");
        assert!(all.contains("cached, "), "{all}");
        assert!(all.contains("late by "), "{all}");
    }

    #[test]
    fn prefetch_gantt_empty_plan_says_nothing_to_stage() {
        let tasks = vec![task(
            "cpu-only",
            0,
            0.0,
            &[("s3://bucket/raw.csv", 1 << 20)],
        )];
        let plan = plan(&tasks, &[], &PlanConfig::default());
        assert!(plan.items.is_empty());
        let svg = plan_svg("empty", &plan, &tasks).expect("draws");
        assert!(svg.contains("nothing to stage"), "{svg}");
        assert!(
            !svg.contains("cpu-only"),
            "a task the plan does not serve has no row"
        );
    }

    #[test]
    fn prefetch_gantt_hours_axis_for_long_runs() {
        let tasks = vec![task(
            "late-train",
            1,
            5.0 * 3600.0,
            &[("s3://b/x", 1 << 20)],
        )];
        let plan = plan(&tasks, &[], &PlanConfig::default());
        let svg = plan_svg("long", &plan, &tasks).expect("draws");
        assert!(svg.contains("(hours)"), "a 5-hour run is drawn in hours");
    }
}
