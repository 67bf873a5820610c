//! SLA rules (configuration) and their evaluation: a pure function of (rollup, rules, now).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{Days, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::event::{job_id, Lane};
use crate::rollup::{FailedJob, JobRollup, JobStatus, RetryPolicy, RetryState};
use crate::values::{Name, RunDate, Timestamp};

/// The rules shipped with pipetel (`model/sla-rules.toml`); deployments override them whole.
pub const DEFAULT_RULES_TOML: &str = include_str!("../sla-rules.toml");

/// Kind of SLA breach, as in the alert message's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    StageDuration,
    JobDuration,
    DeadlineMissed,
    JobNotStarted,
    JobFailed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::StageDuration => "STAGE_DURATION",
            AlertKind::JobDuration => "JOB_DURATION",
            AlertKind::DeadlineMissed => "DEADLINE_MISSED",
            AlertKind::JobNotStarted => "JOB_NOT_STARTED",
            AlertKind::JobFailed => "JOB_FAILED",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// A threshold or an observation: a duration in seconds, an instant, or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Measure {
    Seconds(i64),
    At(Timestamp),
    Count(u32),
}

/// When a job must have succeeded: a UTC time of day, `days_after` days after its run date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: NaiveTime,
    pub days_after: u32,
}

impl Deadline {
    pub fn on(self, run_date: RunDate) -> Timestamp {
        let day = run_date
            .date()
            .checked_add_days(Days::new(u64::from(self.days_after)))
            .unwrap_or(run_date.date());
        Timestamp::from_datetime(Utc.from_utc_datetime(&day.and_time(self.at)))
    }
}

/// The rules that apply to one source (defaults with its overrides applied).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRules {
    pub expected_stages: Vec<Name>,
    pub max_stage_duration: BTreeMap<Name, i64>,
    pub max_job_duration: Option<i64>,
    pub deadline: Option<Deadline>,
}

/// All SLA and retry configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaRules {
    defaults: SourceRules,
    sources: BTreeMap<Name, SourceRules>,
    expected: Vec<Name>,
    retry: RetryPolicy,
    severities: BTreeMap<AlertKind, Severity>,
}

impl Default for SlaRules {
    /// No SLA at all: nothing expected, nothing breaches, default retry policy.
    fn default() -> Self {
        Self {
            defaults: SourceRules::default(),
            sources: BTreeMap::new(),
            expected: Vec::new(),
            retry: RetryPolicy::default(),
            severities: BTreeMap::new(),
        }
    }
}

