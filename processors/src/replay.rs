//! Replaying the event log: `pipetel rebuild` (projections from the log alone) and
//! `pipetel verify` (the stored projections against the log). The event-sourcing promise: the
//! projections are a function of the log, so they can always be re-derived and checked.
//!
//! Both read the whole log with a parallel Scan (that is what they are for) and fold it with the
//! same pure code the stream processor uses. Alerts are side effects, not projections: a rebuild
//! never publishes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures::future::try_join_all;
use pipetel_model::{fold_by_job, EventItem, FailedJob, JobRollup, SlaRules, StageEvent};
use serde::Serialize;

use crate::decode::error_chain;

/// Items one BatchWriteItem request may carry (a DynamoDB limit).
pub const MAX_BATCH_WRITE_ITEMS: usize = 25;
/// Parallel Scan segments used by default.
pub const DEFAULT_SCAN_SEGMENTS: i32 = 4;
/// Rounds of re-sending items DynamoDB left unprocessed (under throttling) before giving up.
const MAX_UNPROCESSED_ROUNDS: u32 = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum TableIoError {
    #[error("{table}: {operation} failed")]
    Aws {
        table: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{table}: stored item {key} cannot be read")]
    Corrupt {
        table: String,
        key: String,
        #[source]
        source: BoxError,
    },
}

fn aws_error(table: &str, operation: &'static str, source: impl Into<BoxError>) -> TableIoError {
    TableIoError::Aws {
        table: table.to_owned(),
        operation,
        source: source.into(),
    }
}

/// Every item of a table, read with `segments` parallel Scan segments. `on_items` is told how
/// many items each page brought (for a progress bar).
pub async fn scan_all(
    client: &Client,
    table: &str,
    segments: i32,
    on_items: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Item>, TableIoError> {
    let segments = segments.max(1);
    let reads = (0..segments).map(|segment| async move {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .segment(segment)
                .total_segments(segments)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| aws_error(table, "Scan", e))?;
            let page_items = page.items.unwrap_or_default();
            on_items(page_items.len());
            items.extend(page_items);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok::<_, TableIoError>(items),
            }
        }
    });
    Ok(try_join_all(reads).await?.into_iter().flatten().collect())
}

/// The event log as read back: valid events, and items set aside with their reason.
#[derive(Debug, Default)]
pub struct LogContents {
    pub events: Vec<StageEvent>,
    pub malformed: Vec<(String, String)>,
}

/// Decodes log items as the stream processor decodes NewImages; bad items are set aside.
pub fn decode_log(items: Vec<Item>) -> LogContents {
    let mut contents = LogContents::default();
    for item in items {
        let key = key_text(&item, &["pk", "sk"]);
        let decoded = serde_dynamo::from_item::<_, EventItem>(item)
            .map_err(|e| error_chain(&e))
            .and_then(|raw| StageEvent::from_item(raw).map_err(|e| error_chain(&e)));
        match decoded {
            Ok(event) => contents.events.push(event),
            Err(reason) => {
                tracing::warn!(key = %key, reason = %reason, "log item set aside: it breaks the pipetel contract");
                contents.malformed.push((key, reason));
            }
        }
    }
    contents
}

/// The projections the log implies: what the stream processor converges to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Projections {
    pub rollups: BTreeMap<String, JobRollup>,
    pub failed_jobs: BTreeMap<String, FailedJob>,
}

impl Projections {
    pub fn derive(events: &[StageEvent], rules: &SlaRules) -> Self {
        let mut projections = Self::default();
        for (job_id, state) in fold_by_job(events) {
            let expected = &rules.for_source(state.source()).expected_stages;
            for entry in FailedJob::derive_all(&state, rules.retry()) {
                projections.failed_jobs.insert(entry.pk.clone(), entry);
            }
            projections
                .rollups
                .insert(job_id, JobRollup::from_state(&state, expected));
        }
        projections
    }
}

/// What a rebuild wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    pub events: usize,
    pub malformed: usize,
    pub rollups: usize,
    pub failed_jobs: usize,
    pub write_requests: usize,
}

