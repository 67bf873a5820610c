//! Adapters behind the ports: DynamoDB projections, the SNS alert sink with its DynamoDB ledger,
//! and (feature `memory`) in-memory twins for unit tests and benchmarks.

mod alerts;
mod dynamodb;
#[cfg(feature = "memory")]
pub mod memory;

mod stepfunctions;

pub use alerts::{SnsAlertSink, ALERTS_BY_RUN_DATE, CLAIM_LEASE_SECONDS, MAX_PUBLISH_BATCH};
pub use dynamodb::{
    DynamoProjectionStore, DynamoRetryQueue, MAX_BATCH_GET_KEYS, PENDING_BY_DUE,
    ROLLUPS_BY_RUN_DATE,
};
pub use stepfunctions::{StateMachines, StepFunctionsTarget};

use aws_sdk_dynamodb::error::SdkError;

/// True when DynamoDB refused a write because its condition did not hold.
pub(crate) fn is_condition_failure<E, R>(err: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// The projection store and alert sink of a deployment, on one DynamoDB client.
pub fn deployed(
    config: &aws_config::SdkConfig,
    settings: &crate::settings::Settings,
) -> (DynamoProjectionStore, SnsAlertSink) {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    (
        DynamoProjectionStore::new(
            dynamodb.clone(),
            &settings.rollups_table,
            &settings.failed_jobs_table,
        ),
        SnsAlertSink::new(
            dynamodb,
            aws_sdk_sns::Client::new(config),
            &settings.alerts_table,
            &settings.alert_topic_arn,
        ),
    )
}
