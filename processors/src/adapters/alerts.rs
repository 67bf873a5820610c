//! SLA alerts: a DynamoDB ledger (key `alert_id`) in front of SNS, so each breach is published once.
//!
//! Claim (conditional put) → publish → mark published. A claim whose publisher died is taken over
//! after [`CLAIM_LEASE_SECONDS`]; until then the alert is reported in flight and its record retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use pipetel_model::{AlertMessage, Breach, Timestamp};
use serde::{Deserialize, Serialize};

use super::is_condition_failure;
use crate::ports::{AlertError, AlertSink, Raised};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Entries one SNS PublishBatch request may carry (an SNS limit).
pub const MAX_PUBLISH_BATCH: usize = 10;
/// How long a claimed, unpublished alert belongs to its claimer.
pub const CLAIM_LEASE_SECONDS: i64 = 60;
/// How often, and how many times, to look again at an alert another worker is publishing before
/// reporting it in flight (a concurrent publisher normally finishes within milliseconds).
const IN_FLIGHT_POLL: std::time::Duration = std::time::Duration::from_millis(100);
const IN_FLIGHT_POLLS: u32 = 30;

const CLAIMED: &str = "CLAIMED";
const PUBLISHED: &str = "PUBLISHED";

/// One alert in the ledger table.
#[derive(Debug, Serialize, Deserialize)]
struct LedgerEntry {
    alert_id: String,
    job_id: String,
    source: String,
    run_date: String,
    kind: String,
    severity: String,
    state: String,
    claimed_at: i64,
    claim_token: String,
    /// The published message body, for operators and replays.
    message: String,
}

pub struct SnsAlertSink {
    dynamodb: aws_sdk_dynamodb::Client,
    sns: aws_sdk_sns::Client,
    ledger_table: String,
    topic_arn: String,
    claimer: String,
    claims: AtomicU64,
}

