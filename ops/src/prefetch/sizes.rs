//! Sizes the plan needs and the store does not have yet: inputs whose size was never probed
//! are asked from their source (an object's size, or the total under a directory), stored for
//! later plans and predictions, and filled into the plan's tasks.

use std::collections::HashMap;

use futures::StreamExt;
use kfcache_prefetcher::plan::PlanTask;
use kfcache_prefetcher::{ArtifactSource, ObjectStoreSource};
use kfcache_schema::Store;

/// Asks the source for the size of every stageable input whose size is not known (an object's
/// size, or the total under a directory), stores what it learns, and returns it. Inputs that
/// do not exist yet (outputs of upstream tasks) are left unknown.
pub(crate) async fn probe_unknown_sizes(
    store: &Store,
    source: &ObjectStoreSource,
    tasks: &[PlanTask],
) -> HashMap<String, u64> {
    let mut unknown: Vec<String> = tasks
        .iter()
        .flat_map(|t| t.inputs.iter())
        .filter(|i| i.bytes.is_none() && kfcache_prefetcher::plan::stageable(&i.uri))
        .map(|i| i.uri.clone())
        .collect();
    unknown.sort();
    unknown.dedup();
    // (URI, (bytes, objects when it is a directory)) for each probe that answered.
    type Probed = (String, Option<(u64, Option<u64>)>);
    let probed: Vec<Probed> = futures::stream::iter(unknown)
        .map(|uri| async move {
            let size = if uri.ends_with('/') {
                source
                    .list(&uri)
                    .await
                    .ok()
                    .map(|l| (l.iter().map(|o| o.size).sum(), Some(l.len() as u64)))
            } else {
                match source.head(&uri).await {
                    Ok(object) => Some((object.size, None)),
                    Err(_) => source
                        .list(&format!("{uri}/"))
                        .await
                        .ok()
                        .filter(|l| !l.is_empty())
                        .map(|l| (l.iter().map(|o| o.size).sum(), Some(l.len() as u64))),
                }
            };
            (uri, size)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut sizes = HashMap::new();
    for (uri, size) in probed {
        let Some((bytes, count)) = size else {
            continue;
        };
        let stored = match count {
            Some(count) if uri.ends_with('/') => store.set_directory_size(&uri, bytes, count).await,
            _ => store.set_data_size(&uri, bytes).await,
        };
        if let Err(error) = stored {
            tracing::warn!(%uri, "cannot store the probed size: {error}");
        }
        sizes.insert(uri, bytes);
    }
    sizes
}

pub(crate) fn fill_sizes(tasks: &mut [PlanTask], sizes: &HashMap<String, u64>) {
    for input in tasks.iter_mut().flat_map(|t| t.inputs.iter_mut()) {
        if input.bytes.is_none() {
            input.bytes = sizes.get(&input.uri).copied();
        }
    }
}
