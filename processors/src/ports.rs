//! Ports: the small async traits the processor needs. Adapters hold an SDK client plus the
//! table or topic name; only domain types and [`StoreError`]/[`AlertError`] cross these traits.

use std::collections::HashMap;
use std::future::Future;

use pipetel_model::{Breach, FailedJob, JobRollup, Timestamp};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a projection read or write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the item since it was read: re-read, re-merge, retry.
    #[error("{table}: {key} changed since it was read")]
    Conflict { table: String, key: String },
    /// A stored projection cannot be decoded: needs `pipetel rebuild`, never silently overwritten.
    #[error("{table}: stored item {key} is not a valid projection")]
    Corrupt {
        table: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// The service failed or throttled beyond the SDK's retries.
    #[error("{table}: {operation} failed")]
    Unavailable {
        table: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Why alerts could not be raised.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Another worker claimed this alert moments ago and has not published it yet; retry later.
    #[error("alert {alert_id} is being published by another worker")]
    InFlight { alert_id: String },
    #[error("alert ledger {table}: {operation} failed")]
    Ledger {
        table: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("publishing to {topic} failed")]
    Publish {
        topic: String,
        #[source]
        source: BoxError,
    },
}

/// The projection tables: job rollups and the failed-jobs retry queue.
pub trait ProjectionStore: Send + Sync {
    /// Reads the stored rollups of these jobs (strongly consistent); absent jobs are left out.
    fn get_rollups(
        &self,
        job_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, JobRollup>, StoreError>> + Send;

    /// Writes `rollup` only if the stored revision is still `expected_revision`
    /// (`None`: only if no rollup is stored). Otherwise [`StoreError::Conflict`].
    fn put_rollup(
        &self,
        rollup: &JobRollup,
        expected_revision: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes a retry-queue entry unless the stored one was derived from more events.
    fn put_failed_job(
        &self,
        entry: &FailedJob,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What happened to each breach handed to [`AlertSink::raise`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub published: usize,
    pub already_published: usize,
}

/// Publishes SLA alerts at most once per `alert_id`, through a ledger.
pub trait AlertSink: Send + Sync {
    fn raise(
        &self,
        breaches: &[Breach],
        detected_at: Timestamp,
    ) -> impl Future<Output = Result<Raised, AlertError>> + Send;
}