impl SnsAlertSink {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        sns: aws_sdk_sns::Client,
        ledger_table: impl Into<String>,
        topic_arn: impl Into<String>,
    ) -> Self {
        let started = Timestamp::from_datetime(chrono::Utc::now()).epoch_seconds();
        Self {
            dynamodb,
            sns,
            ledger_table: ledger_table.into(),
            topic_arn: topic_arn.into(),
            claimer: format!("{}-{started}", std::process::id()),
            claims: AtomicU64::new(0),
        }
    }

    fn ledger_error(&self, operation: &'static str, source: impl Into<BoxError>) -> AlertError {
        AlertError::Ledger {
            table: self.ledger_table.clone(),
            operation,
            source: source.into(),
        }
    }

    fn publish_error(&self, source: impl Into<BoxError>) -> AlertError {
        AlertError::Publish {
            topic: self.topic_arn.clone(),
            source: source.into(),
        }
    }

    /// Claims `message` for publishing: `Some(token)` if this worker must publish it.
    async fn claim(
        &self,
        message: &AlertMessage,
        body: String,
    ) -> Result<Option<String>, AlertError> {
        let token = format!(
            "{}-{}",
            self.claimer,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let now = message.detected_at.epoch_seconds();
        let entry = LedgerEntry {
            alert_id: message.alert_id.clone(),
            job_id: message.job_id.clone(),
            source: message.source.to_string(),
            run_date: message.run_date.to_string(),
            kind: message.kind.to_string(),
            severity: message.severity.as_str().to_owned(),
            state: CLAIMED.to_owned(),
            claimed_at: now,
            claim_token: token.clone(),
            message: body,
        };
        let item = serde_dynamo::to_item(&entry).map_err(|e| self.ledger_error("PutItem", e))?;
        let result = self
            .dynamodb
            .put_item()
            .table_name(&self.ledger_table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(alert_id) OR (#state = :claimed AND claimed_at < :stale)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", AttributeValue::S(CLAIMED.to_owned()))
            .expression_attribute_values(
                ":stale",
                AttributeValue::N((now - CLAIM_LEASE_SECONDS).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(token)),
            Err(err) if is_condition_failure(&err) => {
                for _ in 0..IN_FLIGHT_POLLS {
                    if self.state_of(&message.alert_id).await?.as_deref() != Some(CLAIMED) {
                        return Ok(None);
                    }
                    tokio::time::sleep(IN_FLIGHT_POLL).await;
                }
                Err(AlertError::InFlight {
                    alert_id: message.alert_id.clone(),
                })
            }
            Err(err) => Err(self.ledger_error("PutItem", err)),
        }
    }

    async fn state_of(&self, alert_id: &str) -> Result<Option<String>, AlertError> {
        let existing = self
            .dynamodb
            .get_item()
            .table_name(&self.ledger_table)
            .key("alert_id", AttributeValue::S(alert_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.ledger_error("GetItem", e))?;
        Ok(existing
            .item
            .and_then(|mut item| item.remove("state"))
            .and_then(|state| state.as_s().ok().cloned()))
    }

    async fn mark_published(
        &self,
        alert_id: &str,
        token: &str,
        message_id: &str,
        at: Timestamp,
    ) -> Result<(), AlertError> {
        let result = self
            .dynamodb
            .update_item()
            .table_name(&self.ledger_table)
            .key("alert_id", AttributeValue::S(alert_id.to_owned()))
            .update_expression("SET #state = :published, published_at = :at, message_id = :mid")
            .condition_expression("claim_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":published", AttributeValue::S(PUBLISHED.to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(at.to_string()))
            .expression_attribute_values(":mid", AttributeValue::S(message_id.to_owned()))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => {
                tracing::warn!(
                    alert_id,
                    "claim lease expired before publishing finished; the alert may be sent twice"
                );
                Ok(())
            }
            Err(err) => Err(self.ledger_error("UpdateItem", err)),
        }
    }
}

impl AlertSink for SnsAlertSink {
    async fn raise(
        &self,
        breaches: &[Breach],
        detected_at: Timestamp,
    ) -> Result<Raised, AlertError> {
        let mut raised = Raised::default();
        let mut claimed = Vec::new();
        for breach in breaches {
            let message = breach.message(detected_at);
            let body = serde_json::to_string(&message).map_err(|e| self.publish_error(e))?;
            match self.claim(&message, body.clone()).await? {
                Some(token) => claimed.push((message, body, token)),
                None => raised.already_published += 1,
            }
        }
        for chunk in claimed.chunks(MAX_PUBLISH_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (message, body, _))| publish_entry(i, message, body))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.publish_error(e))?;
            let out = self
                .sns
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.publish_error(e))?;
            for ok in out.successful.unwrap_or_default() {
                let Some((message, _, token)) = ok
                    .id
                    .as_deref()
                    .and_then(|id| id.parse::<usize>().ok())
                    .and_then(|i| chunk.get(i))
                else {
                    continue;
                };
                self.mark_published(
                    &message.alert_id,
                    token,
                    ok.message_id.as_deref().unwrap_or(""),
                    detected_at,
                )
                .await?;
                raised.published += 1;
            }
            if let Some(failed) = out.failed.filter(|f| !f.is_empty()) {
                let reasons: Vec<String> = failed
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message.clone().unwrap_or_default()))
                    .collect();
                return Err(self.publish_error(reasons.join("; ")));
            }
        }
        Ok(raised)
    }
}

/// One PublishBatch entry: JSON body, a readable subject, and the filterable attributes.
fn publish_entry(
    index: usize,
    message: &AlertMessage,
    body: &str,
) -> Result<PublishBatchRequestEntry, aws_sdk_sns::error::BuildError> {
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
    };
    let attributes = HashMap::from([
        ("source".to_owned(), attribute(message.source.as_str())?),
        ("kind".to_owned(), attribute(message.kind.as_str())?),
        ("severity".to_owned(), attribute(message.severity.as_str())?),
    ]);
    let subject: String = format!(
        "[{}] {} {}",
        message.severity.as_str(),
        message.kind,
        message.job_id
    )
    .chars()
    .take(100)
    .collect();
    PublishBatchRequestEntry::builder()
        .id(index.to_string())
        .message(body)
        .subject(subject)
        .set_message_attributes(Some(attributes))
        .build()
}
