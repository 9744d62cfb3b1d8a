//! Regression tests for the parser's limits (`kfcache_parser::limits`): every hostile input is
//! generated here, fed through the entry point `kfcache analyze` uses, and must be refused with
//! a located `LimitExceeded` (or `TooLarge`) error, quickly, in bounded memory, and without a
//! stack overflow: the tests run on the test harness's 2 MiB threads.
//!
//! A counting global allocator measures the peak heap of each input, so the tests take a lock
//! and run one at a time. Time is the thread's CPU time, so that a loaded machine does not fail
//! the bounds (they are generous: the tests may run unoptimised); what they catch is work that
//! grows quadratically or worse, which takes minutes or hours at these sizes.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kfcache_parser::limits::{
    MAX_FAN_OUT, MAX_FILE_BYTES, MAX_PIPELINE_BYTES, MAX_VALUE_BYTES, MAX_YAML_DEPTH,
};
use kfcache_parser::{parse_bytes, Error, FanOut, ParseOptions, Pipeline};
use peak_alloc::PeakAlloc;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// CPU time the calling thread has used so far.
fn cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// What one input costs: its outcome, the peak heap above what was in use before, the CPU time.
struct Run {
    result: Result<Vec<Pipeline>, Error>,
    peak_mib: f64,
    elapsed: Duration,
}

fn analyse(text: &str) -> Run {
    PEAK.reset_peak_usage();
    let before = PEAK.current_usage();
    let start = cpu_time();
    let result = parse_bytes(
        Path::new("hostile.yaml"),
        text.as_bytes(),
        &ParseOptions::default(),
    );
    let elapsed = cpu_time().saturating_sub(start);
    let peak_mib = PEAK.peak_usage().saturating_sub(before) as f64 / (1024.0 * 1024.0);
    Run {
        result,
        peak_mib,
        elapsed,
    }
}

/// The input must be refused by a limit, within `max_mib` of heap and `max_time` (generous:
/// the tests may run unoptimised on a loaded machine), with a message naming the file and
/// containing `expected`; returns the error.
fn refused(run: Run, expected: &str, max_mib: f64, max_time: Duration) -> Error {
    let error = match run.result {
        Ok(pipelines) => panic!(
            "accepted: {} pipelines, {} tasks",
            pipelines.len(),
            pipelines.iter().map(|p| p.tasks.len()).sum::<usize>()
        ),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        matches!(error, Error::LimitExceeded { .. } | Error::TooLarge { .. }),
        "not a limit error: {message}"
    );
    assert!(error.is_invalid_input(), "{message}");
    assert!(message.starts_with("hostile.yaml"), "{message}");
    assert!(message.contains(expected), "`{expected}` not in: {message}");
    assert!(
        run.peak_mib <= max_mib,
        "peak heap {:.0} MiB over {max_mib} MiB: {message}",
        run.peak_mib
    );
    assert!(
        run.elapsed <= max_time,
        "took {:?}, over {max_time:?}: {message}",
        run.elapsed
    );
    error
}

fn line_of(error: &Error) -> Option<usize> {
    error.location().and_then(|at| at.line)
}

/// A Workflow with the given `spec.arguments.parameters` block (may be empty) and templates.
fn workflow(parameters: &str, templates: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: hostile\nspec:\n  \
         entrypoint: main\n  arguments:\n    parameters:\n{parameters}  templates:\n{templates}"
    )
}

const SECONDS_10: Duration = Duration::from_secs(10);
const SECONDS_30: Duration = Duration::from_secs(30);

// --- Input size ---------------------------------------------------------------------------

