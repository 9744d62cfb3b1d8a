//! The prediction as a Gantt chart (SVG, drawn with plotters): one row per task in start
//! order, a bar from predicted start to end, GPU tasks in green and labelled with their GPU
//! count, tasks predicted not to run as a hollow outline, retries' expected share hatched in
//! a lighter tone at the bar's end. The time axis is in minutes (hours past two hours).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::predict::Prediction;

const GPU: RGBColor = RGBColor(0x76, 0xb9, 0x00);
const GPU_RETRY: RGBColor = RGBColor(0xb5, 0xdc, 0x80);
const CPU: RGBColor = RGBColor(0x5b, 0x7d, 0xb1);
const CPU_RETRY: RGBColor = RGBColor(0xad, 0xbe, 0xd8);
const GRID: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Chart {
        message: e.to_string(),
    }
}

/// Draw `prediction` of `pipeline` as an SVG document.
pub fn svg(pipeline: &str, prediction: &Prediction) -> Result<String> {
    let mut order: Vec<usize> = (0..prediction.tasks.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&prediction.tasks[a], &prediction.tasks[b]);
        x.start_s
            .total_cmp(&y.start_s)
            .then(x.end_s.total_cmp(&y.end_s))
            .then(a.cmp(&b))
    });
    let rows = order.len().max(1);
    let label_width = prediction
        .tasks
        .iter()
        .map(|t| t.task.chars().count() + if t.gpus > 0 { 8 } else { 0 })
        .max()
        .unwrap_or(10)
        .clamp(10, 48) as u32
        * 7
        + 16;
    let width = 1000u32.max(label_width + 600);
    let height = 90 + 26 * rows as u32;
    let makespan = prediction.makespan_s().max(1.0);
    let (unit, unit_name) = if makespan > 7200.0 {
        (3600.0, "hours")
    } else {
        (60.0, "minutes")
    };
    let x_max = makespan / unit * 1.04;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let title = format!(
            "{pipeline}: predicted task windows ({} tasks, {} on GPUs)",
            prediction.tasks.len(),
            prediction.tasks.iter().filter(|t| t.gpus > 0).count()
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0..x_max, 0.0..rows as f64)
            .map_err(chart_error)?;
        let labels: Vec<String> = order
            .iter()
            .map(|&i| {
                let t = &prediction.tasks[i];
                if t.gpus > 0 {
                    format!("{} [{} GPU]", t.task, t.gpus)
                } else {
                    t.task.clone()
                }
            })
            .collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(GRID)
            .bold_line_style(GRID)
            .x_desc(format!("time from run start ({unit_name})"))
            .y_labels(0)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(chart_error)?;
        let area = chart.plotting_area();
        for (row, &i) in order.iter().enumerate() {
            let t = &prediction.tasks[i];
            // Row 0 at the top.
            let y0 = (rows - row - 1) as f64 + 0.18;
            let y1 = y0 + 0.64;
            let (x0, x1) = (t.start_s / unit, t.end_s / unit);
            let (fill, retry_fill) = if t.gpus > 0 {
                (GPU, GPU_RETRY)
            } else {
                (CPU, CPU_RETRY)
            };
            if t.runs {
                area.draw(&Rectangle::new(
                    [(x0, y0), (x1.max(x0 + x_max / 400.0), y1)],
                    fill.filled(),
                ))
                .map_err(chart_error)?;
                let retry = (t.estimate.retry_s / unit).min(x1 - x0);
                if retry > 0.0 {
                    area.draw(&Rectangle::new(
                        [(x1 - retry, y0), (x1, y1)],
                        retry_fill.filled(),
                    ))
                    .map_err(chart_error)?;
                }
            } else {
                let would_end = x0 + t.estimate.expected_instance_s() / unit;
                area.draw(&Rectangle::new(
                    [(x0, y0), (would_end.max(x0 + x_max / 400.0), y1)],
                    fill.stroke_width(1),
                ))
                .map_err(chart_error)?;
            }
            // Label left of the axis, right-aligned.
            let (px, py) = area.map_coordinate(&(0.0, (y0 + y1) / 2.0));
            let color = if t.gpus > 0 {
                GPU.mix(1.0)
            } else {
                BLACK.mix(0.85)
            };
            let style = TextStyle::from(("sans-serif", 13).into_font())
                .color(&color)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(&labels[row], &style, (px - 8, py))
                .map_err(chart_error)?;
        }
        // Legend.
        let legend_y = height as i32 - 14;
        let items = [
            (GPU, "GPU task"),
            (CPU, "CPU task"),
            (CPU_RETRY, "expected retry time"),
        ];
        let mut x = 20;
        for (color, text) in items {
            root.draw(&Rectangle::new(
                [(x, legend_y - 6), (x + 14, legend_y + 6)],
                color.filled(),
            ))
            .map_err(chart_error)?;
            root.draw_text(
                text,
                &TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
                (x + 20, legend_y),
            )
            .map_err(chart_error)?;
            x += 30 + 7 * text.len() as i32;
        }
        root.draw(&Rectangle::new(
            [(x, legend_y - 6), (x + 14, legend_y + 6)],
            CPU.stroke_width(1),
        ))
        .map_err(chart_error)?;
        root.draw_text(
            "predicted not to run",
            &TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center)),
            (x + 20, legend_y),
        )
        .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}
