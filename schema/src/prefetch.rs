//! What the prefetcher copied ([`TransferRecord`]) and the bandwidth it measured.

use chrono::{DateTime, Utc};

use crate::error::{Context, Result};
use crate::records::timestamp;
use crate::store::Store;

/// One object the prefetcher staged.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRecord {
    pub version_id: Option<i64>,
    pub run_name: Option<String>,
    pub uri: String,
    pub bytes: u64,
    pub seconds: f64,
    pub finished_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub met_deadline: Option<bool>,
}

/// Transfers smaller than this say more about latency than bandwidth and are not counted.
const MIN_MEASURED_BYTES: i64 = 1 << 20;

impl Store {
    /// Records staged objects, all or none.
    pub async fn record_transfers(&self, transfers: &[TransferRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        for t in transfers {
            sqlx::query(
                "INSERT INTO prefetch_transfer (version_id, run_name, uri, bytes, seconds,
                     finished_at, deadline_at, met_deadline)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(t.version_id)
            .bind(&t.run_name)
            .bind(&t.uri)
            .bind(i64::try_from(t.bytes).unwrap_or(i64::MAX))
            .bind(t.seconds.max(0.0))
            .bind(timestamp(t.finished_at))
            .bind(t.deadline_at.map(timestamp))
            .bind(t.met_deadline)
            .execute(&mut *tx)
            .await
            .context("recording a transfer")?;
        }
        tx.commit().await.context("committing transfers")
    }

    /// Bytes per second of the `recent` most recent transfers of at least 1 MiB (total bytes
    /// over total seconds); `None` without any.
    pub async fn measured_bandwidth(&self, recent: u32) -> Result<Option<f64>> {
        let row: (Option<i64>, Option<f64>) = sqlx::query_as(
            "SELECT sum(bytes), sum(seconds) FROM (
                SELECT bytes, seconds FROM prefetch_transfer
                 WHERE bytes >= ?1 AND seconds > 0
                 ORDER BY finished_at DESC, id DESC LIMIT ?2)",
        )
        .bind(MIN_MEASURED_BYTES)
        .bind(recent)
        .fetch_one(&self.pool)
        .await
        .context("measuring bandwidth")?;
        Ok(match row {
            (Some(bytes), Some(seconds)) if seconds > 0.0 => Some(bytes as f64 / seconds),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn transfer(uri: &str, bytes: u64, seconds: f64, minute: u32) -> TransferRecord {
        TransferRecord {
            version_id: None,
            run_name: Some("run-1".to_string()),
            uri: uri.to_string(),
            bytes,
            seconds,
            finished_at: DateTime::parse_from_rfc3339(&format!("2026-01-01T00:{minute:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc),
            deadline_at: None,
            met_deadline: Some(true),
        }
    }

    #[tokio::test]
    async fn bandwidth_is_bytes_over_seconds_of_recent_large_transfers() {
        let store = Store::open_in_memory().await.unwrap();
        assert_eq!(store.measured_bandwidth(10).await.unwrap(), None);
        store
            .record_transfers(&[
                transfer("s3://b/old", 100 << 20, 100.0, 1),
                transfer("s3://b/a", 200 << 20, 1.0, 2),
                transfer("s3://b/b", 100 << 20, 1.0, 3),
                // Too small to say anything about bandwidth.
                transfer("s3://b/tiny", 10, 10.0, 4),
            ])
            .await
            .unwrap();
        let recent = store.measured_bandwidth(2).await.unwrap().unwrap();
        assert_eq!(recent, (300u64 << 20) as f64 / 2.0);
        let all = store.measured_bandwidth(10).await.unwrap().unwrap();
        assert_eq!(all, (400u64 << 20) as f64 / 102.0);
    }
}