/// Content one byte over the limit is refused before a single YAML event is read.
#[test]
fn content_over_the_size_limit_is_refused_before_parsing() {
    let _serial = serial();
    let limit = usize::try_from(MAX_FILE_BYTES).expect("fits");
    let text = "#".repeat(limit + 1);
    let start = cpu_time();
    let error = parse_bytes(
        Path::new("hostile.yaml"),
        text.as_bytes(),
        &Default::default(),
    )
    .expect_err("refused");
    // Scanning 64 MiB for UTF-8 or YAML would take far longer than this.
    assert!(
        cpu_time().saturating_sub(start) < Duration::from_millis(100),
        "parsed first?"
    );
    let Error::TooLarge { size, limit, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!((*size, *limit), (MAX_FILE_BYTES + 1, MAX_FILE_BYTES));
    assert!(
        error.to_string().starts_with("hostile.yaml: file is"),
        "{error}"
    );
}

/// A file whose size says it is over the limit is refused without being read.
#[test]
fn a_file_over_the_size_limit_is_refused_by_its_size() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("kfcache-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sparse.yaml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
    PEAK.reset_peak_usage();
    let before = PEAK.current_usage();
    let error = kfcache_parser::parse_file(&path, &ParseOptions::default()).expect_err("refused");
    let peak = PEAK.peak_usage().saturating_sub(before);
    std::fs::remove_dir_all(&dir).ok();
    assert!(matches!(error, Error::TooLarge { .. }), "{error}");
    assert!(error.to_string().contains("sparse.yaml"), "{error}");
    assert!(
        peak < 1024 * 1024,
        "read {peak} bytes of a file it should refuse"
    );
}

/// A device or FIFO reports no size; it is read only up to one byte past the limit.
#[cfg(unix)]
#[test]
fn an_endless_device_is_not_read_past_the_size_limit() {
    let _serial = serial();
    let error = kfcache_parser::parse_file(Path::new("/dev/zero"), &ParseOptions::default())
        .expect_err("refused");
    let Error::TooLarge { size, .. } = error else {
        panic!("{error}")
    };
    assert_eq!(size, MAX_FILE_BYTES + 1);
}

// --- YAML nesting ---------------------------------------------------------------------------

/// `[[[[…]]]]` 100 000 deep: libyaml reads it without recursing, serde_yaml stops at 128.
#[test]
fn flow_sequences_nested_100k_deep_are_refused_without_overflowing_the_stack() {
    let _serial = serial();
    let text = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let error = refused(analyse(&text), "YAML nested too deeply", 512.0, SECONDS_10);
    assert!(
        error
            .to_string()
            .contains(&format!("{MAX_YAML_DEPTH} levels")),
        "{error}"
    );
    assert_eq!(line_of(&error), Some(1));
    // Unclosed, and inside a workflow's value: the same.
    let text = workflow(
        &format!("    - {{name: deep, value: {}}}\n", "{a: ".repeat(100_000)),
        "  - {name: main, container: {image: busybox}}\n",
    );
    let error = refused(analyse(&text), "YAML nested too deeply", 512.0, SECONDS_10);
    assert_eq!(line_of(&error), Some(9), "{error}");
}

/// Block mappings one level past the limit are refused, and located in the file.
#[test]
fn block_mappings_nested_past_the_limit_are_refused() {
    let _serial = serial();
    let mut text = String::from("kind: Workflow\n---\n");
    for depth in 0..=MAX_YAML_DEPTH {
        text.push_str(&"  ".repeat(depth));
        text.push_str("a:\n");
    }
    let error = refused(analyse(&text), "YAML nested too deeply", 64.0, SECONDS_10);
    assert!(line_of(&error).is_some_and(|l| l > 2), "{error}");
}

/// Nesting just under the limit inside a workflow still parses: every later stage (null
/// stripping, typed reading, dropping) copes with it on a 2 MiB stack.
#[test]
fn nesting_just_under_the_limit_still_parses() {
    let _serial = serial();
    let depth = MAX_YAML_DEPTH - 8;
    let value = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let text = workflow(
        &format!("    - {{name: deep, value: \"x\"}}\n    - {{name: data, value: {value}}}\n"),
        "  - name: main\n    container: {image: busybox, args: [\"{{workflow.parameters.deep}}\"]}\n",
    );
    let run = analyse(&text);
    let pipelines = run.result.expect("valid");
    assert_eq!(pipelines[0].tasks.len(), 1);
}

// --- YAML alias expansion -----------------------------------------------------------------

/// The classic "billion laughs": ten levels of ten aliases each.
#[test]
fn billion_laughs_is_refused_quickly_in_bounded_memory() {
    let _serial = serial();
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let p = i - 1;
        let aliases = vec![format!("*a{p}"); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
    }
    // serde_yaml's repetition limit (or else the expansion budget) stops it; the former does
    // not say where, so only the file is named.
    refused(analyse(&text), "YAML aliases", 64.0, SECONDS_10);
}

/// One anchored list of n items aliased n times: few enough alias jumps for serde_yaml's
/// repetition limit, but n² nodes (10⁸ here, gigabytes) without the expansion budget.
#[test]
fn an_anchored_list_aliased_as_often_as_it_has_items_is_refused() {
    let _serial = serial();
    let n = 10_000;
    let mut text = format!("items: &items [{}]\nrefs: [", vec!["x"; n].join(","));
    text.push_str(&vec!["*items"; n].join(","));
    text.push_str("]\n");
    let error = refused(analyse(&text), "YAML aliases", 256.0, SECONDS_10);
    assert!(
        error.to_string().contains("units for this document"),
        "{error}"
    );
}

/// A long anchored string aliased many times costs its length each time.
#[test]
fn a_long_anchored_string_aliased_many_times_is_refused() {
    let _serial = serial();
    let n = 20_000;
    let mut text = format!("s: &s \"{}\"\nrefs: [", "x".repeat(64 * 1024));
    text.push_str(&vec!["*s"; n].join(","));
    text.push_str("]\n");
    refused(analyse(&text), "YAML aliases", 256.0, SECONDS_10);
}

/// Ordinary use of anchors (a shared container spec) is well within the budget.
#[test]
fn ordinary_anchors_still_parse() {
    let _serial = serial();
    let mut templates =
        String::from("  - name: main\n    dag:\n      tasks:\n      - {name: a, template: t0}\n");
    templates.push_str(
        "  - name: t0\n    container: &c {image: \"trainer:1\", args: [--epochs, \"5\"], \
         resources: {limits: {nvidia.com/gpu: 1}}}\n",
    );
    for i in 1..200 {
        templates.push_str(&format!("  - name: t{i}\n    container: *c\n"));
        templates.push_str(&format!(
            "  - name: u{i}\n    dag: {{tasks: [{{name: x, template: t{i}}}]}}\n"
        ));
    }
    let pipelines = analyse(&workflow("", &templates)).result.expect("valid");
    assert_eq!(pipelines[0].tasks[0].gpus, 1);
}

// --- JSON embedded in Argo arguments (KFP v2 backend form) ---------------------------------

fn embedded(root: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: embedded\nspec:\n  \
         entrypoint: main\n  arguments:\n    parameters:\n    - name: components-root\n      \
         value: '{root}'\n  templates:\n  - name: main\n    container: {{image: driver}}\n"
    )
}

