//! Ports: the small async traits the processors need. Adapters hold an SDK client plus the
//! table, topic or state machine; only domain types and the errors below cross these traits.

use std::collections::HashMap;
use std::future::Future;

use pipetel_model::{
    AlertMessage, Breach, Dispatch, FailedJob, JobRollup, LedgerAlert, Name, RunDate, Timestamp,
};

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

/// Rollups listed by run date (the `job-rollups` index `by-run-date`), for the sweeper.
pub trait RollupsByDate: Send + Sync {
    fn rollups_of(
        &self,
        run_date: RunDate,
    ) -> impl Future<Output = Result<Vec<JobRollup>, StoreError>> + Send;
}

/// The retry queue as the dispatcher sees it (the `failed-jobs` index `pending-by-due`).
pub trait RetryQueue: Send + Sync {
    /// PENDING entries with `next_retry_at <= now`, found with a Query, never a Scan.
    fn due(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<FailedJob>, StoreError>> + Send;

    /// Records a dispatch (`dispatched_at`, `execution_name`, `dispatch_count + 1`) and moves
    /// `next_retry_at` to `dispatch.next_retry_at`, only if the entry is still PENDING and derived
    /// from the same events as when it was read. `false`: it changed meanwhile, nothing written.
    fn mark_dispatched(
        &self,
        dispatch: &Dispatch,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The alert ledger read back, and resolutions published through it at most once per alert.
pub trait AlertLedger: Send + Sync {
    /// Every ledger entry of one run date (the `sla-alerts` index `by-run-date`).
    fn alerts_of(
        &self,
        run_date: RunDate,
    ) -> impl Future<Output = Result<Vec<LedgerAlert>, AlertError>> + Send;

    /// Publishes these resolution messages (from [`AlertMessage::resolution`]) and marks their
    /// alerts RESOLVED; an alert already resolved (or being resolved) is counted, not re-sent.
    fn resolve(
        &self,
        resolutions: &[AlertMessage],
    ) -> impl Future<Output = Result<Raised, AlertError>> + Send;
}

/// What a [`RetryTarget`] did with one resubmission.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Submitted {
    /// A new run was started (`run_id`: e.g. the Step Functions execution ARN).
    Started { run_id: String },
    /// A run under this idempotent name already exists: an earlier dispatch got through.
    AlreadyStarted,
}

/// Why a resubmission did not happen. The entry stays due and is tried again on the next run.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no retry target is configured for source {source_name}")]
    NoTarget { source_name: Name },
    #[error("resubmitting to {target} failed")]
    Submit {
        target: String,
        #[source]
        source: BoxError,
    },
}

/// Where failed stages are resubmitted: Step Functions by default; SQS, a webhook or anything
/// else by implementing this trait. Must be idempotent on `dispatch.execution_name`.
pub trait RetryTarget: Send + Sync {
    fn submit(
        &self,
        dispatch: &Dispatch,
    ) -> impl Future<Output = Result<Submitted, RetryError>> + Send;
}
