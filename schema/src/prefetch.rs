//! What the prefetcher copied ([`TransferRecord`]) and the bandwidth it measured.

use chrono::{DateTime, Utc};

use crate::error::{Context, Result};
use crate::records::{parse_timestamp, timestamp};
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

    /// Bytes per second of the `recent` most recent transfers of at least 1 MiB: their bytes
    /// over the time the link was busy with at least one of them. Transfers that ran at the
    /// same time share the link, so their seconds are not added up (that would measure one
    /// stream, not the staging pipe the plan models). `None` without any.
    pub async fn measured_bandwidth(&self, recent: u32) -> Result<Option<f64>> {
        let rows: Vec<(i64, f64, String)> = sqlx::query_as(
            "SELECT bytes, seconds, finished_at FROM prefetch_transfer
              WHERE bytes >= ?1 AND seconds > 0
              ORDER BY finished_at DESC, id DESC LIMIT ?2",
        )
        .bind(MIN_MEASURED_BYTES)
        .bind(recent)
        .fetch_all(&self.pool)
        .await
        .context("measuring bandwidth")?;
        let mut bytes = 0.0;
        let mut windows = Vec::with_capacity(rows.len());
        for (size, seconds, finished_at) in rows {
            let end = parse_timestamp("prefetch_transfer", "finished_at", &finished_at)?;
            let end = end.timestamp_micros() as f64 / 1e6;
            bytes += size as f64;
            windows.push((end - seconds, end));
        }
        let busy = busy_seconds(&mut windows);
        Ok((busy > 0.0).then(|| bytes / busy))
    }
}

/// The length of the union of `windows` (start, end).
fn busy_seconds(windows: &mut [(f64, f64)]) -> f64 {
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut busy = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for &(start, end) in windows.iter() {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                busy += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    busy + current.map_or(0.0, |(s, e)| e - s)
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

    #[tokio::test]
    async fn transfers_at_the_same_time_share_the_link() {
        let store = Store::open_in_memory().await.unwrap();
        let at = |minute: u32, second: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-01-01T00:{minute:02}:{second:02}Z"))
                .unwrap()
                .with_timezone(&Utc)
        };
        let mut a = transfer("s3://b/a", 100 << 20, 2.0, 0);
        a.finished_at = at(5, 2);
        // The same two seconds as `a`, and one second of its own after them.
        let mut b = transfer("s3://b/b", 100 << 20, 3.0, 0);
        b.finished_at = at(5, 3);
        store.record_transfers(&[a, b]).await.unwrap();
        let measured = store.measured_bandwidth(10).await.unwrap().unwrap();
        assert_eq!(measured, (200u64 << 20) as f64 / 3.0);
    }
}