/// The IR embedded as JSON, nested 100 000 deep: serde_json's recursion limit refuses it, and
/// the error names the argument.
#[test]
fn deeply_nested_embedded_json_is_refused_with_the_argument_named() {
    let _serial = serial();
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let root = format!(
        "{{\"inputDefinitions\": {{\"parameters\": {{\"p\": {{\"defaultValue\": {deep}}}}}}}, \
         \"dag\": {{\"tasks\": {{}}}}}}"
    );
    let run = analyse(&embedded(&root));
    let error = run.result.expect_err("refused");
    let message = error.to_string();
    assert!(message.starts_with("hostile.yaml:9:"), "{message}");
    assert!(message.contains("components-root"), "{message}");
    assert!(message.contains("recursion limit exceeded"), "{message}");
    assert!(error.is_invalid_input(), "{message}");
    assert!(run.peak_mib < 256.0, "{:.0} MiB", run.peak_mib);
    // In a field the IR reader skips, serde_json skips it without recursing: no overflow.
    let root = format!("{{\"skipped\": {deep}, \"dag\": {{\"tasks\": {{}}}}}}");
    assert!(analyse(&embedded(&root)).result.is_ok());
    // A whole PipelineSpec as one argument, nested too deep, is not mistaken for one.
    let whole = format!("{{\"pipelineInfo\": {{\"name\": \"p\"}}, \"root\": {deep}}}");
    let text = embedded("{}").replace("components-root", "pipeline-spec");
    let text = text.replace("value: '{}'", &format!("value: '{whole}'"));
    let run = analyse(&text);
    assert!(run.result.is_ok(), "{:?}", run.result.err());
}

