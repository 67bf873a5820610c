//! The fold: a job's state as a join-semilattice over its events, and the projections derived from it.
//!
//! [`JobState`] keeps, per lane, the set of event identities seen plus two max-registers (the latest
//! event's payload and the latest failure's payload). Merging is set union and max, so it is
//! commutative, associative and idempotent: any order, duplication or split of the event set across
//! concurrent writers converges to the same state, and every projection is a function of that state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::EventError;
use crate::event::{job_id, EventKey, Lane, StageEvent};
use crate::values::{Name, RunDate, Status, Timestamp};

/// Payload of a lane's latest event. Ordered by key first, so `max` picks the latest event and, for
/// two conflicting payloads of one identity (an overwritten item), a deterministic winner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Latest {
    key: EventKey,
    error_summary: Option<String>,
    file_fingerprint: Option<String>,
}

/// Payload of a lane's latest FAILED event (the retry queue shows it even after a retry started).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LastFailure {
    pub at: Timestamp,
    pub error_summary: Option<String>,
    pub error_details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LaneState {
    events: BTreeSet<EventKey>,
    latest: Latest,
    last_failure: Option<LastFailure>,
}

impl LaneState {
    fn from_event(event: &StageEvent) -> Self {
        let failure = (event.status() == Status::Failed).then(|| LastFailure {
            at: event.timestamp(),
            error_summary: event.error_summary().map(str::to_owned),
            error_details: event.error_details().map(str::to_owned),
        });
        LaneState {
            events: BTreeSet::from([event.key()]),
            latest: Latest {
                key: event.key(),
                error_summary: event.error_summary().map(str::to_owned),
                file_fingerprint: event.file_fingerprint().map(str::to_owned),
            },
            last_failure: failure,
        }
    }

    /// Folds one event in: what merging `LaneState::from_event(event)` does, comparing the
    /// registers by reference so that only a payload that wins is copied.
    fn absorb(&mut self, event: &StageEvent) {
        let key = event.key();
        self.events.insert(key);
        let latest = &self.latest;
        if (key, event.error_summary(), event.file_fingerprint())
            > (
                latest.key,
                latest.error_summary.as_deref(),
                latest.file_fingerprint.as_deref(),
            )
        {
            self.latest = Latest {
                key,
                error_summary: event.error_summary().map(str::to_owned),
                file_fingerprint: event.file_fingerprint().map(str::to_owned),
            };
        }
        if event.status() != Status::Failed {
            return;
        }
        let failure = (
            event.timestamp(),
            event.error_summary(),
            event.error_details(),
        );
        let newer = self.last_failure.as_ref().is_none_or(|last| {
            failure
                > (
                    last.at,
                    last.error_summary.as_deref(),
                    last.error_details.as_deref(),
                )
        });
        if newer {
            self.last_failure = Some(LastFailure {
                at: event.timestamp(),
                error_summary: event.error_summary().map(str::to_owned),
                error_details: event.error_details().map(str::to_owned),
            });
        }
    }

    fn merge(&mut self, other: LaneState) {
        self.events.extend(other.events);
        if other.latest > self.latest {
            self.latest = other.latest;
        }
        if other.last_failure > self.last_failure {
            self.last_failure = other.last_failure;
        }
    }

    fn count(&self, wanted: impl Fn(Status) -> bool) -> usize {
        self.events.iter().filter(|k| wanted(k.status)).count()
    }
}

/// The mergeable state of one job (`source#run_date`): what every projection is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    source: Name,
    run_date: RunDate,
    lanes: BTreeMap<Lane, LaneState>,
}

/// Merging states of two different jobs is a bug in the caller's grouping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge job {theirs} into job {ours}")]
pub struct JobMismatch {
    pub ours: String,
    pub theirs: String,
}

impl JobState {
    pub fn from_event(event: &StageEvent) -> Self {
        Self {
            source: event.source().clone(),
            run_date: event.run_date(),
            lanes: BTreeMap::from([(event.lane().clone(), LaneState::from_event(event))]),
        }
    }

    /// Folds one event in. Equivalent to merging `JobState::from_event(event)`, without building
    /// that state: this runs once per event of every batch.
    pub fn apply(&mut self, event: &StageEvent) -> Result<(), JobMismatch> {
        if (&self.source, self.run_date) != (event.source(), event.run_date()) {
            return Err(JobMismatch {
                ours: self.job_id(),
                theirs: event.job_id(),
            });
        }
        match self.lanes.get_mut(event.lane()) {
            Some(lane) => lane.absorb(event),
            None => {
                self.lanes
                    .insert(event.lane().clone(), LaneState::from_event(event));
            }
        }
        Ok(())
    }