impl SlaRules {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawRules = toml::from_str(text)?;
        raw.validate()
    }

    pub fn for_source(&self, source: &Name) -> &SourceRules {
        self.sources.get(source).unwrap_or(&self.defaults)
    }

    /// Sources that must run every day (for JOB_NOT_STARTED).
    pub fn expected_sources(&self) -> &[Name] {
        &self.expected
    }

    /// The largest `days_after` of any deadline: how many days after its run date a job can
    /// still be on time (the sweeper watches run dates this far back, plus one).
    pub fn max_deadline_days(&self) -> u32 {
        std::iter::once(&self.defaults)
            .chain(self.sources.values())
            .filter_map(|r| r.deadline.map(|d| d.days_after))
            .max()
            .unwrap_or(0)
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn severity(&self, kind: AlertKind) -> Severity {
        self.severities.get(&kind).copied().unwrap_or(match kind {
            AlertKind::StageDuration | AlertKind::JobDuration => Severity::Warning,
            _ => Severity::Critical,
        })
    }

    /// Duration and deadline breaches of one job at `now`. Only a RUNNING job is measured against
    /// `now`; a terminal job is judged on its recorded times, so the result never shrinks as `now` grows.
    pub fn evaluate(&self, rollup: &JobRollup, now: Timestamp) -> Vec<Breach> {
        let rules = self.for_source(&rollup.source);
        let open = rollup.status == JobStatus::Running;
        let elapsed = |start: Option<Timestamp>, end: Option<Timestamp>| match (start, end) {
            (Some(start), Some(end)) => Some(end.seconds_since(start)),
            (Some(start), None) if open => Some(now.seconds_since(start)),
            _ => None,
        };
        let mut breaches = Vec::new();

        for (lane_name, stage) in &rollup.stages {
            let Some(&max) = rules.max_stage_duration.get(&stage.stage) else {
                continue;
            };
            let Some(observed) = elapsed(stage.started_at, stage.finished_at) else {
                continue;
            };
            if observed > max {
                breaches.push(self.breach(
                    rollup,
                    AlertKind::StageDuration,
                    format!("STAGE_DURATION:{}", lane_name.replace('#', "/")),
                    Lane::parse(lane_name).ok(),
                    Measure::Seconds(max),
                    Measure::Seconds(observed),
                ));
            }
        }

        if let Some(max) = rules.max_job_duration {
            if let Some(observed) = elapsed(rollup.started_at, rollup.finished_at) {
                if observed > max {
                    breaches.push(self.breach(
                        rollup,
                        AlertKind::JobDuration,
                        "JOB_DURATION".into(),
                        None,
                        Measure::Seconds(max),
                        Measure::Seconds(observed),
                    ));
                }
            }
        }

        if let Some(deadline) = rules.deadline {
            let due = deadline.on(rollup.run_date);
            let late = match (rollup.status, rollup.finished_at) {
                (JobStatus::Succeeded, Some(done)) => (done > due).then_some(done),
                _ => (now > due).then_some(now),
            };
            if let Some(observed) = late {
                breaches.push(self.breach(
                    rollup,
                    AlertKind::DeadlineMissed,
                    "DEADLINE_MISSED".into(),
                    None,
                    Measure::At(due),
                    Measure::At(observed),
                ));
            }
        }
        breaches
    }

    /// A JOB_FAILED breach for each retry-queue entry that ran out of retries.
    pub fn exhausted(&self, entries: &[FailedJob]) -> Vec<Breach> {
        entries
            .iter()
            .filter(|e| e.retry_state == RetryState::Exhausted)
            .map(|e| {
                let lane = Lane {
                    category: e.category.clone(),
                    stage: e.stage.clone(),
                };
                Breach {
                    kind: AlertKind::JobFailed,
                    rule: format!("JOB_FAILED:{}", lane.to_string().replace('#', "/")),
                    job_id: e.job_id.clone(),
                    source: e.source.clone(),
                    category: e.category.clone(),
                    stage: Some(e.stage.clone()),
                    run_date: e.run_date,
                    threshold: Measure::Count(self.retry.max_retries),
                    observed: Measure::Count(e.failure_count),
                    severity: self.severity(AlertKind::JobFailed),
                }
            })
            .collect()
    }

    /// JOB_NOT_STARTED for an expected `source` that has no job on `run_date`, once its deadline
    /// has passed. The caller establishes that no job exists.
    pub fn not_started(&self, source: &Name, run_date: RunDate, now: Timestamp) -> Option<Breach> {
        if !self.expected.contains(source) {
            return None;
        }
        let due = self.for_source(source).deadline?.on(run_date);
        (now > due).then(|| Breach {
            kind: AlertKind::JobNotStarted,
            rule: "JOB_NOT_STARTED".into(),
            job_id: job_id(source, run_date),
            source: source.clone(),
            category: None,
            stage: None,
            run_date,
            threshold: Measure::At(due),
            observed: Measure::At(now),
            severity: self.severity(AlertKind::JobNotStarted),
        })
    }

    fn breach(
        &self,
        rollup: &JobRollup,
        kind: AlertKind,
        rule: String,
        lane: Option<Lane>,
        threshold: Measure,
        observed: Measure,
    ) -> Breach {
        let (category, stage) = match lane {
            Some(lane) => (lane.category, Some(lane.stage)),
            None => (None, None),
        };
        Breach {
            kind,
            rule,
            job_id: rollup.job_id.clone(),
            source: rollup.source.clone(),
            category,
            stage,
            run_date: rollup.run_date,
            threshold,
            observed,
            severity: self.severity(kind),
        }
    }
}

/// One SLA breach of one job. Its `alert_id` is deterministic, so the alert ledger can make
/// redelivery, replay and the scheduled sweep converge on one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub kind: AlertKind,
    /// What was breached, unique within the job (e.g. `STAGE_DURATION:extract`).
    pub rule: String,
    pub job_id: String,
    pub source: Name,
    pub category: Option<Name>,
    pub stage: Option<Name>,
    pub run_date: RunDate,
    pub threshold: Measure,
    pub observed: Measure,
    pub severity: Severity,
}

impl Breach {
    /// `{job_id}#{rule}`.
    pub fn alert_id(&self) -> String {
        format!("{}#{}", self.job_id, self.rule)
    }

    pub fn message(&self, detected_at: Timestamp) -> AlertMessage {
        AlertMessage {
            alert_id: self.alert_id(),
            kind: self.kind,
            job_id: self.job_id.clone(),
            source: self.source.clone(),
            category: self.category.clone(),
            stage: self.stage.clone(),
            run_date: self.run_date,
            threshold: self.threshold,
            observed: self.observed,
            detected_at,
            severity: self.severity,
            state: AlertState::Breached,
            resolved_at: None,
        }
    }
}

/// Whether an alert message announces a breach or its resolution (body field and SNS message
/// attribute `state`, so subscribers can filter).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertState {
    #[default]
    Breached,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Breached => "BREACHED",
            AlertState::Resolved => "RESOLVED",
        }
    }
}

