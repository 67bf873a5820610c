//! The Lambda entry point for the `pipeline-logs` stream: Lambda event in, partial-batch response out.

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use pipetel_model::Timestamp;

use crate::decode::{decode_raw, StreamBatch};
use crate::ports::{AlertSink, ProjectionStore};
use crate::processor::{BatchReport, StreamProcessor};

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
    let report = processor
        .process(records, Timestamp::from_datetime(chrono::Utc::now()))
        .await;
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