    /// Joins two states of the same job.
    pub fn merge(&mut self, other: JobState) -> Result<(), JobMismatch> {
        if (&self.source, self.run_date) != (&other.source, other.run_date) {
            return Err(JobMismatch {
                ours: self.job_id(),
                theirs: other.job_id(),
            });
        }
        for (lane, state) in other.lanes {
            match self.lanes.get_mut(&lane) {
                Some(mine) => mine.merge(state),
                None => {
                    self.lanes.insert(lane, state);
                }
            }
        }
        Ok(())
    }

    pub fn job_id(&self) -> String {
        job_id(&self.source, self.run_date)
    }

    pub fn source(&self) -> &Name {
        &self.source
    }

    pub fn run_date(&self) -> RunDate {
        self.run_date
    }

    /// Distinct events folded in.
    pub fn event_count(&self) -> usize {
        self.lanes.values().map(|l| l.events.len()).sum()
    }

    /// A digest of the whole state: equal states have equal revisions. Stored with the rollup and
    /// used as its optimistic-concurrency version (a pure function of the events, unlike a counter).
    pub fn revision(&self) -> String {
        let mut digest = Digest::default();
        for (lane, state) in &self.lanes {
            digest.printed(lane);
            for key in &state.events {
                digest.printed(format_args!("{}#{}", key.at, key.status));
            }
            digest.field(state.latest.error_summary.as_deref().unwrap_or("\u{0}"));
            digest.field(state.latest.file_fingerprint.as_deref().unwrap_or("\u{0}"));
            if let Some(f) = &state.last_failure {
                digest.printed(f.at);
                digest.field(f.error_summary.as_deref().unwrap_or("\u{0}"));
                digest.field(f.error_details.as_deref().unwrap_or("\u{0}"));
            }
            digest.field("\u{1e}");
        }
        format!("{:016x}", digest.hasher.digest())
    }

    /// Rebuilds the state stored in a rollup item (inverse of [`JobRollup::from_state`]).
    pub fn from_rollup(rollup: &JobRollup) -> Result<Self, EventError> {
        let mut lanes = BTreeMap::new();
        for (name, stage) in &rollup.stages {
            let lane = Lane::parse(name)?;
            let events = stage
                .events
                .iter()
                .map(|sk| EventKey::parse_sk(sk, lane.stage.as_str()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            let key = *events.last().ok_or_else(|| EventError::MalformedKey {
                field: "stages.events",
                value: name.clone(),
                reason: "a stage with no events",
            })?;
            let state = LaneState {
                events,
                latest: Latest {
                    key,
                    error_summary: stage.error_summary.clone(),
                    file_fingerprint: stage.file_fingerprint.clone(),
                },
                last_failure: stage.last_failure.clone(),
            };
            lanes.insert(lane, state);
        }
        Ok(Self {
            source: rollup.source.clone(),
            run_date: rollup.run_date,
            lanes,
        })
    }
}

/// The revision's digest: fields, each followed by a unit separator. Printed fields go through one
/// reused buffer, since a revision prints every event key of the job.
#[derive(Default)]
struct Digest {
    hasher: Xxh3,
    text: String,
}

impl Digest {
    fn field(&mut self, text: &str) {
        self.hasher.update(text.as_bytes());
        self.hasher.update(&[0x1f]);
    }

    fn printed(&mut self, value: impl fmt::Display) {
        self.text.clear();
        write!(self.text, "{value}").expect("writing to a String cannot fail");
        self.hasher.update(self.text.as_bytes());
        self.hasher.update(&[0x1f]);
    }
}

/// Job-level status of a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
        }
    }
}

/// One entry of the rollup's `stages` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRollup {
    pub category: Option<Name>,
    pub stage: Name,
    /// The latest status by timestamp (ties: terminal beats RUNNING, FAILED beats DONE).
    pub status: Status,
    /// Start of the current attempt (the latest RUNNING event).
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_seconds: Option<i64>,
    pub attempts: u32,
    pub error_summary: Option<String>,
    pub file_fingerprint: Option<String>,
    /// The `sk`s of the events folded in: what makes redelivery a no-op.
    pub events: Vec<String>,
    pub last_failure: Option<LastFailure>,
}

