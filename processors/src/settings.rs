//! Configuration from the environment, and the AWS SDK configuration built once per process.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use pipetel_model::{ConfigError, SlaRules, DEFAULT_RULES_TOML};

use crate::tables::TableNames;

use crate::adapters::StateMachines;

/// Attempts per AWS request (throttling and transient errors are retried with backoff by the SDK).
pub const SDK_MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("cannot read SLA rules file {path}")]
    RulesFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rules(#[from] ConfigError),
    #[error("environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// What the stream processor and the sla-sweeper need to know about their deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rollups_table: String,
    pub failed_jobs_table: String,
    pub alerts_table: String,
    pub alert_topic_arn: String,
    pub rules: SlaRules,
}

impl Settings {
    /// The settings of a deployment whose tables are named as in the template (`pipetel` CLI).
    pub fn for_tables(tables: &TableNames, alert_topic_arn: String, rules: SlaRules) -> Self {
        Self {
            rollups_table: tables.rollups.clone(),
            failed_jobs_table: tables.failed_jobs.clone(),
            alerts_table: tables.alerts.clone(),
            alert_topic_arn,
            rules,
        }
    }

    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            rollups_table: required("PIPETEL_ROLLUPS_TABLE")?,
            failed_jobs_table: required("PIPETEL_FAILED_JOBS_TABLE")?,
            alerts_table: required("PIPETEL_ALERTS_TABLE")?,
            alert_topic_arn: required("PIPETEL_ALERT_TOPIC_ARN")?,
            rules: load_rules()?,
        })
    }
}

/// What the retry dispatcher needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub failed_jobs_table: String,
    /// `PIPETEL_STATE_MACHINE_ARN` (default for every source) and `PIPETEL_STATE_MACHINES`
    /// (`source=arn,...`, per-source overrides); at least one must be set.
    pub state_machines: StateMachines,
    /// For its `[retry]` policy.
    pub rules: SlaRules,
}

impl RetrySettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let invalid = |reason: String| SettingsError::Invalid {
            name: "PIPETEL_STATE_MACHINES",
            reason,
        };
        let state_machines = StateMachines::parse(
            non_empty("PIPETEL_STATE_MACHINE_ARN"),
            &non_empty("PIPETEL_STATE_MACHINES").unwrap_or_default(),
        )
        .map_err(invalid)?;
        if state_machines.default.is_none() && state_machines.by_source.is_empty() {
            return Err(SettingsError::Missing("PIPETEL_STATE_MACHINE_ARN"));
        }
        Ok(Self {
            failed_jobs_table: required("PIPETEL_FAILED_JOBS_TABLE")?,
            state_machines,
            rules: load_rules()?,
        })
    }
}

/// SLA rules: `PIPETEL_SLA_RULES` (TOML text), else `PIPETEL_SLA_RULES_FILE` (a path), else the
/// rules shipped in `model/sla-rules.toml`.
pub fn load_rules() -> Result<SlaRules, SettingsError> {
    if let Some(text) = non_empty("PIPETEL_SLA_RULES") {
        return Ok(SlaRules::from_toml(&text)?);
    }
    if let Some(path) = non_empty("PIPETEL_SLA_RULES_FILE") {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| SettingsError::RulesFile { path, source })?;
        return Ok(SlaRules::from_toml(&text)?);
    }
    Ok(SlaRules::from_toml(DEFAULT_RULES_TOML)?)
}

/// The shared SDK configuration: standard retry mode with [`SDK_MAX_ATTEMPTS`], and an explicit
/// endpoint when given (local emulators); otherwise the standard AWS environment decides.
pub async fn aws_config(endpoint_url: Option<&str>) -> SdkConfig {
    aws_config_builder(endpoint_url).load().await
}

/// [`aws_config`] before loading, for callers that pin more (region, credentials).
pub fn aws_config_builder(endpoint_url: Option<&str>) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS));
    match endpoint_url {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    }
}

fn required(name: &'static str) -> Result<String, SettingsError> {
    non_empty(name).ok_or(SettingsError::Missing(name))
}

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
