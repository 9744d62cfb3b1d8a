//! Every limit the parser puts on its input, in one place, so that a hostile or broken file is
//! refused with a clear, located error instead of exhausting memory, time or the stack.
//!
//! Each limit is refused as invalid input (`kfcache analyze` exits with code 2), never as a
//! panic or a stack overflow; the error names the file and, where it is known, the line. They
//! are constants rather than settings: real pipelines stay far below every one of them (an Argo
//! workflow has to fit in one Kubernetes object, about 1.5 MiB), so a file that reaches one is
//! broken or hostile, not big.
//!
//! | What | Limit | Where it is checked |
//! |------|-------|---------------------|
//! | file size | [`MAX_FILE_BYTES`] (64 MiB) | [`crate::document::split_bytes`], before any YAML is read |
//! | YAML nesting | [`MAX_YAML_DEPTH`] (128 levels) | a linear pre-scan of flow collections, then serde_yaml's recursion limit; both in [`crate::document`] |
//! | YAML alias expansion | [`yaml_expansion_budget`] | [`crate::document`], while the document is built |
//! | JSON nesting (KFP IR embedded in Argo arguments) | [`MAX_JSON_DEPTH`] (128 levels) | serde_json's recursion limit |
//! | a value after `{{…}}` substitution | [`MAX_VALUE_BYTES`] (1 MiB) | both front ends' substitution |
//! | known loop instances of one task | [`MAX_FAN_OUT`] (100 000) | both front ends' loop fan-out |
//! | nested templates / component DAGs | [`MAX_TEMPLATE_DEPTH`] (64) | both flatteners |
//! | calls / tasks expanded | [`MAX_EXPANDED_TASKS`] (50 000) | both flatteners |
//! | size of the flattened pipeline | [`MAX_PIPELINE_BYTES`] (256 MiB) | both flatteners, per task |
//! | `depends` expression | [`MAX_DEPENDS_TOKENS`] tokens, 128 levels of `(`/`!` | the `depends` parser |
//!
//! Alias expansion needs its own budget because serde_yaml's repetition limit only counts
//! alias *jumps* (at most 100 per event of the document): one anchored list of *n* items
//! aliased *n* times passes it, yet expands to *n²* nodes, gigabytes from a 100 KiB file. The
//! budget counts every node built (and every byte of every scalar, so that a long anchored
//! string aliased many times counts as what it costs), and is proportional to the document's
//! own size, which a document without aliases never reaches.

use std::cell::Cell;

use crate::error::{Error, Location, Result};

/// Files (or contents handed to [`crate::parse_bytes`]) larger than this are refused before
/// they are parsed.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// How deeply YAML collections may nest: serde_yaml's own recursion limit, which this crate
/// reports as a limit error. Flow collections (`[[[…`) nested deeper are refused by a linear
/// pre-scan before libyaml reads them, because libyaml's scanner takes time quadratic in their
/// depth; libyaml itself never recurses, so nothing overflows the stack either way.
pub const MAX_YAML_DEPTH: usize = 128;

/// How deeply JSON may nest in the KFP IR documents the KFP backend embeds as strings in an
/// Argo workflow's arguments: serde_json's own recursion limit.
pub const MAX_JSON_DEPTH: usize = 128;

/// The node-and-byte budget of one YAML document is this many times its length in bytes...
pub const YAML_EXPANSION_FACTOR: u64 = 4;

/// ...plus this allowance, so that small documents may still use aliases freely.
pub const YAML_EXPANSION_ALLOWANCE: u64 = 1024 * 1024;

/// The budget of a YAML document of `document_bytes` bytes: every node built costs one, every
/// scalar one more per byte of its text. Without aliases a document costs at most about twice
/// its length (a node takes at least one byte of text, and an escape such as `\L` makes three
/// bytes out of two), so only alias expansion reaches the budget.
pub fn yaml_expansion_budget(document_bytes: usize) -> u64 {
    (document_bytes as u64)
        .saturating_mul(YAML_EXPANSION_FACTOR)
        .saturating_add(YAML_EXPANSION_ALLOWANCE)
}

/// The longest string a `{{…}}` placeholder substitution may produce (Argo
/// `{{inputs.parameters.x}}`, KFP `{{$.inputs.parameters['x']}}`). Substituted values flow into
/// the arguments of nested templates, where they may be substituted again, so without a bound a
/// value doubled at each of a few dozen levels would outgrow any memory.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The most loop instances (`withItems`, `withSequence`, KFP `ParallelFor` over a known list,
/// multiplied through nested loops) a task may be known to fan out to. Beyond it the pipeline
/// is refused: nothing runs a trillion pods, and later stages (predictor, backtests) do work
/// per instance. Loops whose count is known only at run time stay dynamic.
pub const MAX_FAN_OUT: u64 = 100_000;

/// The most loop items for which an input that names its item (`shard-{{item}}.bin`) is
/// listed once per item ([`crate::Input::item`]); a longer loop keeps the one input with the
/// placeholder, read by every instance, as when the items are not known.
pub const MAX_ITEM_INPUTS: usize = 1_000;

/// How deeply templates (Argo) or component DAGs (KFP) may nest, and how far a recursive
/// template guarded by `when` is followed, before the pipeline is refused.
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// A placeholder substitution whose result would be longer than [`MAX_VALUE_BYTES`]; the
/// front ends turn it into a located [`crate::Error::LimitExceeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "placeholder substitution makes it longer than {MAX_VALUE_BYTES} bytes"
        )
    }
}

impl std::error::Error for TooLong {}

/// How many calls (Argo) or tasks (KFP) one pipeline may expand into while it is flattened, so
/// that templates called several times at each of several levels cannot multiply without end.
pub const MAX_EXPANDED_TASKS: usize = 50_000;

/// The largest a flattened pipeline may grow, counting the bytes of its tasks' strings (ids,
/// dependencies, parameters, inputs, outputs, images, conditions). A small template called
/// tens of thousands of times, or nested DAGs whose every source task depends on every sink of
/// another, would otherwise multiply a small file into gigabytes.
pub const MAX_PIPELINE_BYTES: usize = 256 * 1024 * 1024;

/// What is left of [`MAX_PIPELINE_BYTES`] while one pipeline is flattened. Both flatteners
/// charge every value they substitute and every task they emit (so a string is sometimes
/// counted twice: the budget bounds the work done as well as what is kept).
#[derive(Debug)]
pub(crate) struct PipelineBudget {
    left: Cell<usize>,
}

impl PipelineBudget {
    pub(crate) fn new() -> PipelineBudget {
        PipelineBudget {
            left: Cell::new(MAX_PIPELINE_BYTES),
        }
    }

    /// Take `bytes` from the budget; the error, located at `at`, once it is spent.
    pub(crate) fn charge(&self, bytes: usize, at: impl FnOnce() -> Location) -> Result<()> {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(Error::LimitExceeded {
                    at: at(),
                    what: "the flattened pipeline (its tasks' strings and every substituted \
                           value) grows too large"
                        .to_string(),
                    limit: format!(
                        "{MAX_PIPELINE_BYTES} bytes ({} MiB)",
                        MAX_PIPELINE_BYTES / (1024 * 1024)
                    ),
                })
            }
        }
    }
}

/// The most tokens (task names, operators, parentheses) one `depends` expression may hold.
pub const MAX_DEPENDS_TOKENS: usize = 100_000;
