//! Job rollups and the failed-jobs retry queue in DynamoDB.
//!
//! The stream processor writes a failed-jobs entry with an UpdateItem that SETs the derived
//! attributes only: the retry dispatcher's own attributes (`dispatched_at`, `dispatch_count`,
//! `execution_name`) survive it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use pipetel_model::{Dispatch, FailedJob, JobRollup, RunDate, Timestamp};

use super::is_condition_failure;
use crate::ports::{ProjectionStore, RetryQueue, RollupsByDate, StoreError};

/// `job-rollups` index: (`run_date`, `job_id`).
pub const ROLLUPS_BY_RUN_DATE: &str = "by-run-date";
/// `failed-jobs` sparse index: (`retry_state`, `next_retry_at`).
pub const PENDING_BY_DUE: &str = "pending-by-due";

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
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(entry).map_err(|e| unavailable(table, "UpdateItem", e))?;
        let key = item
            .remove("pk")
            .ok_or_else(|| unavailable(table, "UpdateItem", "entry without pk"))?;
        let mut request = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", key)
            .condition_expression("attribute_not_exists(pk) OR events_seen <= :seen")
            .expression_attribute_values(":seen", AttributeValue::N(entry.events_seen.to_string()));
        let mut sets = Vec::with_capacity(item.len());
        for (i, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{i} = :v{i}"));
            request = request
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":v{i}"), value);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if entry.next_retry_at.is_none() {
            // Keeps the pending-by-due index sparse: out of it unless a retry is waiting.
            expression.push_str(" REMOVE next_retry_at");
        }
        match request.update_expression(expression).send().await {
            // A newer entry (derived from more events) is already there: nothing to do.
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(unavailable(table, "UpdateItem", err)),
            Ok(_) => Ok(()),
        }
    }
}

impl RollupsByDate for DynamoProjectionStore {
    async fn rollups_of(&self, run_date: RunDate) -> Result<Vec<JobRollup>, StoreError> {
        let table = &self.rollups_table;
        let items = query_all(
            self.client
                .query()
                .table_name(table)
                .index_name(ROLLUPS_BY_RUN_DATE)
                .key_condition_expression("run_date = :d")
                .expression_attribute_values(":d", AttributeValue::S(run_date.to_string())),
            table,
        )
        .await?;
        decode_items(table, "job_id", items)
    }
}

/// The failed-jobs table as the retry dispatcher uses it.
#[derive(Clone)]
pub struct DynamoRetryQueue {
    client: Client,
    table: String,
}

impl DynamoRetryQueue {
    pub fn new(client: Client, failed_jobs_table: impl Into<String>) -> Self {
        Self {
            client,
            table: failed_jobs_table.into(),
        }
    }
}

impl RetryQueue for DynamoRetryQueue {
    async fn due(&self, now: Timestamp) -> Result<Vec<FailedJob>, StoreError> {
        let table = &self.table;
        let items = query_all(
            self.client
                .query()
                .table_name(table)
                .index_name(PENDING_BY_DUE)
                .key_condition_expression("retry_state = :pending AND next_retry_at <= :now")
                .expression_attribute_values(":pending", AttributeValue::S("PENDING".into()))
                .expression_attribute_values(":now", AttributeValue::S(now.to_string())),
            table,
        )
        .await?;
        decode_items(table, "pk", items)
    }

    async fn mark_dispatched(
        &self,
        dispatch: &Dispatch,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let table = &self.table;
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(dispatch.entry.pk.clone()))
            .update_expression(
                "SET next_retry_at = :next, dispatched_at = :at, execution_name = :name \
                 ADD dispatch_count :one",
            )
            .condition_expression("retry_state = :pending AND events_seen = :seen")
            .expression_attribute_values(
                ":next",
                AttributeValue::S(dispatch.next_retry_at.to_string()),
            )
            .expression_attribute_values(":at", AttributeValue::S(at.to_string()))
            .expression_attribute_values(
                ":name",
                AttributeValue::S(dispatch.execution_name.clone()),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":pending", AttributeValue::S("PENDING".into()))
            .expression_attribute_values(
                ":seen",
                AttributeValue::N(dispatch.entry.events_seen.to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(unavailable(table, "UpdateItem", err)),
        }
    }
}

/// Every item of a Query, page after page.
async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    table: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = query
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable(table, "Query", e))?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
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

/// Items read back, decoded; one that is not a valid projection is [`StoreError::Corrupt`].
fn decode_items<T: serde::de::DeserializeOwned>(
    table: &str,
    key: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<Vec<T>, StoreError> {
    items
        .into_iter()
        .map(|item| {
            serde_dynamo::from_item(item.clone()).map_err(|source| StoreError::Corrupt {
                table: table.to_owned(),
                key: key_of(&item, key),
                source: source.into(),
            })
        })
        .collect()
}

fn key_of(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => "?".to_owned(),
    }
}
