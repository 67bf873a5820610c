//! The retry dispatcher as a pure decision: which retry-queue entries are due, under which
//! idempotent execution name, and when to look at them again.
//!
//! `failure_count` stays event-derived (the number of distinct FAILED events of the lane): the
//! dispatcher never changes it. It records its own dispatch in separate attributes and pushes
//! `next_retry_at` out by the backoff, so an entry is not resubmitted while its retry starts up;
//! once the retry logs its RUNNING event the stream processor takes the entry out of the due index
//! altogether (see [`FailedJob::derive_all`]), and a new FAILED event brings it back with the next
//! backoff. The execution name is a function of (lane, failure_count): one failure is resubmitted
//! at most once, whatever redelivery, overlap or clock skew the dispatcher suffers.

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::rollup::{FailedJob, RetryPolicy, RetryState};
use crate::values::{Name, RunDate, Timestamp};

/// Longest Step Functions execution name.
pub const MAX_EXECUTION_NAME_CHARS: usize = 80;

/// One resubmission to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub entry: FailedJob,
    /// Deterministic per (lane, failure_count); `[A-Za-z0-9_-]`, at most 80 characters.
    pub execution_name: String,
    /// Where `next_retry_at` moves once dispatched: now + the entry's backoff.
    pub next_retry_at: Timestamp,
}

/// What the resubmitted run receives: which stage of which run to redo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryInput {
    pub source: Name,
    pub category: Option<Name>,
    pub stage: Name,
    pub run_date: RunDate,
    pub job_id: String,
    /// The attempt this retry is: failures so far + 1.
    pub attempt: u32,
}

impl Dispatch {
    pub fn input(&self) -> RetryInput {
        RetryInput {
            source: self.entry.source.clone(),
            category: self.entry.category.clone(),
            stage: self.entry.stage.clone(),
            run_date: self.entry.run_date,
            job_id: self.entry.job_id.clone(),
            attempt: self.entry.failure_count.saturating_add(1),
        }
    }
}

/// The entries to resubmit at `now`: PENDING, due, and with retries left; oldest due first.
pub fn plan_retries(entries: &[FailedJob], policy: &RetryPolicy, now: Timestamp) -> Vec<Dispatch> {
    let mut due: Vec<&FailedJob> = entries
        .iter()
        .filter(|e| e.retry_state == RetryState::Pending)
        .filter(|e| e.failure_count < policy.max_retries)
        .filter(|e| e.next_retry_at.is_some_and(|at| at <= now))
        .collect();
    due.sort_by(|a, b| (a.next_retry_at, &a.pk).cmp(&(b.next_retry_at, &b.pk)));
    due.into_iter()
        .map(|entry| Dispatch {
            entry: entry.clone(),
            execution_name: execution_name(&entry.pk, entry.failure_count),
            next_retry_at: now.plus_seconds(policy.backoff_seconds(entry.failure_count)),
        })
        .collect()
}

/// `{readable pk}-{hash of pk}-f{failure_count}`: the readable part keeps `[A-Za-z0-9_-]` (others
/// become `-`) and is cut to fit 80 characters; the hash keeps distinct lanes distinct after that.
pub fn execution_name(pk: &str, failure_count: u32) -> String {
    let suffix = format!("-{:016x}-f{failure_count}", xxh3_64(pk.as_bytes()));
    let room = MAX_EXECUTION_NAME_CHARS - suffix.len();
    let readable: String = pk
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    readable + &suffix
}
