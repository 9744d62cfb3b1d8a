//! The figures of the end-to-end benchmark, rendered as SVG text.
//!
//! - [`box_plot_svg`]: one box per arm (no cache, LRU cache, kfcache) side by side, with every
//!   rep drawn over it, so that N = 10 reps are shown as they are and not only as a summary.
//! - [`gantt_svg`]: one replay on a time line. Rows that stage an input (the prefetcher's work)
//!   sit above or between the rows of the GPU tasks (input wait, compute, output), which shows
//!   whether each input was in the cache before the task that reads it started.
//!
//! Both render with plotters' SVG backend into a `String`, so callers decide where the file
//! goes, and tests can inspect the text. plotters is built without a font engine; the SVG backend
//! writes `<text>` elements that the viewer lays out, and plotters sizes label areas from a crude
//! estimate of the text width. Boxes, whiskers and the legend are drawn from plain rectangles,
//! paths and circles instead of plotters' `Boxplot` element: that element puts the whiskers at
//! the 1.5 IQR fences themselves rather than at the most extreme rep inside them, and it panics
//! on an empty series.

use std::collections::HashMap;

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::stats::percentile;

/// Why a figure could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There was nothing to draw: no series in a box plot, no bar in a Gantt chart.
    #[error("the {plot} has nothing to draw")]
    Empty {
        /// Which figure.
        plot: &'static str,
    },
    /// A rep's value is `NaN` or infinite; drop failed reps before plotting.
    #[error("series `{series}` has the non-finite value {value} at rep {index}")]
    NonFiniteValue {
        /// Label of the series.
        series: String,
        /// Position of the value in the series.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A Gantt bar whose times are not finite or that ends before it starts.
    #[error("the bar in row `{row}` spans {start_s} s to {end_s} s; both must be finite, the end not before the start")]
    InvalidBar {
        /// Row of the bar.
        row: String,
        /// Start, seconds since the run start.
        start_s: f64,
        /// End, seconds since the run start.
        end_s: f64,
    },
    /// plotters failed while drawing.
    #[error("drawing the {plot} failed")]
    Draw {
        /// Which figure.
        plot: &'static str,
        /// plotters' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result of the plotting functions.
pub type Result<T, E = PlotError> = std::result::Result<T, E>;

/// The reps of one arm for one metric, for [`box_plot_svg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxSeries {
    /// Name of the arm, written under its box.
    pub label: String,
    /// One value per rep, in the unit of the plot's y axis.
    pub values: Vec<f64>,
}

/// What a [`GanttBar`] stands for; each kind has its own colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BarKind {
    /// The prefetcher copies an input from S3 into the cache.
    Staging,
    /// A task's pod is up but waits for its inputs.
    InputWait,
    /// A task runs on the GPU.
    Compute,
    /// A task writes its outputs.
    Output,
}

impl BarKind {
    /// Every kind, in legend order.
    pub const ALL: [BarKind; 4] = [
        BarKind::Staging,
        BarKind::InputWait,
        BarKind::Compute,
        BarKind::Output,
    ];

    /// Name in the legend.
    pub fn label(self) -> &'static str {
        match self {
            BarKind::Staging => "staging",
            BarKind::InputWait => "input wait",
            BarKind::Compute => "compute",
            BarKind::Output => "output",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            BarKind::Staging => RGBColor(31, 119, 180),
            BarKind::InputWait => RGBColor(214, 39, 40),
            BarKind::Compute => RGBColor(44, 160, 44),
            BarKind::Output => RGBColor(148, 103, 189),
        }
    }
}

/// One interval on the time line of [`gantt_svg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanttBar {
    /// Row the bar sits in, e.g. `stage train-data` or `train`.
    pub row: String,
    /// Start, seconds since the run start.
    pub start_s: f64,
    /// End, seconds since the run start.
    pub end_s: f64,
    /// What the interval is.
    pub kind: BarKind,
}

const FONT: &str = "sans-serif";
const TITLE_SIZE: u32 = 26;
const LABEL_SIZE: u32 = 16;
/// Height of the strip under a chart that holds its legend.
const LEGEND_HEIGHT: u32 = 32;
/// Rough width of a character of `LABEL_SIZE` text, to size label areas.
const CHARACTER_WIDTH: u32 = 8;