/// Writes `projections` into the given tables, overwriting what is there (BatchWriteItem, 25
/// items per request, unprocessed items re-sent with backoff).
pub async fn write_projections(
    client: &Client,
    rollups_table: &str,
    failed_jobs_table: &str,
    projections: &Projections,
) -> Result<usize, TableIoError> {
    let rollups = to_items(rollups_table, projections.rollups.values())?;
    let entries = to_items(failed_jobs_table, projections.failed_jobs.values())?;
    Ok(batch_write(client, rollups_table, rollups).await?
        + batch_write(client, failed_jobs_table, entries).await?)
}

fn to_items<'a, T: Serialize + 'a>(
    table: &str,
    values: impl Iterator<Item = &'a T>,
) -> Result<Vec<Item>, TableIoError> {
    values
        .map(|v| serde_dynamo::to_item(v).map_err(|e| aws_error(table, "BatchWriteItem", e)))
        .collect()
}

/// Puts items in requests of at most [`MAX_BATCH_WRITE_ITEMS`]; returns the requests sent.
pub async fn batch_write(
    client: &Client,
    table: &str,
    items: Vec<Item>,
) -> Result<usize, TableIoError> {
    let mut requests = 0;
    for chunk in items.chunks(MAX_BATCH_WRITE_ITEMS) {
        let mut pending: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| aws_error(table, "BatchWriteItem", e))
            })
            .collect::<Result<_, _>>()?;
        for round in 0.. {
            requests += 1;
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| aws_error(table, "BatchWriteItem", e))?;
            match out.unprocessed_items.and_then(|mut u| u.remove(table)) {
                Some(rest) if !rest.is_empty() && round < MAX_UNPROCESSED_ROUNDS => {
                    tokio::time::sleep(Duration::from_millis(25 << round)).await;
                    pending = rest;
                }
                Some(rest) if !rest.is_empty() => {
                    let left = rest.len();
                    return Err(aws_error(
                        table,
                        "BatchWriteItem",
                        format!(
                            "{left} items still unprocessed after {MAX_UNPROCESSED_ROUNDS} rounds"
                        ),
                    ));
                }
                _ => break,
            }
        }
    }
    Ok(requests)
}

/// One difference between the stored projections and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub table: String,
    pub key: String,
    pub problem: DriftKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fields")]
pub enum DriftKind {
    /// The log implies this item; the table does not have it.
    Missing,
    /// The table has an item the log does not imply.
    Unexpected,
    /// Both have it; these attributes differ.
    Differs(Vec<String>),
    /// The stored item is not a valid projection.
    Unreadable(String),
}

/// Attributes of a stored failed-jobs entry that the retry dispatcher owns once it has
/// resubmitted the entry (it moves `next_retry_at` past the backoff): not drift.
pub fn dispatcher_owned(item: &Item) -> &'static [&'static str] {
    if item.contains_key("dispatched_at") {
        &["next_retry_at"]
    } else {
        &[]
    }
}

/// Attributes no other writer owns: everything is compared.
pub fn nothing_owned(_: &Item) -> &'static [&'static str] {
    &[]
}

/// Compares stored items with the expected projections, attribute by attribute, except those
/// `owned_elsewhere` says another writer legitimately changes.
pub fn compare<T: Serialize + serde::de::DeserializeOwned>(
    table: &str,
    key_attribute: &str,
    expected: &BTreeMap<String, T>,
    stored: Vec<Item>,
    owned_elsewhere: fn(&Item) -> &'static [&'static str],
) -> Vec<Drift> {
    let drift = |key: &str, problem| Drift {
        table: table.to_owned(),
        key: key.to_owned(),
        problem,
    };
    let mut found = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for item in stored {
        let key = key_text(&item, &[key_attribute]);
        seen.insert(key.clone());
        let Some(wanted) = expected.get(&key) else {
            found.push(drift(&key, DriftKind::Unexpected));
            continue;
        };
        let skipped = owned_elsewhere(&item);
        // Normalise both sides through the projection type, so attributes the type does not
        // own (e.g. a dispatcher's bookkeeping) are not drift, and encodings compare equal.
        let stored: T = match serde_dynamo::from_item(item) {
            Ok(stored) => stored,
            Err(e) => {
                found.push(drift(&key, DriftKind::Unreadable(error_chain(&e))));
                continue;
            }
        };
        let (Ok(ours), Ok(theirs)) = (serde_json::to_value(wanted), serde_json::to_value(&stored))
        else {
            continue;
        };
        let fields: Vec<String> = match (ours, theirs) {
            (serde_json::Value::Object(ours), serde_json::Value::Object(theirs)) => ours
                .keys()
                .chain(theirs.keys())
                .filter(|k| !skipped.contains(&k.as_str()) && ours.get(*k) != theirs.get(*k))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            (ours, theirs) if ours != theirs => vec!["(whole item)".to_owned()],
            _ => Vec::new(),
        };
        if !fields.is_empty() {
            found.push(drift(&key, DriftKind::Differs(fields)));
        }
    }
    for key in expected.keys().filter(|k| !seen.contains(*k)) {
        found.push(drift(key, DriftKind::Missing));
    }
    found
}