// --- Placeholder substitution ----------------------------------------------------------------

/// Each of 40 nested templates passes its input on doubled: 2⁴⁰ copies of the seed without
/// the bound on a substituted value.
#[test]
fn argo_placeholders_doubled_through_nested_templates_are_refused() {
    let _serial = serial();
    let levels = 40;
    let mut templates = String::from(
        "  - name: main\n    dag:\n      tasks:\n      - name: next\n        template: t0\n        \
         arguments: {parameters: [{name: p, value: \"{{workflow.parameters.seed}}\"}]}\n",
    );
    for i in 0..levels {
        templates.push_str(&format!(
            "  - name: t{i}\n    inputs: {{parameters: [{{name: p}}]}}\n    dag:\n      tasks:\n      \
             - name: next\n        template: t{}\n        arguments: {{parameters: [{{name: p, \
             value: \"{{{{inputs.parameters.p}}}}{{{{inputs.parameters.p}}}}\"}}]}}\n",
            i + 1
        ));
    }
    templates.push_str(&format!(
        "  - name: t{levels}\n    inputs: {{parameters: [{{name: p}}]}}\n    container: {{image: \
         busybox, args: [\"{{{{inputs.parameters.p}}}}\"]}}\n"
    ));
    let text = workflow(
        "    - {name: seed, value: \"0123456789abcdef\"}\n",
        &templates,
    );
    let error = refused(
        analyse(&text),
        "too long after placeholder substitution",
        64.0,
        SECONDS_10,
    );
    let message = error.to_string();
    assert!(message.contains("argument `p`"), "{message}");
    assert!(
        message.contains(&format!("{MAX_VALUE_BYTES} bytes")),
        "{message}"
    );
    assert!(line_of(&error).is_some(), "{message}");
}

/// One template's arguments, each under the bound, all referring to a value of 1 MiB: the
/// pipeline budget stops what each value's bound allows.
#[test]
fn many_arguments_each_near_the_value_bound_are_refused() {
    let _serial = serial();
    let big = "x".repeat(MAX_VALUE_BYTES - 16);
    let arguments: Vec<String> = (0..400)
        .map(|i| format!("{{name: a{i}, value: \"{{{{workflow.parameters.big}}}}\"}}"))
        .collect();
    let inputs: Vec<String> = (0..400).map(|i| format!("{{name: a{i}}}")).collect();
    let templates = format!(
        "  - name: main\n    dag:\n      tasks:\n      - name: leaf\n        template: leaf\n        \
         arguments: {{parameters: [{}]}}\n  - name: leaf\n    inputs: {{parameters: [{}]}}\n    \
         container: {{image: busybox}}\n",
        arguments.join(", "),
        inputs.join(", ")
    );
    let text = workflow(
        &format!("    - {{name: big, value: \"{big}\"}}\n"),
        &templates,
    );
    refused(analyse(&text), "grows too large", 768.0, SECONDS_30);
}

