//! The scheduled SLA sweep as a pure decision: given the rules, `now`, the rollups of the run dates
//! under watch and the alert ledger of those dates, which breaches to raise and which alerts to
//! resolve.
//!
//! A table stream only fires when something is written, so a job that hangs, or never starts, is
//! caught here. The sweep raises through the same ledger as the stream processor (same `alert_id`),
//! so the two never alert twice for one breach.
//!
//! Resolution rules (an alert is resolved at most once, only after it was published):
//! - `JOB_NOT_STARTED`: the job now exists (it started).
//! - `STAGE_DURATION`: the stage's latest status is terminal (DONE or FAILED).
//! - `JOB_DURATION`: the job is terminal (SUCCEEDED or FAILED).
//! - `DEADLINE_MISSED`: the job SUCCEEDED.
//! - `JOB_FAILED`: the exhausted stage later succeeded (a manual re-run).
//!
//! A duration or deadline alert measured on an already finished stage or job (its `observed` is
//! the final recorded value) is final: there is nothing that "later completes", so no resolution
//! is sent for it.

use std::collections::BTreeMap;

use chrono::Days;

use crate::event::{job_id, Lane};
use crate::rollup::{JobRollup, JobStatus};
use crate::sla::{AlertKind, AlertMessage, AlertState, Breach, SlaRules};
use crate::values::{RunDate, Timestamp};

/// Where an alert stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    /// Claimed for publishing at `at`, not yet confirmed published.
    Claimed {
        at: Timestamp,
    },
    Published,
    /// Its resolution is being published (claimed at `at`).
    Resolving {
        at: Timestamp,
    },
    Resolved,
}

/// One alert of the ledger, with the body it was published with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAlert {
    pub message: AlertMessage,
    pub state: LedgerState,
}

/// What one sweep must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPlan {
    /// Breaches not in the ledger yet (or whose claim was abandoned).
    pub raise: Vec<Breach>,
    /// Resolution messages of published alerts whose breach is over.
    pub resolve: Vec<AlertMessage>,
}

/// The run dates a sweep at `now` watches, newest first: today back to the largest deadline's
/// `days_after` plus one day, so a deadline (and the JOB_NOT_STARTED it implies) is always seen
/// at least one full day after it passed.
pub fn watched_run_dates(rules: &SlaRules, now: Timestamp) -> Vec<RunDate> {
    let today = now.datetime().date_naive();
    (0..=u64::from(rules.max_deadline_days()) + 1)
        .filter_map(|back| today.checked_sub_days(Days::new(back)))
        .map(RunDate::from_date)
        .collect()
}

/// The sweep decision. `rollups` and `ledger` are those of `run_dates`; a claim older than
/// `claim_lease_seconds` belongs to a publisher that died and is raised (or resolved) again.
pub fn plan_sweep(
    rules: &SlaRules,
    now: Timestamp,
    run_dates: &[RunDate],
    rollups: &[JobRollup],
    ledger: &[LedgerAlert],
    claim_lease_seconds: i64,
) -> SweepPlan {
    let known: BTreeMap<&str, &LedgerAlert> = ledger
        .iter()
        .map(|a| (a.message.alert_id.as_str(), a))
        .collect();
    let jobs: BTreeMap<&str, &JobRollup> = rollups.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let abandoned = |at: Timestamp| now.seconds_since(at) > claim_lease_seconds;

    let mut plan = SweepPlan::default();
    let mut consider = |breach: Breach| {
        let fresh = match known.get(breach.alert_id().as_str()) {
            None => true,
            Some(alert) => matches!(alert.state, LedgerState::Claimed { at } if abandoned(at)),
        };
        if fresh {
            plan.raise.push(breach);
        }
    };
    for rollup in rollups {
        rules
            .evaluate(rollup, now)
            .into_iter()
            .for_each(&mut consider);
    }
    for &run_date in run_dates {
        for source in rules.expected_sources() {
            if jobs.contains_key(job_id(source, run_date).as_str()) {
                continue;
            }
            if let Some(breach) = rules.not_started(source, run_date, now) {
                consider(breach);
            }
        }
    }

    for alert in ledger {
        let due = match alert.state {
            LedgerState::Published => true,
            LedgerState::Resolving { at } => abandoned(at),
            LedgerState::Claimed { .. } | LedgerState::Resolved => false,
        };
        let message = &alert.message;
        if due
            && message.state == AlertState::Breached
            && is_over(
                rules,
                now,
                message,
                jobs.get(message.job_id.as_str()).copied(),
            )
        {
            plan.resolve.push(message.resolution(now));
        }
    }
    plan
}

/// Whether the breach `alert` announced has ended, and ended after it was announced.
fn is_over(
    rules: &SlaRules,
    now: Timestamp,
    alert: &AlertMessage,
    rollup: Option<&JobRollup>,
) -> bool {
    let Some(rollup) = rollup else {
        return false;
    };
    let lane_status = || {
        let lane = Lane {
            category: alert.category.clone(),
            stage: alert.stage.clone()?,
        };
        rollup.stages.get(&lane.to_string()).map(|s| s.status)
    };
    let ended = match alert.kind {
        AlertKind::JobNotStarted => return true,
        AlertKind::JobFailed => return lane_status().is_some_and(|s| s.is_success()),
        AlertKind::StageDuration => lane_status().is_some_and(|s| s.is_terminal()),
        AlertKind::JobDuration => rollup.status != JobStatus::Running,
        AlertKind::DeadlineMissed => rollup.status == JobStatus::Succeeded,
    };
    // Measured on the final record (e.g. a stage that was slow, reported when it finished):
    // the breach is a fact, not an ongoing condition.
    let measured_final = rules
        .evaluate(rollup, now)
        .iter()
        .any(|b| b.alert_id() == alert.alert_id && b.observed == alert.observed);
    ended && !measured_final
}
