//! The retry dispatcher: drains the failed-jobs retry queue.
//!
//! Per run: one Query on `failed-jobs/pending-by-due` (`retry_state = PENDING AND next_retry_at <=
//! now`), the pure decision [`plan_retries`], then for each due entry: resubmit through the
//! [`RetryTarget`] under the entry's idempotent execution name, and record the dispatch on the
//! entry (conditioned on the entry being unchanged), pushing `next_retry_at` out by the backoff.
//!
//! `failure_count` is never touched here: it is the number of FAILED events of the lane, derived by
//! the stream processor, which also marks the entry EXHAUSTED after `max_retries` failures and
//! raises the one JOB_FAILED alert then. A resubmission that fails again logs a new FAILED event,
//! so the count, the backoff and the next execution name follow from the events.

use std::fmt;

use aws_config::SdkConfig;
use pipetel_model::{plan_retries, Name, RetryPolicy, RunDate, Timestamp};
use serde::Serialize;

use crate::adapters::{DynamoRetryQueue, StepFunctionsTarget};
use crate::decode::error_chain;
use crate::ports::{RetryQueue, RetryTarget, StoreError, Submitted};
use crate::settings::RetrySettings;

/// What happened to one due entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// Dry run: would be resubmitted.
    WouldSubmit,
    /// Resubmitted (or found already resubmitted under its name) and recorded on the entry.
    Submitted { submitted: Submitted },
    /// Resubmitted, but the entry changed meanwhile (a new event arrived): not recorded.
    SubmittedEntryChanged { submitted: Submitted },
    /// Not resubmitted: the entry stays due and is tried again on the next run.
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    pub pk: String,
    pub job_id: String,
    pub source: Name,
    pub category: Option<Name>,
    pub stage: Name,
    pub run_date: RunDate,
    pub failure_count: u32,
    pub execution_name: String,
    pub next_retry_at: Timestamp,
    pub outcome: Outcome,
}

/// What one dispatcher run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    pub now: Timestamp,
    pub dry_run: bool,
    pub dispatches: Vec<DispatchReport>,
}

impl RetryReport {
    pub fn failed(&self) -> usize {
        self.dispatches
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Failed { .. }))
            .count()
    }
}

impl fmt::Display for RetryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry at {}{}: {} due",
            self.now,
            if self.dry_run { " (dry run)" } else { "" },
            self.dispatches.len()
        )?;
        for d in &self.dispatches {
            let outcome = match &d.outcome {
                Outcome::WouldSubmit => "would resubmit".to_owned(),
                Outcome::Submitted {
                    submitted: Submitted::Started { run_id },
                } => {
                    format!("resubmitted {run_id}")
                }
                Outcome::Submitted {
                    submitted: Submitted::AlreadyStarted,
                } => "already resubmitted".to_owned(),
                Outcome::SubmittedEntryChanged { .. } => {
                    "resubmitted; entry changed meanwhile".to_owned()
                }
                Outcome::Failed { reason } => format!("FAILED: {reason}"),
            };
            write!(
                f,
                "\n  {} failures={} name={} next_retry_at={}: {outcome}",
                d.pk, d.failure_count, d.execution_name, d.next_retry_at
            )?;
        }
        Ok(())
    }
}

pub struct RetryDispatcher<Q, T> {
    queue: Q,
    target: T,
    policy: RetryPolicy,
}

impl RetryDispatcher<DynamoRetryQueue, StepFunctionsTarget> {
    /// The dispatcher on the deployment's failed-jobs table and state machines (what the Lambda
    /// and `pipetel retry` run).
    pub fn aws(config: &SdkConfig, settings: RetrySettings) -> Self {
        Self::new(
            DynamoRetryQueue::new(
                aws_sdk_dynamodb::Client::new(config),
                settings.failed_jobs_table,
            ),
            StepFunctionsTarget::new(aws_sdk_sfn::Client::new(config), settings.state_machines),
            settings.rules.retry().clone(),
        )
    }
}

impl<Q: RetryQueue, T: RetryTarget> RetryDispatcher<Q, T> {
    pub fn new(queue: Q, target: T, policy: RetryPolicy) -> Self {
        Self {
            queue,
            target,
            policy,
        }
    }

    /// One run at `now`. `dry_run`: list what would be resubmitted, resubmit and write nothing.
    /// Fails only if the queue cannot be read or written; a resubmission that fails is reported
    /// in its entry's outcome and retried on the next run.
    pub async fn run(&self, now: Timestamp, dry_run: bool) -> Result<RetryReport, StoreError> {
        let entries = self.queue.due(now).await?;
        let mut dispatches = Vec::new();
        for dispatch in plan_retries(&entries, &self.policy, now) {
            let outcome = if dry_run {
                Outcome::WouldSubmit
            } else {
                match self.target.submit(&dispatch).await {
                    Ok(submitted) => {
                        if self.queue.mark_dispatched(&dispatch, now).await? {
                            Outcome::Submitted { submitted }
                        } else {
                            Outcome::SubmittedEntryChanged { submitted }
                        }
                    }
                    Err(err) => {
                        let reason = error_chain(&err);
                        tracing::warn!(pk = %dispatch.entry.pk, %reason, "resubmission failed");
                        Outcome::Failed { reason }
                    }
                }
            };
            let entry = &dispatch.entry;
            dispatches.push(DispatchReport {
                pk: entry.pk.clone(),
                job_id: entry.job_id.clone(),
                source: entry.source.clone(),
                category: entry.category.clone(),
                stage: entry.stage.clone(),
                run_date: entry.run_date,
                failure_count: entry.failure_count,
                execution_name: dispatch.execution_name.clone(),
                next_retry_at: dispatch.next_retry_at,
                outcome,
            });
        }
        Ok(RetryReport {
            now,
            dry_run,
            dispatches,
        })
    }
}
