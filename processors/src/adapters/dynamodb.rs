//! Job rollups and the failed-jobs retry queue in DynamoDB.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use pipetel_model::{FailedJob, JobRollup};

use super::is_condition_failure;
use crate::ports::{ProjectionStore, StoreError};

/// Keys one BatchGetItem request may carry (a DynamoDB limit).
pub const MAX_BATCH_GET_KEYS: usize = 100;
/// Rounds of re-requesting keys DynamoDB left unprocessed (under throttling) before giving up.
const MAX_UNPROCESSED_ROUNDS: u32 = 8;

#[derive(Clone)]
pub struct DynamoProjectionStore {
    client: Client,
    rollups_table: String,
    failed_jobs_table: String,
}

impl DynamoProjectionStore {
    pub fn new(
        client: Client,
        rollups_table: impl Into<String>,
        failed_jobs_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            rollups_table: rollups_table.into(),
            failed_jobs_table: failed_jobs_table.into(),
        }
    }
}

impl ProjectionStore for DynamoProjectionStore {
    async fn get_rollups(
        &self,
        job_ids: &[String],
    ) -> Result<HashMap<String, JobRollup>, StoreError> {
        let table = &self.rollups_table;
        let mut found = HashMap::with_capacity(job_ids.len());
        for chunk in job_ids.chunks(MAX_BATCH_GET_KEYS) {
            let keys = chunk
                .iter()
                .map(|id| HashMap::from([("job_id".to_owned(), AttributeValue::S(id.clone()))]))
                .collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| unavailable(table, "BatchGetItem", e))?;
            for round in 0.. {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| unavailable(table, "BatchGetItem", e))?;
                let items = out
                    .responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default();
                for item in items {
                    let rollup: JobRollup =
                        serde_dynamo::from_item(item.clone()).map_err(|source| {
                            StoreError::Corrupt {
                                table: table.clone(),
                                key: key_of(&item, "job_id"),
                                source: source.into(),
                            }
                        })?;
                    found.insert(rollup.job_id.clone(), rollup);
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                    Some(rest) if !rest.keys.is_empty() && round < MAX_UNPROCESSED_ROUNDS => {
                        tokio::time::sleep(Duration::from_millis(25 << round)).await;
                        request = rest;
                    }
                    Some(rest) if !rest.keys.is_empty() => {
                        let left = rest.keys.len();
                        return Err(unavailable(
                            table,
                            "BatchGetItem",
                            format!("{left} keys still unprocessed after {MAX_UNPROCESSED_ROUNDS} rounds"),
                        ));
                    }
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    async fn put_rollup(
        &self,
        rollup: &JobRollup,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError> {
        let table = &self.rollups_table;
        let item = serde_dynamo::to_item(rollup).map_err(|e| unavailable(table, "PutItem", e))?;
        let request = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item));
        let request = match expected_revision {
            None => request.condition_expression("attribute_not_exists(job_id)"),
            Some(revision) => request
                .condition_expression("revision = :expected")
                .expression_attribute_values(":expected", AttributeValue::S(revision.to_owned())),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Err(StoreError::Conflict {
                table: table.clone(),
                key: rollup.job_id.clone(),
            }),
            Err(err) => Err(unavailable(table, "PutItem", err)),
        }
    }

    async fn put_failed_job(&self, entry: &FailedJob) -> Result<(), StoreError> {
        let table = &self.failed_jobs_table;
        let item = serde_dynamo::to_item(entry).map_err(|e| unavailable(table, "PutItem", e))?;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR events_seen <= :seen")
            .expression_attribute_values(":seen", AttributeValue::N(entry.events_seen.to_string()))
            .send()
            .await;
        match result {
            // A newer entry (derived from more events) is already there: nothing to do.
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(unavailable(table, "PutItem", err)),
            Ok(_) => Ok(()),
        }
    }
}

fn unavailable(
    table: &str,
    operation: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Unavailable {
        table: table.to_owned(),
        operation,
        source: source.into(),
    }
}

fn key_of(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => "?".to_owned(),
    }
}