fn key_text(item: &Item, attributes: &[&str]) -> String {
    attributes
        .iter()
        .map(|a| match item.get(*a) {
            Some(AttributeValue::S(s)) => s.as_str(),
            _ => "?",
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct Row {
        id: String,
        value: u32,
    }

    fn item(id: &str, value: u32) -> Item {
        serde_dynamo::to_item(Row {
            id: id.to_owned(),
            value,
        })
        .unwrap()
    }

    #[test]
    fn compare_names_missing_unexpected_and_differing_items() {
        let expected = BTreeMap::from([
            (
                "a".to_owned(),
                Row {
                    id: "a".into(),
                    value: 1,
                },
            ),
            (
                "b".to_owned(),
                Row {
                    id: "b".into(),
                    value: 2,
                },
            ),
            (
                "c".to_owned(),
                Row {
                    id: "c".into(),
                    value: 3,
                },
            ),
        ]);
        let stored = vec![item("a", 1), item("b", 20), item("z", 9)];
        let mut drift = compare("t", "id", &expected, stored, nothing_owned);
        drift.sort_by(|x, y| x.key.cmp(&y.key));
        let problems: Vec<_> = drift.iter().map(|d| (d.key.as_str(), &d.problem)).collect();
        assert_eq!(
            problems,
            [
                ("b", &DriftKind::Differs(vec!["value".into()])),
                ("c", &DriftKind::Missing),
                ("z", &DriftKind::Unexpected),
            ]
        );
    }

    #[test]
    fn an_unreadable_stored_item_is_drift_not_a_panic() {
        let expected = BTreeMap::from([(
            "a".to_owned(),
            Row {
                id: "a".into(),
                value: 1,
            },
        )]);
        let mut broken = item("a", 1);
        broken.insert("value".into(), AttributeValue::S("one".into()));
        let drift = compare("t", "id", &expected, vec![broken], nothing_owned);
        assert!(matches!(drift[0].problem, DriftKind::Unreadable(_)));
    }

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct Entry {
        pk: String,
        next_retry_at: String,
    }

    #[test]
    fn a_dispatched_entrys_next_retry_at_belongs_to_the_dispatcher() {
        let entry = |at: &str| Entry {
            pk: "a".into(),
            next_retry_at: at.into(),
        };
        let expected = BTreeMap::from([("a".to_owned(), entry("01:15"))]);
        let mut moved: Item = serde_dynamo::to_item(entry("03:45")).unwrap();
        let not_dispatched = compare("t", "pk", &expected, vec![moved.clone()], dispatcher_owned);
        assert_eq!(
            not_dispatched[0].problem,
            DriftKind::Differs(vec!["next_retry_at".into()])
        );
        moved.insert("dispatched_at".into(), AttributeValue::S("03:30".into()));
        assert_eq!(
            compare("t", "pk", &expected, vec![moved], dispatcher_owned),
            []
        );
    }

    #[test]
    fn a_log_item_that_breaks_the_contract_is_set_aside() {
        let mut bad = Item::new();
        bad.insert("pk".into(), AttributeValue::S("x".into()));
        bad.insert("sk".into(), AttributeValue::S("y".into()));
        let contents = decode_log(vec![bad]);
        assert!(contents.events.is_empty());
        assert_eq!(contents.malformed[0].0, "x / y");
    }
}
