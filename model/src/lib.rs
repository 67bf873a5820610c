//! pipetel's pure domain: stage events, keys, validation, projections, SLA rules and the fold.
//!
//! Nothing here does I/O or reads the clock: `now` is always a parameter, so every projection
//! and alert decision can be replayed and tested as a plain function.
#![forbid(unsafe_code)]

mod error;
mod event;
mod retry;
mod rollup;
mod sla;
mod sweep;
mod values;

pub use error::{ConfigError, EventError};
pub use event::{
    event_sk, job_id, parse_job_id, write_job_id, EventItem, EventItemRef, EventKey, Lane,
    StageEvent, JOB_STAGE, MAX_ERROR_DETAILS_CHARS, MAX_ERROR_SUMMARY_CHARS,
};
pub use retry::{execution_name, plan_retries, Dispatch, RetryInput, MAX_EXECUTION_NAME_CHARS};
pub use rollup::{
    fold_by_job, FailedJob, JobMismatch, JobRollup, JobState, JobStatus, LastFailure, RetryPolicy,
    RetryState, StageRollup,
};
pub use sla::{
    AlertKind, AlertMessage, AlertState, Breach, Deadline, Measure, Severity, SlaRules,
    SourceRules, DEFAULT_RULES_TOML,
};
pub use sweep::{plan_sweep, watched_run_dates, LedgerAlert, LedgerState, SweepPlan};
pub use values::{truncate_chars, Name, RunDate, Status, Timestamp, MAX_NAME_CHARS};
