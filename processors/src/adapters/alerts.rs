//! SLA alerts: a DynamoDB ledger (key `alert_id`) in front of SNS, so each breach is published once.
//!
//! Claim (conditional put) → publish → mark published. A claim whose publisher died is taken over
//! after [`CLAIM_LEASE_SECONDS`]; until then the alert is reported in flight and its record retried.
//!
//! Resolutions go the same way on the same item: PUBLISHED → RESOLVING (conditional update, same
//! lease) → publish the resolution → RESOLVED, so each alert is resolved at most once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use pipetel_model::{
    AlertMessage, AlertState, Breach, LedgerAlert, LedgerState, RunDate, Timestamp,
};
use serde::{Deserialize, Serialize};

use super::is_condition_failure;
use crate::ports::{AlertError, AlertLedger, AlertSink, Raised};

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
const RESOLVING: &str = "RESOLVING";
const RESOLVED: &str = "RESOLVED";
/// `sla-alerts` index: (`run_date`, `alert_id`).
pub const ALERTS_BY_RUN_DATE: &str = "by-run-date";

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

    fn next_token(&self) -> String {
        format!(
            "{}-{}",
            self.claimer,
            self.claims.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Claims `message` for publishing: `Some(token)` if this worker must publish it.
    async fn claim(
        &self,
        message: &AlertMessage,
        body: String,
    ) -> Result<Option<String>, AlertError> {
        let token = self.next_token();
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

    /// Publishes claimed messages (message, body, claim token) and marks each one sent under
    /// `lease`, at its resolution time if it is one, else its detection time.
    async fn publish_and_mark(
        &self,
        claimed: &[(AlertMessage, String, String)],
        lease: &Lease,
        mut raised: Raised,
    ) -> Result<Raised, AlertError> {
        let published = self.publish(claimed).await;
        for &(i, ref message_id) in &published.sent {
            let (message, _, token) = &claimed[i];
            let at = message.resolved_at.unwrap_or(message.detected_at);
            self.mark_sent(lease, &message.alert_id, token, message_id, at)
                .await?;
            raised.published += 1;
        }
        published.failure.map_or(Ok(raised), Err)
    }

    /// Records that the message of a claim (`lease.token_attribute` = `token`) was sent. A
    /// claimer whose lease ran out meanwhile only warns: the message may have gone out twice.
    async fn mark_sent(
        &self,
        lease: &Lease,
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
            .update_expression(format!(
                "SET #state = :done, {} = :at, {} = :mid",
                lease.at_attribute, lease.message_id_attribute
            ))
            .condition_expression(format!("{} = :token", lease.token_attribute))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":done", AttributeValue::S(lease.done_state.to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(at.to_string()))
            .expression_attribute_values(":mid", AttributeValue::S(message_id.to_owned()))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => {
                tracing::warn!(alert_id, "{}", lease.expired_warning);
                Ok(())
            }
            Err(err) => Err(self.ledger_error("UpdateItem", err)),
        }
    }
}

/// The ledger attributes of one claimed step: publishing a breach, or publishing its resolution.
struct Lease {
    token_attribute: &'static str,
    done_state: &'static str,
    at_attribute: &'static str,
    message_id_attribute: &'static str,
    expired_warning: &'static str,
}

const PUBLISH_LEASE: Lease = Lease {
    token_attribute: "claim_token",
    done_state: PUBLISHED,
    at_attribute: "published_at",
    message_id_attribute: "message_id",
    expired_warning: "claim lease expired before publishing finished; the alert may be sent twice",
};

const RESOLVE_LEASE: Lease = Lease {
    token_attribute: "resolve_token",
    done_state: RESOLVED,
    at_attribute: "resolved_at",
    message_id_attribute: "resolution_message_id",
    expired_warning: "resolution lease expired before publishing finished; it may be sent twice",
};

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
        self.publish_and_mark(&claimed, &PUBLISH_LEASE, raised)
            .await
    }
}

/// What a round of PublishBatch requests achieved.
struct Published {
    /// Index into the input and SNS message id of each message sent.
    sent: Vec<(usize, String)>,
    /// The first failure; messages after it in its batch or later batches were not all sent.
    failure: Option<AlertError>,
}