/// The same doubling through KFP component DAGs: each task substitutes its input into a
/// constant twice and hands the result to the next component.
#[test]
fn kfp_placeholders_doubled_through_nested_components_are_refused() {
    let _serial = serial();
    let levels = 40;
    let doubled = "\"{{$.inputs.parameters['q']}}{{$.inputs.parameters['q']}}\"";
    let task = |indent: &str, component: &str, source: &str| {
        [
            "tasks:".to_string(),
            "  t:".to_string(),
            format!("    componentRef: {{name: {component}}}"),
            "    inputs:".to_string(),
            "      parameters:".to_string(),
            format!("        q: {{componentInputParameter: {source}}}"),
            format!("        p: {{runtimeValue: {{constant: {doubled}}}}}"),
        ]
        .iter()
        .map(|line| format!("{indent}{line}\n"))
        .collect::<String>()
    };
    let mut text = String::from(
        "pipelineInfo: {name: doubling}\nroot:\n  inputDefinitions:\n    parameters:\n      seed: \
         {parameterType: STRING, defaultValue: \"0123456789abcdef\"}\n  dag:\n",
    );
    text.push_str(&task("    ", "comp-0", "seed"));
    text.push_str("components:\n");
    for i in 0..levels {
        text.push_str(&format!("  comp-{i}:\n    dag:\n"));
        text.push_str(&task("      ", &format!("comp-{}", i + 1), "p"));
    }
    text.push_str(&format!(
        "  comp-{levels}:\n    executorLabel: exec-leaf\ndeploymentSpec:\n  executors:\n    \
         exec-leaf: {{container: {{image: busybox}}}}\n"
    ));
    let error = refused(
        analyse(&text),
        "too long after placeholder substitution",
        64.0,
        SECONDS_10,
    );
    assert!(error.to_string().contains("input `p`"), "{error}");
}

// --- Loop fan-out ----------------------------------------------------------------------------

fn looping(with: &str) -> String {
    workflow(
        "",
        &format!(
            "  - name: main\n    dag:\n      tasks:\n      - name: fan\n        template: leaf\n        \
             {with}\n  - name: leaf\n    container: {{image: busybox}}\n"
        ),
    )
}

/// `withSequence` of a trillion items, written as an integer, a float or a range.
#[test]
fn with_sequence_of_a_trillion_items_is_refused() {
    let _serial = serial();
    for with in [
        "withSequence: {count: \"1000000000000\"}",
        "withSequence: {count: 1e12}",
        "withSequence: {start: \"1\", end: \"1000000000000\"}",
        "withSequence: {start: \"-9223372036854775808\", end: \"9223372036854775807\"}",
    ] {
        let error = refused(analyse(&looping(with)), "fans out to", 64.0, SECONDS_10);
        let message = error.to_string();
        assert!(message.contains("withSequence"), "{message}");
        assert!(
            message.contains(&format!("{MAX_FAN_OUT} known instances")),
            "{message}"
        );
        assert_eq!(line_of(&error), Some(13), "{with}: {message}");
    }
}

/// Up to the limit, a known count is kept; a count known only at run time stays dynamic.
#[test]
fn with_sequence_up_to_the_limit_is_kept() {
    let _serial = serial();
    let pipelines = analyse(&looping(&format!(
        "withSequence: {{count: \"{MAX_FAN_OUT}\"}}"
    )))
    .result
    .expect("valid");
    let expected = u32::try_from(MAX_FAN_OUT).expect("fits");
    assert_eq!(pipelines[0].tasks[0].fan_out, Some(FanOut::Count(expected)));
    let pipelines = analyse(&looping(
        "withSequence: {count: \"{{tasks.x.outputs.result}}\"}",
    ))
    .result
    .expect("valid");
    assert_eq!(pipelines[0].tasks[0].fan_out, Some(FanOut::Dynamic));
}

/// Loops nested in loops multiply: 1 000 × 1 000 known instances is over the limit.
#[test]
fn nested_loops_whose_product_is_over_the_limit_are_refused() {
    let text = workflow(
        "",
        "  - name: main\n    dag:\n      tasks:\n      - {name: outer, template: inner, \
         withSequence: {count: \"1000\"}}\n  - name: inner\n    dag:\n      tasks:\n      - {name: \
         leaf, template: leaf, withSequence: {count: \"1000\"}}\n  - name: leaf\n    container: \
         {image: busybox}\n",
    );
    let _serial = serial();
    let error = refused(analyse(&text), "times 1000 of the loops", 64.0, SECONDS_10);
    assert!(error.to_string().contains("outer.leaf"), "{error}");
}

