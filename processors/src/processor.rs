//! The stream processor: one batch of decoded records in, projections and alerts out.
//!
//! Events are grouped per job; each job is read once, merged, written once (optimistic
//! concurrency on the rollup's revision), then its retry-queue entries and alerts follow. Jobs are
//! handled in the order of their first record, so when one fails, every record before that job's
//! first record is fully applied and Lambda can retry from there.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{self, StreamExt};
use pipetel_model::{
    write_job_id, FailedJob, JobMismatch, JobRollup, JobState, Lane, SlaRules, StageEvent,
    Timestamp,
};
use serde::Serialize;

use aws_config::SdkConfig;

use crate::adapters::{DynamoProjectionStore, SnsAlertSink};
use crate::decode::{error_chain, Change, DecodedRecord};
use crate::ports::{AlertError, AlertSink, ProjectionStore, StoreError};
use crate::settings::Settings;

/// Jobs of one batch projected at once.
pub const JOB_CONCURRENCY: usize = 16;
/// Re-read and re-merge attempts when a concurrent writer changed a rollup first.
pub const MAX_CONFLICT_RETRIES: usize = 10;

/// Why a job's projections could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alert(#[from] AlertError),
    #[error("stored rollup of {job_id} cannot be folded into")]
    StoredRollup {
        job_id: String,
        #[source]
        source: pipetel_model::EventError,
    },
    #[error(transparent)]
    Mismatch(#[from] JobMismatch),
    #[error("{job_id}: still conflicting after {MAX_CONFLICT_RETRIES} re-reads")]
    TooManyConflicts { job_id: String },
}

/// What one batch did: logged once per batch, and the basis of the Lambda response.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub records: usize,
    pub events: usize,
    pub removed: usize,
    pub malformed: usize,
    pub jobs: usize,
    pub rollup_writes: usize,
    pub rollups_unchanged: usize,
    pub conflicts: usize,
    pub failed_job_writes: usize,
    pub alerts_published: usize,
    pub alerts_already_published: usize,
    /// Sequence number of the first record not fully applied; Lambda retries from it.
    pub first_failed_sequence: Option<String>,
}

/// The events of one job within a batch.
struct JobBatch {
    job_id: String,
    first_sequence: String,
    state: JobState,
    lanes: BTreeSet<Lane>,
}

#[derive(Default)]
struct JobOutcome {
    rollup_written: bool,
    conflicts: usize,
    failed_job_writes: usize,
    published: usize,
    already_published: usize,
}

pub struct StreamProcessor<S, A> {
    store: S,
    alerts: A,
    rules: SlaRules,
}

impl StreamProcessor<DynamoProjectionStore, SnsAlertSink> {
    /// The processor on the deployment's tables and topic (what the Lambda and `pipetel consume`
    /// run).
    pub fn aws(config: &SdkConfig, settings: Settings) -> Self {
        let (store, alerts) = crate::adapters::deployed(config, &settings);
        Self::new(store, alerts, settings.rules)
    }
}

impl<S: ProjectionStore, A: AlertSink> StreamProcessor<S, A> {
    pub fn new(store: S, alerts: A, rules: SlaRules) -> Self {
        Self {
            store,
            alerts,
            rules,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn alerts(&self) -> &A {
        &self.alerts
    }

    /// Projects a batch. `wall_clock` stamps alerts; SLA time rules are judged at the stream's own
    /// clock (the newest record's write time), so a lagging or replayed stream decides as it would
    /// have live, and never alerts on a stage whose end is simply not read yet.
    pub async fn process(&self, records: Vec<DecodedRecord>, wall_clock: Timestamp) -> BatchReport {
        let mut report = BatchReport {
            records: records.len(),
            ..BatchReport::default()
        };
        let stream_clock = records
            .iter()
            .filter_map(|r| r.written_at)
            .max()
            .unwrap_or(wall_clock);
        let jobs = self.group(records, &mut report);
        report.jobs = jobs.len();
        if jobs.is_empty() {
            return report;
        }

        let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
        let mut stored = match self.store.get_rollups(&ids).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "reading rollups failed; retrying the batch");
                report.first_failed_sequence = Some(jobs[0].first_sequence.clone());
                return report;
            }
        };

