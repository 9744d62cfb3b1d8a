//! kfcache's predictor: when each task of a pipeline will start and end, and what it will
//! read by then.
//!
//! The pure core is synchronous: [`status`] reads Argo run status into observations,
//! [`history`] matches them to the analysed tasks, [`duration`] estimates each task's
//! duration (history → scaled → prior), [`simulate`] lays the run out under dependencies,
//! fan-out and parallelism limits, and [`predict`] puts it together. [`anchor`] turns
//! `--start-at` / `--next-run` into a wall-clock start, [`gantt`] draws the result, and
//! [`backtest`] measures the whole thing against synthetic history. Only [`probe`], which
//! asks object stores and file systems for input sizes, is async.

pub mod anchor;
#[cfg(feature = "backtest")]
pub mod backtest;
pub mod duration;
mod error;
pub mod gantt;
pub mod history;
pub mod predict;
pub mod probe;
pub mod simulate;
pub mod status;

pub use duration::{DurationEstimate, DurationSource, EstimatorConfig, PriorConfig};
pub use error::{Error, Result};
pub use history::PipelineHistory;
pub use predict::{predict, InputPrediction, InputSizes, Prediction, TaskPrediction};