/// A `withItems` list longer than the limit (it fits in a file well under the size limit).
#[test]
fn with_items_longer_than_the_limit_is_refused() {
    let _serial = serial();
    let count = usize::try_from(MAX_FAN_OUT).expect("fits") + 1;
    let items = vec!["1"; count].join(",");
    let error = refused(
        analyse(&looping(&format!("withItems: [{items}]"))),
        "withItems",
        256.0,
        SECONDS_30,
    );
    assert!(error.to_string().contains(&count.to_string()), "{error}");
}

/// A KFP `ParallelFor` over a known list longer than the limit.
#[test]
fn kfp_parallel_for_over_a_known_list_longer_than_the_limit_is_refused() {
    let _serial = serial();
    let count = usize::try_from(MAX_FAN_OUT).expect("fits") + 1;
    let text = format!(
        "pipelineInfo: {{name: wide}}\nroot:\n  dag:\n    tasks:\n      loop:\n        \
         componentRef: {{name: comp-body}}\n        parameterIterator:\n          itemInput: item\n          \
         items: {{raw: \"[{}]\"}}\ncomponents:\n  comp-body:\n    dag:\n      tasks:\n        leaf: \
         {{componentRef: {{name: comp-leaf}}}}\n  comp-leaf: {{executorLabel: exec-leaf}}\n\
         deploymentSpec:\n  executors:\n    exec-leaf: {{container: {{image: busybox}}}}\n",
        vec!["1"; count].join(",")
    );
    let error = refused(analyse(&text), "loops over", 256.0, SECONDS_30);
    assert!(error.to_string().contains(&count.to_string()), "{error}");
}

// --- Size of the flattened pipeline ----------------------------------------------------------

/// A template with `width` parallel tasks calling `child`, `levels` times, ending in `leaf`:
/// `width^levels` leaves from a few hundred bytes.
fn wide_templates(prefix: &str, width: usize, levels: usize, leaf: &str) -> String {
    let mut templates = String::new();
    for level in 0..levels {
        let child = if level + 1 == levels {
            leaf.to_string()
        } else {
            format!("{prefix}{}", level + 1)
        };
        templates.push_str(&format!(
            "  - name: {prefix}{level}\n    dag:\n      tasks:\n"
        ));
        for i in 0..width {
            templates.push_str(&format!("      - {{name: n{i}, template: {child}}}\n"));
        }
    }
    templates
}

/// Two nested DAGs of 8 000 parallel leaves, the second depending on the first: every leaf of
/// the second waits for every leaf of the first, 64 million dependencies (gigabytes) without
/// the pipeline budget.
#[test]
fn nested_dags_depending_on_each_other_are_refused_before_the_edges_multiply() {
    let _serial = serial();
    let mut templates = String::from(
        "  - name: main\n    dag:\n      tasks:\n      - {name: a, template: w0}\n      - {name: b, \
         template: w0, depends: a}\n",
    );
    templates.push_str(&wide_templates("w", 20, 3, "leaf"));
    templates.push_str("  - name: leaf\n    container: {image: busybox}\n");
    let error = refused(
        analyse(&workflow("", &templates)),
        "grows too large",
        (MAX_PIPELINE_BYTES / (1024 * 1024)) as f64 * 2.5,
        SECONDS_30,
    );
    assert!(error.to_string().contains("256 MiB"), "{error}");
}