/// The `job-rollups` item: one per job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRollup {
    pub job_id: String,
    pub source: Name,
    pub run_date: RunDate,
    pub status: JobStatus,
    pub stages: BTreeMap<String, StageRollup>,
    pub started_at: Option<Timestamp>,
    /// NULL until the job is terminal.
    pub finished_at: Option<Timestamp>,
    pub duration_seconds: Option<i64>,
    pub last_event_at: Timestamp,
    pub event_count: u64,
    /// Event time of the newest event folded in. Wall-clock write time is deliberately not stored:
    /// the contract makes the item a pure function of the event set.
    pub updated_at: Timestamp,
    /// Digest of the folded state; the optimistic-concurrency version.
    pub revision: String,
}

impl JobRollup {
    /// Derives the rollup. `expected_stages` (from the SLA rules of the job's source) decides when
    /// a job without a job-level SUCCEEDED record counts as SUCCEEDED.
    pub fn from_state(state: &JobState, expected_stages: &[Name]) -> Self {
        let stages: BTreeMap<String, StageRollup> = state
            .lanes
            .iter()
            .map(|(lane, s)| (lane.to_string(), stage_rollup(lane, s)))
            .collect();

        let all_keys = state.lanes.values().flat_map(|l| l.events.iter());
        let started_at = all_keys.clone().map(|k| k.at).min();
        let last_event_at = all_keys
            .map(|k| k.at)
            .max()
            .expect("a job state holds at least one event");

        let (status, finished_at) = job_status(state, expected_stages);
        let duration_seconds = match (started_at, finished_at) {
            (Some(start), Some(end)) => Some(end.seconds_since(start)),
            _ => None,
        };
        Self {
            job_id: state.job_id(),
            source: state.source.clone(),
            run_date: state.run_date,
            status,
            stages,
            started_at,
            finished_at,
            duration_seconds,
            last_event_at,
            event_count: state.event_count() as u64,
            updated_at: last_event_at,
            revision: state.revision(),
        }
    }
}

fn stage_rollup(lane: &Lane, s: &LaneState) -> StageRollup {
    let status = s.latest.key.status;
    let started_at = s
        .events
        .iter()
        .rev()
        .find(|k| k.status == Status::Running)
        .map(|k| k.at);
    let finished_at = status.is_terminal().then_some(s.latest.key.at);
    let duration_seconds = match (started_at, finished_at) {
        (Some(start), Some(end)) => Some(end.seconds_since(start)),
        _ => None,
    };
    // Each attempt logs one RUNNING and at most one terminal event; writers that log only
    // terminal events still count one attempt per event.
    let running = s.count(|st| st == Status::Running);
    let terminal = s.events.len() - running;
    StageRollup {
        category: lane.category.clone(),
        stage: lane.stage.clone(),
        status,
        started_at,
        finished_at,
        duration_seconds,
        attempts: running.max(terminal) as u32,
        error_summary: s.latest.error_summary.clone(),
        file_fingerprint: s.latest.file_fingerprint.clone(),
        events: s.events.iter().map(|k| k.sk()).collect(),
        last_failure: s.last_failure.clone(),
    }
}

/// The contract's job status rules, and when the job became terminal.
fn job_status(state: &JobState, expected_stages: &[Name]) -> (JobStatus, Option<Timestamp>) {
    let latest_of = |wanted: &dyn Fn(&Lane, Status) -> bool| {
        state
            .lanes
            .iter()
            .filter(|(lane, s)| wanted(lane, s.latest.key.status))
            .map(|(_, s)| s.latest.key.at)
            .max()
    };
    if let Some(at) = latest_of(&|_, status| status == Status::Failed) {
        return (JobStatus::Failed, Some(at));
    }
    if let Some(at) = latest_of(&|lane, status| lane.is_job_level() && status == Status::Succeeded)
    {
        return (JobStatus::Succeeded, Some(at));
    }
    if !expected_stages.is_empty() {
        let mut finished = None;
        for expected in expected_stages {
            let lanes: Vec<_> = state
                .lanes
                .iter()
                .filter(|(lane, _)| &lane.stage == expected)
                .collect();
            let all_done = !lanes.is_empty()
                && lanes
                    .iter()
                    .all(|(_, s)| s.latest.key.status == Status::Done);
            if !all_done {
                return (JobStatus::Running, None);
            }
            finished = lanes
                .iter()
                .map(|(_, s)| s.latest.key.at)
                .chain(finished)
                .max();
        }
        return (JobStatus::Succeeded, finished);
    }
    (JobStatus::Running, None)
}