/// Colours of the arms, in series order (then repeating).
const ARM_COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws one box per series, side by side, and returns the SVG text.
///
/// Each box spans the first to the third quartile with a line at the median (quartiles by
/// linear interpolation, as [`percentile`]). The whiskers follow Tukey: they reach the most
/// extreme rep within 1.5 IQR of the box; reps beyond are outliers, drawn as open circles.
/// Every other rep is a filled dot, spread sideways by a fixed (deterministic) jitter so that
/// equal values stay visible. A black cross marks the mean. Each box is labelled
/// `label (n=…)`. The y axis starts at 0 (or lower if a value is negative) and leaves room
/// above the largest value.
///
/// A series with one value draws as a flat box at that value; a series without values keeps
/// its slot and label but draws nothing.
///
/// # Errors
///
/// [`PlotError::Empty`] when `series` is empty, [`PlotError::NonFiniteValue`] for a `NaN` or
/// infinite value, [`PlotError::Draw`] if plotters fails.
pub fn box_plot_svg(title: &str, y_label: &str, series: &[BoxSeries]) -> Result<String> {
    const PLOT: &str = "box plot";
    if series.is_empty() {
        return Err(PlotError::Empty { plot: PLOT });
    }
    for one in series {
        if let Some((index, &value)) = one
            .values
            .iter()
            .enumerate()
            .find(|(_, value)| !value.is_finite())
        {
            return Err(PlotError::NonFiniteValue {
                series: one.label.clone(),
                index,
                value,
            });
        }
    }

    let all_values = || series.iter().flat_map(|one| one.values.iter().copied());
    let lowest = all_values().fold(0.0_f64, f64::min);
    let highest = all_values().fold(0.0_f64, f64::max);
    let span = highest - lowest;
    let (y_start, y_end) = if span > 0.0 {
        (
            if lowest < 0.0 {
                lowest - 0.05 * span
            } else {
                0.0
            },
            highest + 0.1 * span,
        )
    } else {
        (0.0, 1.0)
    };

    let labels: Vec<String> = series
        .iter()
        .map(|one| format!("{} (n={})", one.label, one.values.len()))
        .collect();
    let widest_label = labels.iter().map(|label| label.len()).max().unwrap_or(0) as u32;
    let slot_width = (widest_label * CHARACTER_WIDTH + 24).clamp(160, 360);
    let width = (120 + slot_width * series.len() as u32).max(640);
    let height = 520;

    let count = series.len();
    let x_range = Slots::new(count);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error(PLOT))?;
        let (chart_area, legend_area) = root.split_vertically(height - LEGEND_HEIGHT);

        let mut chart = ChartBuilder::on(&chart_area)
            .caption(title, (FONT, TITLE_SIZE))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(x_range, y_start..y_end)
            .map_err(draw_error(PLOT))?;
        let slot_label = |x: &f64| {
            let nearest = x.round();
            if (x - nearest).abs() > 1e-6 || nearest < 0.0 {
                return String::new();
            }
            labels.get(nearest as usize).cloned().unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            .x_label_formatter(&slot_label)
            .x_label_style((FONT, LABEL_SIZE))
            .y_label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE + 1))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(draw_error(PLOT))?;

        for (slot, one) in series.iter().enumerate() {
            if one.values.is_empty() {
                continue;
            }
            let color = ARM_COLORS[slot % ARM_COLORS.len()];
            let center = slot as f64;
            let half_box = 0.22;
            let half_cap = 0.1;

            let first_quartile = percentile(&one.values, 25.0);
            let median = percentile(&one.values, 50.0);
            let third_quartile = percentile(&one.values, 75.0);
            let fence = 1.5 * (third_quartile - first_quartile);
            let inside =
                |value: f64| value >= first_quartile - fence && value <= third_quartile + fence;
            let lower_whisker = one
                .values
                .iter()
                .copied()
                .filter(|&value| inside(value))
                .fold(first_quartile, f64::min);
            let upper_whisker = one
                .values
                .iter()
                .copied()
                .filter(|&value| inside(value))
                .fold(third_quartile, f64::max);
            let mean = one.values.iter().sum::<f64>() / one.values.len() as f64;

            let line = color.stroke_width(2);
            chart
                .draw_series([Rectangle::new(
                    [
                        (center - half_box, first_quartile),
                        (center + half_box, third_quartile),
                    ],
                    color.mix(0.2).filled(),
                )])
                .map_err(draw_error(PLOT))?;
            chart
                .draw_series([
                    Rectangle::new(
                        [
                            (center - half_box, first_quartile),
                            (center + half_box, third_quartile),
                        ],
                        line,
                    )
                    .into_dyn(),
                    PathElement::new(
                        [(center - half_box, median), (center + half_box, median)],
                        color.stroke_width(3),
                    )
                    .into_dyn(),
                    PathElement::new([(center, third_quartile), (center, upper_whisker)], line)
                        .into_dyn(),
                    PathElement::new([(center, first_quartile), (center, lower_whisker)], line)
                        .into_dyn(),
                    PathElement::new(
                        [
                            (center - half_cap, upper_whisker),
                            (center + half_cap, upper_whisker),
                        ],
                        line,
                    )
                    .into_dyn(),
                    PathElement::new(
                        [
                            (center - half_cap, lower_whisker),
                            (center + half_cap, lower_whisker),
                        ],
                        line,
                    )
                    .into_dyn(),
                ])
                .map_err(draw_error(PLOT))?;

            let reps = one.values.iter().enumerate().map(|(rep, &value)| {
                let position = (center + jitter(rep, 0.3), value);
                if inside(value) {
                    Circle::new(position, 3, color.mix(0.7).filled())
                } else {
                    Circle::new(position, 5, color.stroke_width(2))
                }
            });
            chart.draw_series(reps).map_err(draw_error(PLOT))?;
            chart
                .draw_series([Cross::new((center, mean), 6, BLACK.stroke_width(2))])
                .map_err(draw_error(PLOT))?;
        }

        draw_legend(
            &legend_area,
            &[
                (LegendMark::Dot, "rep"),
                (LegendMark::Ring, "outlier (beyond 1.5 IQR)"),
                (LegendMark::Cross, "mean"),
                (LegendMark::Box, "quartiles and median"),
            ],
        )
        .map_err(draw_error(PLOT))?;
        root.present().map_err(draw_error(PLOT))?;
    }
    Ok(svg)
}

