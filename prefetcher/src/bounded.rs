//! A cache sink with a bound on every wait, for callers that must never be held up by the
//! cache: the sidecar's init container, which can always read its inputs from their origins.
//!
//! Each operation gets at most the bound. The first one that does not finish in time (or fails
//! only once the bound has passed) marks the cluster as unresponsive, and from then on every operation fails at once with
//! [`Error::Unresponsive`] without asking the cluster: a hung cluster (a black hole that
//! accepts connections and never answers) costs its caller one bound in all, not one bound per
//! request. Failures that come back in time (a refused connection, a lost node, a server
//! error) are passed through and change nothing: the next operation asks again.
//!
//! An operation abandoned at the bound is dropped; the Ignite client's connections are safe to
//! cancel (a request never leaves half a frame on the wire).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::sink::{CacheSink, Space};

/// Wraps a sink so that no operation waits longer than `timeout`, and none is tried after one
/// has timed out.
#[derive(Debug)]
pub struct BoundedSink<S: CacheSink + ?Sized> {
    inner: Arc<S>,
    timeout: Duration,
    unresponsive: AtomicBool,
}

impl<S: CacheSink + ?Sized> BoundedSink<S> {
    pub fn new(inner: Arc<S>, timeout: Duration) -> Self {
        BoundedSink {
            inner,
            timeout,
            unresponsive: AtomicBool::new(false),
        }
    }

    /// The bound on each operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an operation has timed out, so that no more are tried.
    pub fn is_unresponsive(&self) -> bool {
        self.unresponsive.load(Ordering::Relaxed)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        operation: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let unresponsive = |earlier| Error::Unresponsive {
            op,
            timeout: self.timeout,
            earlier,
        };
        if self.is_unresponsive() {
            return Err(unresponsive(true));
        }
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(self.timeout, operation).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            // A failure that took the whole bound is a cache that did not answer in time too,
            // whatever gave up first (the client's own timeouts may equal the bound).
            Ok(Err(error)) if started.elapsed() < self.timeout => Err(error),
            Ok(Err(error)) => {
                self.give_up(op, &error);
                Err(error)
            }
            Err(_) => {
                let error = unresponsive(false);
                self.give_up(op, &error);
                Err(error)
            }
        }
    }

    fn give_up(&self, op: &'static str, error: &Error) {
        self.unresponsive.store(true, Ordering::Relaxed);
        tracing::warn!(op, timeout = ?self.timeout, sink = %self.inner.describe(), %error, "the cache did not answer in time; not asking it again");
    }
}

#[async_trait]
impl<S: CacheSink + ?Sized> CacheSink for BoundedSink<S> {
    fn describe(&self) -> String {
        format!(
            "{} (each wait at most {:?})",
            self.inner.describe(),
            self.timeout
        )
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
        self.bounded("get", self.inner.get(space, key)).await
    }

    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
        self.bounded("get-all", self.inner.get_all(space, keys))
            .await
    }

    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
        self.bounded("put", self.inner.put(space, key, value)).await
    }

    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
        self.bounded("put-all", self.inner.put_all(space, entries))
            .await
    }

    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        self.bounded("remove-all", self.inner.remove_all(space, keys))
            .await
    }

    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        self.bounded("scan", self.inner.keys_with_prefix(space, prefix))
            .await
    }

    async fn contains(&self, space: Space, key: &str) -> Result<bool> {
        self.bounded("contains", self.inner.contains(space, key))
            .await
    }

    async fn put_if_absent(&self, space: Space, key: &str, value: Bytes) -> Result<bool> {
        self.bounded("put-if-absent", self.inner.put_if_absent(space, key, value))
            .await
    }

    async fn replace_if_equals(
        &self,
        space: Space,
        key: &str,
        expected: Bytes,
        new: Bytes,
    ) -> Result<bool> {
        self.bounded(
            "replace-if-equals",
            self.inner.replace_if_equals(space, key, expected, new),
        )
        .await
    }

    async fn remove_if_equals(&self, space: Space, key: &str, expected: Bytes) -> Result<bool> {
        self.bounded(
            "remove-if-equals",
            self.inner.remove_if_equals(space, key, expected),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySink;

    /// A sink whose reads of one key never answer, like a cluster that went silent.
    #[derive(Debug, Default)]
    struct Silent {
        memory: MemorySink,
    }

    #[async_trait]
    impl CacheSink for Silent {
        fn describe(&self) -> String {
            "silent".to_string()
        }
        async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
            if key == "hang" {
                std::future::pending::<()>().await;
            }
            if key == "late-error" {
                // Gives up on its own, at the caller's bound (like the client's timeouts).
                tokio::time::sleep(Duration::from_millis(60)).await;
                return Err(Error::Config("late".to_string()));
            }
            if key == "early-error" {
                return Err(Error::Config("early".to_string()));
            }
            self.memory.get(space, key).await
        }
        async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
            self.memory.get_all(space, keys).await
        }
        async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
            self.memory.put(space, key, value).await
        }
        async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
            self.memory.put_all(space, entries).await
        }
        async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
            self.memory.remove_all(space, keys).await
        }
        async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
            self.memory.keys_with_prefix(space, prefix).await
        }
    }

    #[tokio::test]
    async fn one_timeout_and_the_cache_is_not_asked_again() {
        let sink = BoundedSink::new(Arc::new(Silent::default()), Duration::from_millis(50));
        sink.put(Space::Meta, "k", Bytes::from_static(b"v"))
            .await
            .expect("put in time");
        assert_eq!(
            sink.get(Space::Meta, "k").await.expect("get in time"),
            Some(Bytes::from_static(b"v"))
        );
        let started = std::time::Instant::now();
        let error = sink.get(Space::Meta, "hang").await.expect_err("times out");
        assert!(
            matches!(error, Error::Unresponsive { earlier: false, .. }),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(sink.is_unresponsive());
        // The key that answered before is not asked for again.
        let error = sink.get(Space::Meta, "k").await.expect_err("not asked");
        assert!(
            matches!(error, Error::Unresponsive { earlier: true, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("not asked again"), "{error}");
    }

    #[tokio::test]
    async fn an_error_that_took_the_whole_bound_counts_as_no_answer() {
        let sink = BoundedSink::new(Arc::new(Silent::default()), Duration::from_millis(50));
        let error = sink
            .get(Space::Meta, "early-error")
            .await
            .expect_err("fails");
        assert!(matches!(error, Error::Config(_)), "{error}");
        assert!(!sink.is_unresponsive(), "a quick failure is passed through");
        let error = sink
            .get(Space::Meta, "late-error")
            .await
            .expect_err("fails");
        assert!(
            matches!(error, Error::Config(_) | Error::Unresponsive { .. }),
            "{error}"
        );
        assert!(sink.is_unresponsive());
        let error = sink.get(Space::Meta, "k").await.expect_err("not asked");
        assert!(
            matches!(error, Error::Unresponsive { earlier: true, .. }),
            "{error}"
        );
    }
}