/// A leaf template with a 60 KiB image name called 27 000 times: 1.6 GiB of copies.
#[test]
fn a_large_template_called_tens_of_thousands_of_times_is_refused() {
    let _serial = serial();
    let mut templates =
        String::from("  - name: main\n    dag:\n      tasks:\n      - {name: a, template: w0}\n");
    templates.push_str(&wide_templates("w", 30, 3, "leaf"));
    templates.push_str(&format!(
        "  - name: leaf\n    container: {{image: \"{}\"}}\n",
        "i".repeat(60 * 1024)
    ));
    refused(
        analyse(&workflow("", &templates)),
        "grows too large",
        (MAX_PIPELINE_BYTES / (1024 * 1024)) as f64 * 2.5,
        SECONDS_30,
    );
}

// --- Quadratic traps -------------------------------------------------------------------------

/// A `depends` expression of 20 000 tasks joined by `||` parses into a shallow tree, quickly;
/// one over the token limit is refused.
#[test]
fn long_depends_expressions_are_shallow_and_bounded() {
    let _serial = serial();
    let n = 20_000;
    let mut tasks = String::new();
    for i in 0..n {
        tasks.push_str(&format!("      - {{name: t{i}, template: leaf}}\n"));
    }
    let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    tasks.push_str(&format!(
        "      - name: join\n        template: leaf\n        depends: \"{}\"\n",
        names.join(" || ")
    ));
    let text = workflow(
        "",
        &format!(
            "  - name: main\n    dag:\n      tasks:\n{tasks}  - name: leaf\n    container: {{image: \
             busybox}}\n"
        ),
    );
    let run = analyse(&text);
    assert!(run.elapsed < SECONDS_30, "took {:?}", run.elapsed);
    let pipelines = run.result.expect("valid");
    let join = pipelines[0]
        .tasks
        .iter()
        .find(|t| t.id == "join")
        .expect("join task");
    assert_eq!(join.depends_on.len(), n);

    let expression = vec!["a"; 60_000].join(" || ");
    let error = kfcache_parser::argo::depends::parse(&expression).expect_err("refused");
    assert!(error.to_string().contains("tokens"), "{error}");
}

/// Thousands of workflow parameters and tens of thousands of calls: the parameters are not
/// copied into every call's scope.
#[test]
fn many_parameters_times_many_calls_stay_linear() {
    let _serial = serial();
    let parameters: String = (0..3_000)
        .map(|i| format!("    - {{name: p{i}, value: v{i}}}\n"))
        .collect();
    let mut templates =
        String::from("  - name: main\n    dag:\n      tasks:\n      - {name: a, template: w0}\n");
    templates.push_str(&wide_templates("w", 35, 3, "leaf"));
    templates.push_str(
        "  - name: leaf\n    container: {image: \"busybox:{{workflow.parameters.p7}}\"}\n",
    );
    let run = analyse(&workflow(&parameters, &templates));
    assert!(run.elapsed < SECONDS_30, "took {:?}", run.elapsed);
    let pipelines = run.result.expect("valid");
    assert_eq!(pipelines[0].tasks.len(), 35 * 35 * 35);
    assert_eq!(pipelines[0].tasks[0].image.as_deref(), Some("busybox:v7"));
}

/// A KFP pipeline of 40 000 tasks in one DAG: each task's line is found without scanning the
/// document again.
#[test]
fn kfp_tasks_are_located_in_linear_time() {
    let _serial = serial();
    let n = 40_000;
    let mut text = String::from("pipelineInfo: {name: many}\nroot:\n  dag:\n    tasks:\n");
    for i in 0..n {
        text.push_str(&format!(
            "      task-{i}:\n        componentRef: {{name: comp-leaf}}\n"
        ));
    }
    text.push_str(
        "components:\n  comp-leaf: {executorLabel: exec-leaf}\ndeploymentSpec:\n  executors:\n    \
         exec-leaf: {container: {image: busybox}}\n",
    );
    let run = analyse(&text);
    assert!(run.elapsed < SECONDS_30, "took {:?}", run.elapsed);
    let pipelines = run.result.expect("valid");
    assert_eq!(pipelines[0].tasks.len(), n);
    assert_eq!(pipelines[0].tasks[n - 1].line, Some(4 + 2 * n - 1));
}