/// Draws one replay as a Gantt chart and returns the SVG text.
///
/// One row per distinct [`GanttBar::row`], top to bottom in order of first appearance; bars keep
/// their own row however they are interleaved. The x axis is seconds since the run start; it
/// starts at 0, or earlier if a bar starts before the run. Bars are coloured by [`BarKind`] and a
/// legend under the chart names the kinds that occur. The figure grows 26 pixels taller per row.
///
/// # Errors
///
/// [`PlotError::Empty`] when `bars` is empty, [`PlotError::InvalidBar`] for a bar with a
/// non-finite time or that ends before it starts, [`PlotError::Draw`] if plotters fails.
pub fn gantt_svg(title: &str, bars: &[GanttBar]) -> Result<String> {
    const PLOT: &str = "Gantt chart";
    if bars.is_empty() {
        return Err(PlotError::Empty { plot: PLOT });
    }
    if let Some(bar) = bars
        .iter()
        .find(|bar| !bar.start_s.is_finite() || !bar.end_s.is_finite() || bar.end_s < bar.start_s)
    {
        return Err(PlotError::InvalidBar {
            row: bar.row.clone(),
            start_s: bar.start_s,
            end_s: bar.end_s,
        });
    }

    let mut rows: Vec<&str> = Vec::new();
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for bar in bars {
        row_of.entry(bar.row.as_str()).or_insert_with(|| {
            rows.push(bar.row.as_str());
            rows.len() - 1
        });
    }
    let row_count = rows.len();
    // Row 0 is drawn at the top: row `r` sits at y = row_count - 1 - r.
    let y_of_row = |row: usize| (row_count - 1 - row) as f64;

    let start = bars.iter().map(|bar| bar.start_s).fold(0.0_f64, f64::min);
    let end = bars.iter().map(|bar| bar.end_s).fold(start, f64::max);
    let end = if end > start {
        end + 0.03 * (end - start)
    } else {
        start + 1.0
    };

    let widest_row = rows.iter().map(|row| row.len()).max().unwrap_or(0) as u32;
    let row_label_width = (widest_row * CHARACTER_WIDTH + 24).clamp(80, 400);
    let width = 1000 + row_label_width;
    let height = 150 + LEGEND_HEIGHT + 26 * row_count as u32;

    let y_range = Slots::new(row_count);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error(PLOT))?;
        let (chart_area, legend_area) = root.split_vertically(height - LEGEND_HEIGHT);

        let mut chart = ChartBuilder::on(&chart_area)
            .caption(title, (FONT, TITLE_SIZE))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(row_label_width)
            .build_cartesian_2d(start..end, y_range)
            .map_err(draw_error(PLOT))?;
        let row_label = |y: &f64| {
            let nearest = y.round();
            if (y - nearest).abs() > 1e-6 || nearest < 0.0 {
                return String::new();
            }
            let Some(row) = (row_count - 1).checked_sub(nearest as usize) else {
                return String::new();
            };
            rows.get(row).map(|row| row.to_string()).unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("seconds since run start")
            .y_label_formatter(&row_label)
            .x_label_style((FONT, LABEL_SIZE))
            .y_label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE + 1))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_error(PLOT))?;

        let mut present = Vec::new();
        for kind in BarKind::ALL {
            let of_kind: Vec<&GanttBar> = bars.iter().filter(|bar| bar.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            present.push(kind);
            let color = kind.color();
            let rectangles = of_kind.into_iter().filter_map(|bar| {
                let y = y_of_row(*row_of.get(bar.row.as_str())?);
                Some(Rectangle::new(
                    [(bar.start_s, y - 0.35), (bar.end_s, y + 0.35)],
                    color.filled(),
                ))
            });
            chart.draw_series(rectangles).map_err(draw_error(PLOT))?;
        }

        let legend: Vec<(LegendMark, &str)> = present
            .iter()
            .map(|&kind| (LegendMark::Bar(kind.color()), kind.label()))
            .collect();
        draw_legend(&legend_area, &legend).map_err(draw_error(PLOT))?;
        root.present().map_err(draw_error(PLOT))?;
    }
    Ok(svg)
}

