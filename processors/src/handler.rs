//! Lambda entry points: the `pipeline-logs` stream (Lambda event in, partial-batch response out),
//! and the scheduled sla-sweeper and retry-dispatcher runs.

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use pipetel_model::Timestamp;

use crate::decode::{decode_raw, error_chain, StreamBatch};
use crate::ports::{
    AlertLedger, AlertSink, ProjectionStore, RetryQueue, RetryTarget, RollupsByDate,
};
use crate::processor::{BatchReport, StreamProcessor};
use crate::retry::{RetryDispatcher, RetryReport};
use crate::sweeper::{SweepReport, Sweeper};

/// The payload of a scheduled invocation (EventBridge Scheduler). Every field is optional and
/// unknown fields are ignored, so the scheduler's default `{}` (or any event) works.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ScheduledRun {
    /// Decide and report only; publish, resubmit and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn wall_clock() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// One scheduled sweep at the wall clock; the report is logged and returned.
pub async fn handle_sweep<R: RollupsByDate, A: AlertSink + AlertLedger>(
    sweeper: &Sweeper<R, A>,
    event: LambdaEvent<Option<ScheduledRun>>,
) -> Result<SweepReport, lambda_runtime::Error> {
    let dry_run = event.payload.unwrap_or_default().dry_run;
    match sweeper.run(wall_clock(), dry_run).await {
        Ok(report) => {
            tracing::info!(
                breaches = report.breaches.len(),
                published = report.published,
                already_published = report.already_published,
                resolutions = report.resolutions.len(),
                resolutions_published = report.resolutions_published,
                jobs = report.jobs,
                "sweep done"
            );
            Ok(report)
        }
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "sweep failed");
            Err(err.into())
        }
    }
}

/// One scheduled dispatcher run at the wall clock; the report is logged and returned.
pub async fn handle_retry<Q: RetryQueue, T: RetryTarget>(
    dispatcher: &RetryDispatcher<Q, T>,
    event: LambdaEvent<Option<ScheduledRun>>,
) -> Result<RetryReport, lambda_runtime::Error> {
    let dry_run = event.payload.unwrap_or_default().dry_run;
    match dispatcher.run(wall_clock(), dry_run).await {
        Ok(report) => {
            tracing::info!(
                due = report.dispatches.len(),
                failed = report.failed(),
                "retry dispatch done"
            );
            Ok(report)
        }
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "retry dispatch failed");
            Err(err.into())
        }
    }
}

/// Handles one invocation. Never fails as a whole: a failure is reported as the sequence number
/// of the first record to retry (`ReportBatchItemFailures`), so records before it are not redone.
pub async fn handle<S: ProjectionStore, A: AlertSink>(
    processor: &StreamProcessor<S, A>,
    event: LambdaEvent<StreamBatch>,
) -> Result<DynamoDbEventResponse, lambda_runtime::Error> {
    Ok(process_batch(processor, event.payload).await)
}

/// Decodes each record on its own, projects the batch, logs its report.
pub async fn process_batch<S: ProjectionStore, A: AlertSink>(
    processor: &StreamProcessor<S, A>,
    batch: StreamBatch,
) -> DynamoDbEventResponse {
    let records = batch.records.iter().map(|raw| decode_raw(raw)).collect();
    let report = processor.process(records, wall_clock()).await;
    log_report(&report);
    response(&report)
}

/// The partial-batch response: empty when every record was applied.
pub fn response(report: &BatchReport) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    if let Some(sequence) = &report.first_failed_sequence {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(sequence.clone());
        response.batch_item_failures.push(failure);
    }
    response
}

fn log_report(report: &BatchReport) {
    tracing::info!(
        records = report.records,
        events = report.events,
        removed = report.removed,
        malformed = report.malformed,
        jobs = report.jobs,
        rollup_writes = report.rollup_writes,
        rollups_unchanged = report.rollups_unchanged,
        conflicts = report.conflicts,
        failed_job_writes = report.failed_job_writes,
        alerts_published = report.alerts_published,
        alerts_already_published = report.alerts_already_published,
        first_failed_sequence = report.first_failed_sequence.as_deref(),
        "batch projected"
    );
}