impl SnsAlertSink {
    /// Publishes claimed messages (body, claim token) in batches of [`MAX_PUBLISH_BATCH`].
    async fn publish(&self, claimed: &[(AlertMessage, String, String)]) -> Published {
        let mut sent = Vec::new();
        for (n, chunk) in claimed.chunks(MAX_PUBLISH_BATCH).enumerate() {
            let offset = n * MAX_PUBLISH_BATCH;
            let entries = match chunk
                .iter()
                .enumerate()
                .map(|(i, (message, body, _))| publish_entry(i, message, body))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(entries) => entries,
                Err(e) => {
                    return Published {
                        sent,
                        failure: Some(self.publish_error(e)),
                    }
                }
            };
            let out = match self
                .sns
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    return Published {
                        sent,
                        failure: Some(self.publish_error(e)),
                    }
                }
            };
            for ok in out.successful.unwrap_or_default() {
                if let Some(i) = ok
                    .id
                    .as_deref()
                    .and_then(|id| id.parse::<usize>().ok())
                    .filter(|&i| i < chunk.len())
                {
                    sent.push((offset + i, ok.message_id.unwrap_or_default()));
                }
            }
            if let Some(failed) = out.failed.filter(|f| !f.is_empty()) {
                let reasons: Vec<String> = failed
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message.clone().unwrap_or_default()))
                    .collect();
                return Published {
                    sent,
                    failure: Some(self.publish_error(reasons.join("; "))),
                };
            }
        }
        Published {
            sent,
            failure: None,
        }
    }

    /// Claims the resolution of a published alert: `Some(token)` if this worker must publish it.
    async fn claim_resolution(
        &self,
        resolution: &AlertMessage,
        now: Timestamp,
    ) -> Result<Option<String>, AlertError> {
        let token = self.next_token();
        let result = self
            .dynamodb
            .update_item()
            .table_name(&self.ledger_table)
            .key("alert_id", AttributeValue::S(resolution.alert_id.clone()))
            .update_expression(
                "SET #state = :resolving, resolving_at = :now, resolve_token = :token",
            )
            .condition_expression(
                "#state = :published OR (#state = :resolving AND resolving_at < :stale)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":resolving", AttributeValue::S(RESOLVING.to_owned()))
            .expression_attribute_values(":published", AttributeValue::S(PUBLISHED.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.epoch_seconds().to_string()))
            .expression_attribute_values(
                ":stale",
                AttributeValue::N((now.epoch_seconds() - CLAIM_LEASE_SECONDS).to_string()),
            )
            .expression_attribute_values(":token", AttributeValue::S(token.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(token)),
            Err(err) if is_condition_failure(&err) => Ok(None),
            Err(err) => Err(self.ledger_error("UpdateItem", err)),
        }
    }
}

impl AlertLedger for SnsAlertSink {
    async fn alerts_of(&self, run_date: RunDate) -> Result<Vec<LedgerAlert>, AlertError> {
        let mut alerts = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .dynamodb
                .query()
                .table_name(&self.ledger_table)
                .index_name(ALERTS_BY_RUN_DATE)
                .key_condition_expression("run_date = :d")
                .expression_attribute_values(":d", AttributeValue::S(run_date.to_string()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.ledger_error("Query", e))?;
            for item in out.items.unwrap_or_default() {
                match ledger_alert(item) {
                    Ok(alert) => alerts.push(alert),
                    // Not ours to fix here: an unreadable entry is left alone, loudly.
                    Err(reason) => tracing::warn!(%run_date, reason, "ledger entry skipped"),
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(alerts),
            }
        }
    }

    async fn resolve(&self, resolutions: &[AlertMessage]) -> Result<Raised, AlertError> {
        let mut raised = Raised::default();
        let mut claimed = Vec::new();
        for resolution in resolutions {
            let now = resolution.resolved_at.unwrap_or(resolution.detected_at);
            let body = serde_json::to_string(resolution).map_err(|e| self.publish_error(e))?;
            match self.claim_resolution(resolution, now).await? {
                Some(token) => claimed.push((resolution.clone(), body, token)),
                None => raised.already_published += 1,
            }
        }
        self.publish_and_mark(&claimed, &RESOLVE_LEASE, raised)
            .await
    }
}

/// A ledger item read back: its state and the body it was published with.
fn ledger_alert(item: HashMap<String, AttributeValue>) -> Result<LedgerAlert, String> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        _ => Err(format!("{name} missing or not a string")),
    };
    let epoch = |name: &str| {
        let value = match item.get(name) {
            Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
            _ => None,
        };
        value
            .and_then(Timestamp::from_epoch_seconds)
            .ok_or_else(|| format!("{name} missing or not epoch seconds"))
    };
    let message: AlertMessage =
        serde_json::from_str(text("message")?).map_err(|e| format!("message: {e}"))?;
    let state = match text("state")? {
        CLAIMED => LedgerState::Claimed {
            at: epoch("claimed_at")?,
        },
        PUBLISHED => LedgerState::Published,
        RESOLVING => LedgerState::Resolving {
            at: epoch("resolving_at")?,
        },
        RESOLVED => LedgerState::Resolved,
        other => return Err(format!("unknown state {other:?}")),
    };
    Ok(LedgerAlert { message, state })
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
        ("state".to_owned(), attribute(message.state.as_str())?),
    ]);
    let resolved = match message.state {
        AlertState::Breached => "",
        AlertState::Resolved => "RESOLVED ",
    };
    let subject: String = format!(
        "{resolved}[{}] {} {}",
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