/// An axis of `count` slots: slot `i` is centred on the value `i`, the axis spans
/// `-0.5..count - 0.5`, and the ticks (labelled by the chart's formatter) sit on the slots.
///
/// plotters' `with_key_points` would do, but its wrapper of an `f64` axis cannot be labelled
/// through `configure_mesh` in plotters 0.3.7.
#[derive(Debug, Clone, Copy)]
struct Slots {
    count: usize,
}

impl Slots {
    fn new(count: usize) -> Self {
        Slots { count }
    }

    fn axis(self) -> RangedCoordf64 {
        self.range().into()
    }
}

impl Ranged for Slots {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.axis().map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        (0..self.count).map(|slot| slot as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.count as f64 - 0.5
    }
}

/// Sideways offset of the `index`-th rep, in `-spread/2..spread/2`: the fractional parts of
/// multiples of the golden ratio, which spread any number of reps evenly without randomness.
fn jitter(index: usize, spread: f64) -> f64 {
    ((index as f64 * 0.618_033_988_749_895).fract() - 0.5) * spread
}

/// The symbol in front of a legend entry.
#[derive(Debug, Clone, Copy)]
enum LegendMark {
    Dot,
    Ring,
    Cross,
    Box,
    Bar(RGBColor),
}

/// Writes `entries` left to right, centred vertically in `area` (pixel coordinates).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(LegendMark, &str)],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let grey = RGBColor(90, 90, 90);
    let middle = (LEGEND_HEIGHT / 2) as i32;
    let mut x = 24;
    for &(mark, text) in entries {
        let at = (x + 6, middle);
        match mark {
            LegendMark::Dot => area.draw(&Circle::new(at, 3, grey.filled()))?,
            LegendMark::Ring => area.draw(&Circle::new(at, 5, grey.stroke_width(2)))?,
            LegendMark::Cross => area.draw(&Cross::new(at, 6, BLACK.stroke_width(2)))?,
            LegendMark::Box => {
                area.draw(&Rectangle::new(
                    [(x, middle - 7), (x + 12, middle + 7)],
                    grey.stroke_width(2),
                ))?;
                area.draw(&PathElement::new(
                    [(x, middle), (x + 12, middle)],
                    grey.stroke_width(2),
                ))?;
            }
            LegendMark::Bar(color) => area.draw(&Rectangle::new(
                [(x, middle - 6), (x + 14, middle + 6)],
                color.filled(),
            ))?,
        }
        area.draw(&Text::new(
            text.to_string(),
            (x + 20, middle),
            (FONT, LABEL_SIZE)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += 20 + text.len() as i32 * CHARACTER_WIDTH as i32 + 28;
    }
    Ok(())
}

/// Wraps a plotters error of the figure `plot`.
fn draw_error<E>(plot: &'static str) -> impl FnOnce(E) -> PlotError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| PlotError::Draw {
        plot,
        source: Box::new(source),
    }
}
