//! `PipelineLogger`: how a Rust pipeline step writes its stage events to `pipeline-logs`.
//!
//! Every write is a full-schema `PutItem` of the contract's 12 attributes, validated before
//! anything is sent. The put is conditional on the event not existing yet, so logging the same
//! event twice leaves one item and one stream record. Throttling is retried by the SDK
//! (standard retry mode, see [`crate::settings::aws_config`]).

use aws_sdk_dynamodb::Client;
use pipetel_model::{EventError, Name, RunDate, StageEvent, Status, Timestamp, JOB_STAGE};

use crate::adapters::is_condition_failure;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("invalid stage event")]
    Invalid(#[from] EventError),
    #[error("writing the event to {table} failed")]
    Write {
        table: String,
        #[source]
        source: BoxError,
    },
}

/// What a log call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    Written,
    /// The same event (same `pk` and `sk`) was logged before; nothing was written.
    AlreadyLogged,
}

/// Logs the stage events of one run (`source`, optional `category`, `run_date`).
#[derive(Debug, Clone)]
pub struct PipelineLogger {
    client: Client,
    table: String,
    source: Name,
    category: Option<Name>,
    run_date: RunDate,
    execution_id: Option<String>,
}

impl PipelineLogger {
    /// Validates the run's identity up front, so a misconfigured step fails before its work.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        source: &str,
        category: Option<&str>,
        run_date: &str,
    ) -> Result<Self, LoggerError> {
        Ok(Self {
            client,
            table: table.into(),
            source: Name::parse("source", source)?,
            category: category.map(|c| Name::parse("category", c)).transpose()?,
            run_date: RunDate::parse(run_date)?,
            execution_id: None,
        })
    }

    /// Tags every event with the orchestrator's execution (e.g. a Step Functions execution ARN).
    pub fn with_execution_id(mut self, execution_id: impl Into<String>) -> Self {
        self.execution_id = Some(execution_id.into());
        self
    }

    pub async fn log_stage_start(&self, stage: &str) -> Result<Logged, LoggerError> {
        self.log(self.event(stage, Status::Running, now())?).await
    }

    /// DONE (SUCCEEDED for the `job` stage), with the fingerprint of the file produced if known.
    pub async fn log_stage_done(
        &self,
        stage: &str,
        file_fingerprint: Option<&str>,
    ) -> Result<Logged, LoggerError> {
        let status = if stage == JOB_STAGE {
            Status::Succeeded
        } else {
            Status::Done
        };
        let mut event = self.event(stage, status, now())?;
        if let Some(fingerprint) = file_fingerprint {
            event = event.with_file_fingerprint(fingerprint);
        }
        self.log(event).await
    }

    /// FAILED, with the error text truncated to the contract's limits (by characters).
    pub async fn log_stage_failed(
        &self,
        stage: &str,
        error_summary: &str,
        error_details: Option<&str>,
    ) -> Result<Logged, LoggerError> {
        let event = self
            .event(stage, Status::Failed, now())?
            .with_error(error_summary, error_details);
        self.log(event).await
    }

    /// A validated event of this run, for callers that set the time or extras themselves.
    pub fn event(
        &self,
        stage: &str,
        status: Status,
        at: Timestamp,
    ) -> Result<StageEvent, LoggerError> {
        let event = StageEvent::new(
            self.source.clone(),
            self.category.clone(),
            Name::parse("stage", stage)?,
            self.run_date,
            status,
            at,
        )?;
        Ok(match &self.execution_id {
            Some(id) => event.with_execution_id(id.clone()),
            None => event,
        })
    }

    /// Writes one event unless it is already in the log.
    pub async fn log(&self, event: StageEvent) -> Result<Logged, LoggerError> {
        put_event(&self.client, &self.table, &event).await
    }
}

/// The full-schema, write-once `PutItem` of one event.
pub async fn put_event(
    client: &Client,
    table: &str,
    event: &StageEvent,
) -> Result<Logged, LoggerError> {
    let write_error = |source: BoxError| LoggerError::Write {
        table: table.to_owned(),
        source,
    };
    let item = serde_dynamo::to_item(event.to_item()).map_err(|e| write_error(e.into()))?;
    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match result {
        Ok(_) => Ok(Logged::Written),
        Err(err) if is_condition_failure(&err) => Ok(Logged::AlreadyLogged),
        Err(err) => Err(write_error(err.into())),
    }
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}
