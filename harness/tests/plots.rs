//! The benchmark figures: well-formed SVG text carrying every label, and no panic on thin data.

use kfcache_harness::plots::{box_plot_svg, gantt_svg, BarKind, BoxSeries, GanttBar, PlotError};

fn assert_svg(svg: &str) {
    let trimmed = svg.trim();
    assert!(
        trimmed.starts_with("<svg"),
        "starts with {:?}",
        &trimmed[..40.min(trimmed.len())]
    );
    assert!(trimmed.ends_with("</svg>"), "does not end with </svg>");
}

/// Every `<text>` element as its `y` attribute and its (trimmed) content.
fn texts(svg: &str) -> Vec<(i64, String)> {
    svg.split("<text ")
        .skip(1)
        .map(|element| {
            let y_start = element.find(" y=\"").expect("text has a y") + " y=\"".len();
            let y_end = y_start + element[y_start..].find('"').expect("y is quoted");
            let y = element[y_start..y_end].parse().expect("y is a number");
            let content_start = element.find('>').expect("text element closes") + 1;
            let content_end = element.find("</text>").expect("text element ends");
            (y, element[content_start..content_end].trim().to_string())
        })
        .collect()
}

/// The `y` of the text element reading exactly `content`.
fn text_y(svg: &str, content: &str) -> i64 {
    texts(svg)
        .into_iter()
        .find(|(_, text)| text == content)
        .unwrap_or_else(|| panic!("no text element reads {content:?}"))
        .0
}

/// The `height` attribute of the root `<svg>` element.
fn svg_height(svg: &str) -> u32 {
    let start = svg.find("height=\"").expect("svg has a height") + "height=\"".len();
    let end = start + svg[start..].find('"').expect("height is quoted");
    svg[start..end].parse().expect("height is a number")
}

fn arms() -> Vec<BoxSeries> {
    vec![
        BoxSeries {
            label: "NoCache".to_string(),
            values: vec![
                258.1, 261.4, 249.9, 270.2, 255.0, 259.3, 262.8, 251.7, 266.0, 253.0,
            ],
        },
        BoxSeries {
            label: "LruCache".to_string(),
            values: vec![
                190.5, 201.2, 185.3, 188.8, 240.0, 192.1, 195.6, 189.9, 193.3, 198.7,
            ],
        },
        BoxSeries {
            label: "Kfcache".to_string(),
            values: vec![
                133.2, 121.5, 140.8, 129.9, 135.1, 150.2, 128.7, 131.0, 137.4, 123.8,
            ],
        },
    ]
}

#[test]
fn box_plot_has_title_and_every_arm() {
    let svg = box_plot_svg("Pipeline makespan", "seconds", &arms()).expect("box plot draws");
    assert_svg(&svg);
    for text in [
        "Pipeline makespan",
        "seconds",
        "NoCache",
        "LruCache",
        "Kfcache",
        "n=10",
    ] {
        assert!(svg.contains(text), "missing {text}");
    }
}

#[test]
fn box_plot_with_single_rep_draws() {
    let series = [BoxSeries {
        label: "OneRep".to_string(),
        values: vec![42.0],
    }];
    let svg = box_plot_svg("Single", "seconds", &series).expect("one rep draws");
    assert_svg(&svg);
    assert!(svg.contains("OneRep"));
}

#[test]
fn box_plot_with_empty_series_keeps_its_slot() {
    let series = [
        BoxSeries {
            label: "Empty".to_string(),
            values: vec![],
        },
        BoxSeries {
            label: "Full".to_string(),
            values: vec![1.0, 2.0, 3.0],
        },
    ];
    let svg = box_plot_svg("Thin", "seconds", &series).expect("an empty series draws");
    assert_svg(&svg);
    assert!(svg.contains("Empty (n=0)"));
    assert!(svg.contains("Full"));

    let only_empty = [BoxSeries {
        label: "Nothing".to_string(),
        values: vec![],
    }];
    let svg = box_plot_svg("All empty", "seconds", &only_empty).expect("all empty draws");
    assert_svg(&svg);
}

#[test]
fn box_plot_without_series_is_an_error() {
    let error = box_plot_svg("None", "seconds", &[]).expect_err("nothing to draw");
    assert!(matches!(error, PlotError::Empty { .. }), "{error:?}");
}

