//! Operator reads of the projection tables (`pipetel jobs`, `failed`, `alerts`): a key or an
//! index serves each question; a Scan only where the table has none for it (and it says so).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use pipetel_model::{FailedJob, JobRollup, RetryState, RunDate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::replay::TableIoError;

/// GSIs of the template the reads rely on.
pub const ROLLUPS_BY_RUN_DATE: &str = "by-run-date";
pub const PENDING_BY_DUE: &str = "pending-by-due";
pub const ALERTS_BY_RUN_DATE: &str = "by-run-date";

type Item = HashMap<String, AttributeValue>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An alert as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAlert {
    pub alert_id: String,
    pub job_id: String,
    pub source: String,
    pub run_date: String,
    pub kind: String,
    pub severity: String,
    pub state: String,
    /// The published message body.
    pub message: String,
}

/// Reads of one deployment's projection tables.
pub struct ProjectionReader {
    client: Client,
    rollups_table: String,
    failed_jobs_table: String,
    alerts_table: String,
}

impl ProjectionReader {
    pub fn new(
        client: Client,
        rollups_table: impl Into<String>,
        failed_jobs_table: impl Into<String>,
        alerts_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            rollups_table: rollups_table.into(),
            failed_jobs_table: failed_jobs_table.into(),
            alerts_table: alerts_table.into(),
        }
    }

    /// One day's jobs, optionally of one source (a GetItem) or in one status (filtered Query).
    pub async fn jobs(
        &self,
        run_date: RunDate,
        source: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<JobRollup>, TableIoError> {
        let table = &self.rollups_table;
        let mut rollups: Vec<JobRollup> = match source {
            Some(source) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(table)
                    .key("job_id", AttributeValue::S(format!("{source}#{run_date}")))
                    .send()
                    .await
                    .map_err(|e| aws(table, "GetItem", e))?;
                out.item
                    .map(|item| decode(table, "job_id", item))
                    .transpose()?
                    .into_iter()
                    .collect()
            }
            None => {
                let mut query = self
                    .client
                    .query()
                    .table_name(table)
                    .index_name(ROLLUPS_BY_RUN_DATE)
                    .key_condition_expression("run_date = :date")
                    .expression_attribute_values(":date", AttributeValue::S(run_date.to_string()));
                if let Some(status) = status {
                    query = query
                        .filter_expression("#status = :status")
                        .expression_attribute_names("#status", "status")
                        .expression_attribute_values(
                            ":status",
                            AttributeValue::S(status.to_owned()),
                        );
                }
                let pages = query
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Vec<_>>()
                    .await;
                decode_all(table, "job_id", (pages, "Query"))?
            }
        };
        rollups.retain(|r| status.is_none_or(|s| r.status.as_str() == s));
        Ok(rollups)
    }

    /// Retry-queue entries in `state`. PENDING ones come from the `pending-by-due` index, due
    /// first; RESOLVED and EXHAUSTED entries have no index (they need none in production), so
    /// those are a filtered Scan.
    pub async fn failed_jobs(&self, state: RetryState) -> Result<Vec<FailedJob>, TableIoError> {
        let table = &self.failed_jobs_table;
        let state_value: AttributeValue =
            serde_dynamo::to_attribute_value(state).map_err(|e| aws(table, "Query", e))?;
        let items = if state == RetryState::Pending {
            let pages = self
                .client
                .query()
                .table_name(table)
                .index_name(PENDING_BY_DUE)
                .key_condition_expression("retry_state = :state")
                .expression_attribute_values(":state", state_value)
                .into_paginator()
                .items()
                .send()
                .collect::<Vec<_>>()
                .await;
            (boxed(pages), "Query")
        } else {
            let pages = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("retry_state = :state")
                .expression_attribute_values(":state", state_value)
                .into_paginator()
                .items()
                .send()
                .collect::<Vec<_>>()
                .await;
            (boxed(pages), "Scan")
        };
        decode_all(table, "pk", items)
    }

    /// The alerts raised for one run date.
    pub async fn alerts(&self, run_date: RunDate) -> Result<Vec<LedgerAlert>, TableIoError> {
        let table = &self.alerts_table;
        let pages = self
            .client
            .query()
            .table_name(table)
            .index_name(ALERTS_BY_RUN_DATE)
            .key_condition_expression("run_date = :date")
            .expression_attribute_values(":date", AttributeValue::S(run_date.to_string()))
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>()
            .await;
        decode_all(table, "alert_id", (pages, "Query"))
    }
}

fn boxed<E: Into<BoxError>>(pages: Vec<Result<Item, E>>) -> Vec<Result<Item, BoxError>> {
    pages.into_iter().map(|r| r.map_err(Into::into)).collect()
}

/// The items of a paginated read (with the operation's name for errors), decoded.
fn decode_all<T: DeserializeOwned, E: Into<BoxError>>(
    table: &str,
    key: &str,
    (pages, operation): (Vec<Result<Item, E>>, &'static str),
) -> Result<Vec<T>, TableIoError> {
    pages
        .into_iter()
        .map(|item| decode(table, key, item.map_err(|e| aws(table, operation, e))?))
        .collect()
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, item: Item) -> Result<T, TableIoError> {
    let key = match item.get(key) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => "?".to_owned(),
    };
    serde_dynamo::from_item(item).map_err(|e| TableIoError::Corrupt {
        table: table.to_owned(),
        key,
        source: e.into(),
    })
}

fn aws(table: &str, operation: &'static str, source: impl Into<BoxError>) -> TableIoError {
    TableIoError::Aws {
        table: table.to_owned(),
        operation,
        source: source.into(),
    }
}
