//! Typed errors for bad input: each says which field and what was wrong.

use thiserror::Error;

/// Why a stage event (or one of its parts) breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    #[error("{field}: {value:?} is not a valid name ({reason}); expected [A-Za-z0-9_.-]{{1,64}}")]
    InvalidName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("run_date: {value:?} is not a real calendar date of the form YYYYMMDD")]
    InvalidRunDate { value: String },
    #[error("{field}: {value:?} is not ISO 8601 UTC of the form YYYY-MM-DDTHH:MM:SSZ")]
    InvalidTimestamp { field: &'static str, value: String },
    #[error("status: {value:?} is not valid for stage {stage:?}; expected one of {allowed}")]
    InvalidStatus {
        value: String,
        stage: String,
        allowed: &'static str,
    },
    #[error("{field}: {value:?} is malformed: {reason}")]
    MalformedKey {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{field}: stored {found:?} but the event's own fields give {expected:?}")]
    KeyMismatch {
        field: &'static str,
        found: String,
        expected: String,
    },
}

/// Why an SLA rules file cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("SLA rules are not valid TOML for pipetel")]
    Toml(#[from] toml::de::Error),
    #[error("SLA rules: {path}: {value:?} is not a duration like \"90m\" or \"2h 30m\"")]
    Duration {
        path: String,
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("SLA rules: {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("SLA rules: {path}")]
    Name {
        path: String,
        #[source]
        source: EventError,
    },
}