/// State of a failed-jobs entry in the retry queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryState {
    Pending,
    Resolved,
    Exhausted,
}

/// How failed stages are retried. Part of the SLA rules file (`[retry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failures after which an entry is EXHAUSTED (no more retries, one JOB_FAILED alert).
    pub max_retries: u32,
    /// Wait before the first retry; doubled after each further failure.
    pub backoff_base_seconds: i64,
    /// Longest wait between retries.
    pub backoff_max_seconds: i64,
    /// How long an entry stays after its last failure (DynamoDB TTL).
    pub entry_ttl_seconds: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff_base_seconds: 15 * 60,
            backoff_max_seconds: 6 * 3600,
            entry_ttl_seconds: 30 * 86_400,
        }
    }
}

impl RetryPolicy {
    /// Wait after the `failure_count`-th failure: base, 2×base, 4×base… capped.
    pub fn backoff_seconds(&self, failure_count: u32) -> i64 {
        let doublings = failure_count.saturating_sub(1).min(32);
        self.backoff_base_seconds
            .saturating_mul(1_i64 << doublings)
            .min(self.backoff_max_seconds)
    }
}

/// The `failed-jobs` item: one per failed lane of a job (key: the lane's event-log `pk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedJob {
    pub pk: String,
    pub job_id: String,
    pub source: Name,
    pub category: Option<Name>,
    pub stage: Name,
    pub run_date: RunDate,
    pub failed_at: Timestamp,
    pub error_summary: Option<String>,
    pub error_details: Option<String>,
    pub failure_count: u32,
    pub retry_state: RetryState,
    /// Only on PENDING entries with no retry under way, so the `pending-by-due` index stays sparse
    /// and holds exactly the entries waiting for a resubmission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Timestamp>,
    pub ttl: i64,
    /// Events of the lane folded in; a writer never replaces an entry derived from more events.
    pub events_seen: u64,
}

impl FailedJob {
    /// The retry-queue entries of a job: one for each lane that has ever failed.
    pub fn derive_all(state: &JobState, policy: &RetryPolicy) -> Vec<FailedJob> {
        state
            .lanes
            .iter()
            .filter_map(|(lane, s)| {
                let failure = s.last_failure.as_ref()?;
                let failure_count = s.count(|st| st == Status::Failed) as u32;
                let retry_state = if s.latest.key.status.is_success() {
                    RetryState::Resolved
                } else if failure_count >= policy.max_retries {
                    RetryState::Exhausted
                } else {
                    RetryState::Pending
                };
                // A RUNNING event after the latest failure means a retry is under way: the entry
                // stays PENDING but leaves the due index until that retry fails or succeeds.
                let retry_under_way =
                    s.latest.key.status == Status::Running && s.latest.key.at > failure.at;
                let next_retry_at =
                    (retry_state == RetryState::Pending && !retry_under_way).then(|| {
                        failure
                            .at
                            .plus_seconds(policy.backoff_seconds(failure_count))
                    });
                Some(FailedJob {
                    pk: lane.event_pk(&state.source, state.run_date),
                    job_id: state.job_id(),
                    source: state.source.clone(),
                    category: lane.category.clone(),
                    stage: lane.stage.clone(),
                    run_date: state.run_date,
                    failed_at: failure.at,
                    error_summary: failure.error_summary.clone(),
                    error_details: failure.error_details.clone(),
                    failure_count,
                    retry_state,
                    next_retry_at,
                    ttl: failure.at.epoch_seconds() + policy.entry_ttl_seconds,
                    events_seen: s.events.len() as u64,
                })
            })
            .collect()
    }
}

/// Folds events into one state per job, keyed by `job_id`.
pub fn fold_by_job<'a>(
    events: impl IntoIterator<Item = &'a StageEvent>,
) -> BTreeMap<String, JobState> {
    let mut jobs: BTreeMap<String, JobState> = BTreeMap::new();
    for event in events {
        let id = event.job_id();
        match jobs.get_mut(&id) {
            Some(state) => state
                .apply(event)
                .expect("events grouped by their own job_id belong to that job"),
            None => {
                jobs.insert(id, JobState::from_event(event));
            }
        }
    }
    jobs
}