        // After a failure no further job is started (its records are retried anyway), but jobs
        // already under way finish: dropping one mid-flight could strand a claimed alert.
        let stop = AtomicBool::new(false);
        let work = jobs.into_iter().map(|job| {
            let current = stored.remove(&job.job_id);
            let stop = &stop;
            async move {
                if stop.load(Ordering::Relaxed) {
                    return (job, None);
                }
                let result = self
                    .project_job(&job, current, stream_clock, wall_clock)
                    .await;
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                (job, Some(result))
            }
        });
        let outcomes: Vec<_> = stream::iter(work).buffered(JOB_CONCURRENCY).collect().await;
        for (job, result) in outcomes {
            match result {
                Some(Ok(outcome)) => {
                    report.rollup_writes += usize::from(outcome.rollup_written);
                    report.rollups_unchanged += usize::from(!outcome.rollup_written);
                    report.conflicts += outcome.conflicts;
                    report.failed_job_writes += outcome.failed_job_writes;
                    report.alerts_published += outcome.published;
                    report.alerts_already_published += outcome.already_published;
                }
                Some(Err(err)) => {
                    tracing::error!(
                        job_id = %job.job_id,
                        sequence_number = %job.first_sequence,
                        error = %error_chain(&err),
                        "projecting job failed; Lambda retries from its first record"
                    );
                    // Outcomes are in first-record order: the first failure is the earliest record.
                    report
                        .first_failed_sequence
                        .get_or_insert(job.first_sequence);
                }
                None => {}
            }
        }
        report
    }

    /// Groups events by job in order of first appearance; counts and logs what is set aside.
    fn group(&self, records: Vec<DecodedRecord>, report: &mut BatchReport) -> Vec<JobBatch> {
        let mut jobs: Vec<JobBatch> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        // The job id of each event is looked up in this buffer; only a new job's id is allocated.
        let mut job_id = String::new();
        for record in records {
            match record.change {
                Change::Event(event) => {
                    report.events += 1;
                    let sequence = record.sequence_number.unwrap_or_default();
                    job_id.clear();
                    write_job_id(&mut job_id, event.source(), event.run_date());
                    add_event(&mut jobs, &mut index, &job_id, &event, sequence);
                }
                Change::Removed => report.removed += 1,
                Change::Malformed(err) => {
                    report.malformed += 1;
                    tracing::warn!(
                        sequence_number = record.sequence_number.as_deref().unwrap_or("?"),
                        reason = %error_chain(&err),
                        "record set aside: it breaks the pipetel contract"
                    );
                }
            }
        }
        jobs
    }

    async fn project_job(
        &self,
        job: &JobBatch,
        mut stored: Option<JobRollup>,
        stream_clock: Timestamp,
        wall_clock: Timestamp,
    ) -> Result<JobOutcome, ProjectError> {
        let expected_stages = &self.rules.for_source(job.state.source()).expected_stages;
        let mut outcome = JobOutcome::default();
        let (state, rollup) = loop {
            let mut state = job.state.clone();
            if let Some(current) = &stored {
                let current_state = JobState::from_rollup(current).map_err(|source| {
                    ProjectError::StoredRollup {
                        job_id: job.job_id.clone(),
                        source,
                    }
                })?;
                state.merge(current_state)?;
            }
            let rollup = JobRollup::from_state(&state, expected_stages);
            if stored.as_ref() == Some(&rollup) {
                break (state, rollup);
            }
            let expected_revision = stored.as_ref().map(|r| r.revision.as_str());
            match self.store.put_rollup(&rollup, expected_revision).await {
                Ok(()) => {
                    outcome.rollup_written = true;
                    break (state, rollup);
                }
                Err(StoreError::Conflict { .. }) if outcome.conflicts < MAX_CONFLICT_RETRIES => {
                    outcome.conflicts += 1;
                    stored = self
                        .store
                        .get_rollups(std::slice::from_ref(&job.job_id))
                        .await?
                        .remove(&job.job_id);
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(ProjectError::TooManyConflicts {
                        job_id: job.job_id.clone(),
                    })
                }
                Err(err) => return Err(err.into()),
            }
        };

        // Entries of the lanes this batch touched; written even when the rollup was unchanged, so a
        // redelivery completes what an interrupted attempt began.
        let touched: BTreeSet<String> = job
            .lanes
            .iter()
            .map(|lane| lane.event_pk(state.source(), state.run_date()))
            .collect();
        let entries: Vec<FailedJob> = FailedJob::derive_all(&state, self.rules.retry())
            .into_iter()
            .filter(|e| touched.contains(&e.pk))
            .collect();
        for entry in &entries {
            self.store.put_failed_job(entry).await?;
            outcome.failed_job_writes += 1;
        }

        let mut breaches = self.rules.evaluate(&rollup, stream_clock);
        breaches.extend(self.rules.exhausted(&entries));
        if !breaches.is_empty() {
            let raised = self.alerts.raise(&breaches, wall_clock).await?;
            outcome.published = raised.published;
            outcome.already_published = raised.already_published;
        }
        Ok(outcome)
    }
}

fn add_event(
    jobs: &mut Vec<JobBatch>,
    index: &mut HashMap<String, usize>,
    job_id: &str,
    event: &StageEvent,
    sequence: String,
) {
    match index.get(job_id) {
        Some(&i) => {
            let job = &mut jobs[i];
            job.state
                .apply(event)
                .expect("events are grouped by their own job_id");
            if !job.lanes.contains(event.lane()) {
                job.lanes.insert(event.lane().clone());
            }
        }
        None => {
            index.insert(job_id.to_owned(), jobs.len());
            jobs.push(JobBatch {
                job_id: job_id.to_owned(),
                first_sequence: sequence,
                state: JobState::from_event(event),
                lanes: BTreeSet::from([event.lane().clone()]),
            });
        }
    }
}
