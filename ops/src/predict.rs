//! Predicting a pipeline from what the store knows: the run history of the pipeline and the
//! sizes of its inputs probed earlier.

use kfcache_parser::{Dag, Pipeline};
use kfcache_predictor::history::PipelineHistory;
use kfcache_predictor::{predict, EstimatorConfig, InputSizes, Prediction};
use kfcache_schema::{classify, StorageKind, Store};

use crate::error::{Context as _, Result};

/// Recent runs of history a prediction learns from unless told otherwise.
pub const DEFAULT_HISTORY_RUNS: u32 = 50;

/// Sizes of a pipeline's inputs as stored (probed earlier).
pub async fn stored_sizes(store: &Store, pipeline: &Pipeline) -> Result<InputSizes> {
    let mut sizes = InputSizes::new();
    for uri in pipeline
        .tasks
        .iter()
        .flat_map(|t| t.inputs.iter())
        .filter_map(|i| i.source.as_deref())
    {
        if sizes.contains_key(uri) {
            continue;
        }
        let read = || format!("cannot read the size of {uri}");
        let size = match classify(uri) {
            StorageKind::Data => store
                .data(uri)
                .await
                .context(read)?
                .and_then(|d| d.size_bytes),
            StorageKind::Directory => store
                .directory(uri)
                .await
                .context(read)?
                .and_then(|d| d.size_bytes),
            StorageKind::Inline => None,
        };
        if let Some(size) = size {
            sizes.insert(uri.to_string(), size);
        }
    }
    Ok(sizes)
}

/// Predicts `pipeline` from the last `history_runs` runs and the sizes in `store`.
pub async fn predict_from_store(
    store: &Store,
    pipeline: &Pipeline,
    dag: &Dag,
    config: &EstimatorConfig,
    history_runs: u32,
) -> Result<Prediction> {
    let runs: Vec<_> = store
        .runs_of_pipeline(&pipeline.name, history_runs)
        .await
        .context(|| format!("cannot read the run history of `{}`", pipeline.name))?
        .into_iter()
        .map(|r| r.run)
        .collect();
    let history = PipelineHistory::build(pipeline, &runs);
    let sizes = stored_sizes(store, pipeline).await?;
    Ok(predict(pipeline, dag, &history, &sizes, config))
}