/// The SNS message body (JSON) of an alert: the contract's fields, plus `state` (and
/// `resolved_at` on a resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub alert_id: String,
    pub kind: AlertKind,
    pub job_id: String,
    pub source: Name,
    pub category: Option<Name>,
    pub stage: Option<Name>,
    pub run_date: RunDate,
    pub threshold: Measure,
    pub observed: Measure,
    pub detected_at: Timestamp,
    pub severity: Severity,
    /// BREACHED, or RESOLVED on the resolution of an earlier alert (same `alert_id` and `kind`).
    /// Bodies stored before this field existed read as BREACHED.
    #[serde(default)]
    pub state: AlertState,
    /// Set on resolutions only: when the breach was found to be over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
}

impl AlertMessage {
    /// The resolution of this alert: the same body, `state` RESOLVED and `resolved_at`.
    pub fn resolution(&self, resolved_at: Timestamp) -> AlertMessage {
        AlertMessage {
            state: AlertState::Resolved,
            resolved_at: Some(resolved_at),
            ..self.clone()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    expected: Vec<String>,
    #[serde(default)]
    defaults: RawSourceRules,
    #[serde(default)]
    sources: BTreeMap<String, RawSourceRules>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    severity: BTreeMap<AlertKind, Severity>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSourceRules {
    expected_stages: Option<Vec<String>>,
    #[serde(default)]
    max_stage_duration: BTreeMap<String, String>,
    max_job_duration: Option<String>,
    deadline: Option<RawDeadline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadline {
    /// `HH:MM` UTC.
    at: String,
    #[serde(default)]
    days_after: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_retries: Option<u32>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    entry_ttl: Option<String>,
}

impl RawRules {
    fn validate(self) -> Result<SlaRules, ConfigError> {
        let defaults = self.defaults.resolve("defaults", &SourceRules::default())?;
        let mut sources = BTreeMap::new();
        for (name, raw) in self.sources {
            let path = format!("sources.{name}");
            let source = name_at(&path, &name)?;
            sources.insert(source, raw.resolve(&path, &defaults)?);
        }
        let expected = self
            .expected
            .iter()
            .map(|s| name_at("expected", s))
            .collect::<Result<Vec<_>, _>>()?;
        for source in &expected {
            let rules = sources.get(source).unwrap_or(&defaults);
            if rules.deadline.is_none() {
                return Err(ConfigError::Invalid {
                    path: format!("expected.{source}"),
                    reason: "an expected source needs a deadline (in [defaults] or its own section) to tell when it has not started".into(),
                });
            }
        }
        let base = RetryPolicy::default();
        let retry = RetryPolicy {
            max_retries: self.retry.max_retries.unwrap_or(base.max_retries).max(1),
            backoff_base_seconds: opt_seconds("retry.backoff_base", self.retry.backoff_base)?
                .unwrap_or(base.backoff_base_seconds),
            backoff_max_seconds: opt_seconds("retry.backoff_max", self.retry.backoff_max)?
                .unwrap_or(base.backoff_max_seconds),
            entry_ttl_seconds: opt_seconds("retry.entry_ttl", self.retry.entry_ttl)?
                .unwrap_or(base.entry_ttl_seconds),
        };
        Ok(SlaRules {
            defaults,
            sources,
            expected,
            retry,
            severities: self.severity,
        })
    }
}

impl RawSourceRules {
    /// Applies these settings over `base`; per-stage durations merge stage by stage.
    fn resolve(self, path: &str, base: &SourceRules) -> Result<SourceRules, ConfigError> {
        let mut rules = base.clone();
        if let Some(stages) = self.expected_stages {
            rules.expected_stages = stages
                .iter()
                .map(|s| name_at(&format!("{path}.expected_stages"), s))
                .collect::<Result<_, _>>()?;
        }
        for (stage, value) in self.max_stage_duration {
            let at = format!("{path}.max_stage_duration.{stage}");
            rules
                .max_stage_duration
                .insert(name_at(&at, &stage)?, seconds(&at, &value)?);
        }
        if let Some(value) = self.max_job_duration {
            rules.max_job_duration = Some(seconds(&format!("{path}.max_job_duration"), &value)?);
        }
        if let Some(deadline) = self.deadline {
            let at = NaiveTime::parse_from_str(&deadline.at, "%H:%M").map_err(|_| {
                ConfigError::Invalid {
                    path: format!("{path}.deadline.at"),
                    reason: format!("{:?} is not a UTC time of day HH:MM", deadline.at),
                }
            })?;
            rules.deadline = Some(Deadline {
                at,
                days_after: deadline.days_after,
            });
        }
        Ok(rules)
    }
}

fn name_at(path: &str, value: &str) -> Result<Name, ConfigError> {
    Name::parse("name", value).map_err(|source| ConfigError::Name {
        path: path.to_owned(),
        source,
    })
}

fn seconds(path: &str, value: &str) -> Result<i64, ConfigError> {
    let duration = humantime::parse_duration(value).map_err(|source| ConfigError::Duration {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })?;
    let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    if secs == 0 {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            reason: "must be at least one second".into(),
        });
    }
    Ok(secs)
}

fn opt_seconds(path: &str, value: Option<String>) -> Result<Option<i64>, ConfigError> {
    value.map(|v| seconds(path, &v)).transpose()
}