#[test]
fn box_plot_rejects_nan_rep() {
    let series = [BoxSeries {
        label: "Broken".to_string(),
        values: vec![1.0, f64::NAN],
    }];
    let error = box_plot_svg("NaN", "seconds", &series).expect_err("NaN is refused");
    assert!(
        matches!(&error, PlotError::NonFiniteValue { series, index: 1, .. } if series == "Broken"),
        "{error:?}"
    );
}

#[test]
fn box_plot_of_zeros_draws() {
    let series = [BoxSeries {
        label: "Zero".to_string(),
        values: vec![0.0; 5],
    }];
    assert_svg(&box_plot_svg("Zeros", "GiB", &series).expect("zeros draw"));
}

fn replay() -> Vec<GanttBar> {
    let bar = |row: &str, start_s: f64, end_s: f64, kind: BarKind| GanttBar {
        row: row.to_string(),
        start_s,
        end_s,
        kind,
    };
    vec![
        bar("stage train-data", 0.0, 35.0, BarKind::Staging),
        bar("stage eval-data", 10.0, 25.0, BarKind::Staging),
        bar("preprocess", 0.0, 2.0, BarKind::InputWait),
        bar("preprocess", 2.0, 40.0, BarKind::Compute),
        bar("preprocess", 40.0, 45.0, BarKind::Output),
        bar("train", 45.0, 46.0, BarKind::InputWait),
        bar("train", 46.0, 160.0, BarKind::Compute),
        bar("train", 160.0, 170.0, BarKind::Output),
        bar("stage train-data", 50.0, 55.0, BarKind::Staging),
    ]
}

#[test]
fn gantt_has_title_rows_and_legend() {
    let svg = gantt_svg("Replay 1", &replay()).expect("gantt draws");
    assert_svg(&svg);
    for text in [
        "Replay 1",
        "stage train-data",
        "stage eval-data",
        "preprocess",
        "train",
        "seconds since run start",
    ] {
        assert!(svg.contains(text), "missing {text}");
    }
    for kind in BarKind::ALL {
        assert!(svg.contains(kind.label()), "legend lacks {}", kind.label());
    }
}

#[test]
fn gantt_rows_keep_order_of_first_appearance() {
    let svg = gantt_svg("Order", &replay()).expect("gantt draws");
    // SVG's y grows downwards: the first row has the smallest y.
    let y = |row: &str| text_y(&svg, row);
    assert!(y("stage train-data") < y("stage eval-data"));
    assert!(y("stage eval-data") < y("preprocess"));
    assert!(y("preprocess") < y("train"));
}

#[test]
fn gantt_grows_taller_with_rows() {
    let rows = |count: usize| -> Vec<GanttBar> {
        (0..count)
            .map(|index| GanttBar {
                row: format!("task-{index}"),
                start_s: index as f64,
                end_s: index as f64 + 5.0,
                kind: BarKind::Compute,
            })
            .collect()
    };
    let small = gantt_svg("Few", &rows(3)).expect("few rows draw");
    let large = gantt_svg("Many", &rows(60)).expect("many rows draw");
    assert_svg(&large);
    assert!(svg_height(&large) > svg_height(&small) + 50 * 20);
    let y = |index: usize| text_y(&large, &format!("task-{index}"));
    assert!(y(0) < y(29) && y(29) < y(59));
}

#[test]
fn gantt_rejects_bar_ending_before_start() {
    let bars = [GanttBar {
        row: "backwards".to_string(),
        start_s: 5.0,
        end_s: 1.0,
        kind: BarKind::Compute,
    }];
    let error = gantt_svg("Bad", &bars).expect_err("backwards bar is refused");
    assert!(matches!(error, PlotError::InvalidBar { .. }), "{error:?}");
    let error = gantt_svg("None", &[]).expect_err("nothing to draw");
    assert!(matches!(error, PlotError::Empty { .. }), "{error:?}");
}

#[test]
fn gantt_with_instant_bars_draws() {
    let bars = [GanttBar {
        row: "instant".to_string(),
        start_s: 0.0,
        end_s: 0.0,
        kind: BarKind::Output,
    }];
    assert_svg(&gantt_svg("Instant", &bars).expect("zero-length bar draws"));
}
