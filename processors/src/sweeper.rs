//! The SLA sweeper: catches what the stream cannot see (a job that hangs or never starts writes
//! nothing), and resolves alerts whose breach is over.
//!
//! Per run: for each watched run date ([`watched_run_dates`]) one Query on `job-rollups/by-run-date`
//! and one on `sla-alerts/by-run-date` (never a Scan of the event log), then the pure decision
//! [`plan_sweep`], then the breaches are raised through the same ledger as the stream processor
//! (so one breach is alerted once, whoever finds it first) and the resolutions published.

use std::fmt;

use aws_config::SdkConfig;
use pipetel_model::{plan_sweep, watched_run_dates, AlertMessage, RunDate, SlaRules, Timestamp};
use serde::Serialize;

use crate::adapters::{DynamoProjectionStore, SnsAlertSink, CLAIM_LEASE_SECONDS};
use crate::ports::{AlertError, AlertLedger, AlertSink, RollupsByDate, StoreError};
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alert(#[from] AlertError),
}

/// What one sweep found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub now: Timestamp,
    pub dry_run: bool,
    pub run_dates: Vec<RunDate>,
    pub jobs: usize,
    pub ledger_alerts: usize,
    /// Breaches not alerted yet (messages as they are, or would be, published).
    pub breaches: Vec<AlertMessage>,
    /// Resolutions of published alerts whose breach is over.
    pub resolutions: Vec<AlertMessage>,
    pub published: usize,
    /// Raised meanwhile by the stream processor or a concurrent sweep.
    pub already_published: usize,
    pub resolutions_published: usize,
    pub resolutions_already_published: usize,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dates: Vec<String> = self.run_dates.iter().map(|d| d.to_string()).collect();
        writeln!(
            f,
            "sweep at {}{}: run dates {}, {} jobs, {} alerts in the ledger",
            self.now,
            if self.dry_run { " (dry run)" } else { "" },
            dates.join(" "),
            self.jobs,
            self.ledger_alerts
        )?;
        for m in &self.breaches {
            writeln!(
                f,
                "  BREACHED [{}] {} {}",
                m.severity.as_str(),
                m.kind,
                m.alert_id
            )?;
        }
        for m in &self.resolutions {
            writeln!(
                f,
                "  RESOLVED [{}] {} {}",
                m.severity.as_str(),
                m.kind,
                m.alert_id
            )?;
        }
        write!(
            f,
            "  published {} alerts ({} already), {} resolutions ({} already)",
            self.published,
            self.already_published,
            self.resolutions_published,
            self.resolutions_already_published
        )
    }
}

pub struct Sweeper<R, A> {
    rollups: R,
    alerts: A,
    rules: SlaRules,
}

impl Sweeper<DynamoProjectionStore, SnsAlertSink> {
    /// The sweeper on the deployment's tables and topic (what the Lambda and `pipetel sweep` run).
    pub fn aws(config: &SdkConfig, settings: Settings) -> Self {
        let (store, alerts) = crate::adapters::deployed(config, &settings);
        Self::new(store, alerts, settings.rules)
    }
}

impl<R: RollupsByDate, A: AlertSink + AlertLedger> Sweeper<R, A> {
    pub fn new(rollups: R, alerts: A, rules: SlaRules) -> Self {
        Self {
            rollups,
            alerts,
            rules,
        }
    }

    /// One sweep at `now`. `dry_run`: decide and report, publish and write nothing.
    pub async fn run(&self, now: Timestamp, dry_run: bool) -> Result<SweepReport, SweepError> {
        let run_dates = watched_run_dates(&self.rules, now);
        let mut rollups = Vec::new();
        let mut ledger = Vec::new();
        for &run_date in &run_dates {
            rollups.extend(self.rollups.rollups_of(run_date).await?);
            ledger.extend(self.alerts.alerts_of(run_date).await?);
        }
        let plan = plan_sweep(
            &self.rules,
            now,
            &run_dates,
            &rollups,
            &ledger,
            CLAIM_LEASE_SECONDS,
        );
        let mut report = SweepReport {
            now,
            dry_run,
            run_dates,
            jobs: rollups.len(),
            ledger_alerts: ledger.len(),
            breaches: plan.raise.iter().map(|b| b.message(now)).collect(),
            resolutions: plan.resolve.clone(),
            published: 0,
            already_published: 0,
            resolutions_published: 0,
            resolutions_already_published: 0,
        };
        if dry_run {
            return Ok(report);
        }
        if !plan.raise.is_empty() {
            let raised = self.alerts.raise(&plan.raise, now).await?;
            report.published = raised.published;
            report.already_published = raised.already_published;
        }
        if !plan.resolve.is_empty() {
            let resolved = self.alerts.resolve(&plan.resolve).await?;
            report.resolutions_published = resolved.published;
            report.resolutions_already_published = resolved.already_published;
        }
        Ok(report)
    }
}
