//! `pipetel consume`: reads the event log's stream with `aws-sdk-dynamodbstreams` and feeds the
//! records to the same [`StreamProcessor`] the Lambda runs, outside Lambda.
//!
//! Shards are read parents first (a child shard's records follow its parent's), closed shards are
//! finished and remembered, expired iterators are re-opened from the checkpoint. A checkpoint per
//! shard (the last sequence number fully applied) is kept in DynamoDB after every batch, so a
//! restarted consumer resumes where the last one stopped: a crash between applying a batch and
//! checkpointing it only re-applies that batch, which the idempotent projections and the alert
//! ledger absorb. Run one consumer per stream at a time; the checkpoint write fails loudly if
//! another consumer moved a shard's checkpoint meanwhile.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{Shard, ShardIteratorType};
use pipetel_model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::adapters::is_condition_failure;
use crate::decode::decode_record;
use crate::ports::{AlertSink, ProjectionStore};
use crate::processor::StreamProcessor;
use crate::streams::to_lambda_record;

/// Records one GetRecords call may return (a DynamoDB Streams limit).
pub const MAX_GET_RECORDS: i32 = 1000;
/// Attempts at a batch the processor could not fully apply, before the consumer gives up.
pub const MAX_BATCH_ATTEMPTS: u32 = 5;
/// Consecutive empty reads of an open shard after which it counts as caught up (DynamoDB Streams
/// may return an empty page before the shard's newest records).
const EMPTY_READS_TO_CATCH_UP: u32 = 2;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("DynamoDB Streams {operation} failed")]
    Streams {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("checkpoint table {table}: {operation} failed")]
    Checkpoint {
        table: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error(
        "shard {shard_id}: another consumer moved its checkpoint; run one consumer per stream"
    )]
    ConcurrentConsumer { shard_id: String },
    #[error("shard {shard_id}: record {sequence_number} still fails after {MAX_BATCH_ATTEMPTS} attempts (see the log for why)")]
    Stuck {
        shard_id: String,
        sequence_number: String,
    },
}

/// How far one shard has been applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub stream_arn: String,
    pub shard_id: String,
    /// The last record fully applied; `None`: nothing yet.
    pub sequence_number: Option<String>,
    /// The shard is closed and every record of it is applied.
    pub finished: bool,
}

/// Shard checkpoints in the `pipetel-checkpoints` table (key `stream_arn`, `shard_id`).
#[derive(Clone)]
pub struct CheckpointTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl CheckpointTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn error(&self, operation: &'static str, source: impl Into<BoxError>) -> ConsumeError {
        ConsumeError::Checkpoint {
            table: self.table.clone(),
            operation,
            source: source.into(),
        }
    }

    /// Every checkpoint of the stream, by shard.
    pub async fn load(
        &self,
        stream_arn: &str,
    ) -> Result<HashMap<String, Checkpoint>, ConsumeError> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("stream_arn = :arn")
            .expression_attribute_values(":arn", AttributeValue::S(stream_arn.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut checkpoints = HashMap::new();
        for item in pages {
            let item = item.map_err(|e| self.error("Query", e))?;
            let checkpoint: Checkpoint =
                serde_dynamo::from_item(item).map_err(|e| self.error("Query", e))?;
            checkpoints.insert(checkpoint.shard_id.clone(), checkpoint);
        }
        Ok(checkpoints)
    }

    /// Moves a shard's checkpoint from `previous` to `next`, only if it is still at `previous`.
    async fn advance(&self, previous: &Checkpoint, next: &Checkpoint) -> Result<(), ConsumeError> {
        let item = serde_dynamo::to_item(next).map_err(|e| self.error("PutItem", e))?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = match &previous.sequence_number {
            Some(sequence) => request
                .condition_expression("sequence_number = :previous")
                .expression_attribute_values(":previous", AttributeValue::S(sequence.clone())),
            None => request
                .condition_expression(
                    "attribute_not_exists(shard_id) OR attribute_type(sequence_number, :null)",
                )
                .expression_attribute_values(":null", AttributeValue::S("NULL".to_owned())),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Err(ConsumeError::ConcurrentConsumer {
                shard_id: next.shard_id.clone(),
            }),
            Err(err) => Err(self.error("PutItem", err)),
        }
    }
}

/// When a consumer run ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumeOptions {
    /// Stop once every shard is read to its end (for scripts and the demo).
    pub until_caught_up: bool,
    /// Stop after at least this many records (batch granularity).
    pub max_records: Option<usize>,
    /// Records per GetRecords call (at most [`MAX_GET_RECORDS`]).
    pub batch_size: Option<i32>,
}

impl ConsumeOptions {
    /// Read every shard to its end, then stop.
    pub const UNTIL_CAUGHT_UP: Self = Self {
        until_caught_up: true,
        max_records: None,
        batch_size: None,
    };
}

/// What a consumer run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsumeReport {
    pub records: usize,
    pub batches: usize,
    pub events: usize,
    pub removed: usize,
    pub malformed: usize,
    pub rollup_writes: usize,
    pub alerts_published: usize,
    pub shards_finished: usize,
    pub retried_batches: usize,
}

/// Where the consumer is in one shard.
struct Cursor {
    checkpoint: Checkpoint,
    iterator: Option<String>,
    empty_reads: u32,
}

pub struct StreamConsumer<'a, S, A> {
    streams: aws_sdk_dynamodbstreams::Client,
    checkpoints: CheckpointTable,
    stream_arn: String,
    processor: &'a StreamProcessor<S, A>,
    poll_interval: Duration,
}

impl<'a, S: ProjectionStore, A: AlertSink> StreamConsumer<'a, S, A> {
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        checkpoints: CheckpointTable,
        stream_arn: impl Into<String>,
        processor: &'a StreamProcessor<S, A>,
    ) -> Self {
        Self {
            streams,
            checkpoints,
            stream_arn: stream_arn.into(),
            processor,
            poll_interval: Duration::from_millis(500),
        }
    }

    fn streams_error(operation: &'static str, source: impl Into<BoxError>) -> ConsumeError {
        ConsumeError::Streams {
            operation,
            source: source.into(),
        }
    }

    /// Reads and applies the stream until `options` say stop (or forever).
    pub async fn run(&self, options: ConsumeOptions) -> Result<ConsumeReport, ConsumeError> {
        let mut report = ConsumeReport::default();
        let mut saved = self.checkpoints.load(&self.stream_arn).await?;
        let mut cursors: HashMap<String, Cursor> = HashMap::new();
        loop {
            let shards = self.shards().await?;
            let finished = |id: &str| {
                cursors
                    .get(id)
                    .map(|c| c.checkpoint.finished)
                    .or_else(|| saved.get(id).map(|c| c.finished))
                    .unwrap_or(false)
            };
            let lineage: Vec<(&str, Option<&str>)> = shards
                .iter()
                .filter_map(|s| Some((s.shard_id()?, s.parent_shard_id())))
                .collect();
            let ready: Vec<String> = readable_shards(&lineage, finished);

            let mut read_any = false;
            for shard_id in &ready {
                let cursor = cursors.entry(shard_id.clone()).or_insert_with(|| Cursor {
                    checkpoint: saved.remove(shard_id).unwrap_or_else(|| Checkpoint {
                        stream_arn: self.stream_arn.clone(),
                        shard_id: shard_id.clone(),
                        ..Checkpoint::default()
                    }),
                    iterator: None,
                    empty_reads: 0,
                });
                let batch_size = options.batch_size.unwrap_or(MAX_GET_RECORDS);
                read_any |= self.read_once(cursor, batch_size, &mut report).await?;
                if options.max_records.is_some_and(|max| report.records >= max) {
                    return Ok(report);
                }
            }
            let caught_up = ready.iter().all(|id| {
                cursors.get(id).is_none_or(|c| {
                    c.checkpoint.finished || c.empty_reads >= EMPTY_READS_TO_CATCH_UP
                })
            });
            if options.until_caught_up && caught_up {
                return Ok(report);
            }
            if !read_any {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }

    /// Every shard of the stream (DescribeStream is paginated by shard id).
    async fn shards(&self) -> Result<Vec<Shard>, ConsumeError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let description = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| Self::streams_error("DescribeStream", e))?
                .stream_description;
            let Some(description) = description else {
                return Ok(shards);
            };
            shards.extend(description.shards.unwrap_or_default());
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(shards),
            }
        }
    }

    /// An iterator just after the checkpoint (or at the shard's oldest record).
    async fn open(&self, checkpoint: &Checkpoint) -> Result<Option<String>, ConsumeError> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(&checkpoint.shard_id);
        let request = match &checkpoint.sequence_number {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(out) => Ok(out.shard_iterator),
            // The checkpoint is older than the stream's 24 h retention: what is left is read.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
            {
                tracing::warn!(shard_id = %checkpoint.shard_id, "checkpoint is past the stream's retention; reading from the oldest record left");
                let out = self
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&self.stream_arn)
                    .shard_id(&checkpoint.shard_id)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .map_err(|e| Self::streams_error("GetShardIterator", e))?;
                Ok(out.shard_iterator)
            }
            Err(err) => Err(Self::streams_error("GetShardIterator", err)),
        }
    }

    /// One GetRecords on a shard, applied and checkpointed. True if records were read.
    async fn read_once(
        &self,
        cursor: &mut Cursor,
        batch_size: i32,
        report: &mut ConsumeReport,
    ) -> Result<bool, ConsumeError> {
        let mut attempt = 0;
        loop {
            let iterator = match cursor.iterator.take() {
                Some(iterator) => iterator,
                None => match self.open(&cursor.checkpoint).await? {
                    Some(iterator) => iterator,
                    None => return self.finish(cursor, report).await.map(|()| false),
                },
            };
            let page = match self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(batch_size.clamp(1, MAX_GET_RECORDS))
                .send()
                .await
            {
                Ok(page) => page,
                // Iterators live 15 minutes: re-open from the checkpoint.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_expired_iterator_exception()) =>
                {
                    continue;
                }
                Err(err) => return Err(Self::streams_error("GetRecords", err)),
            };
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                cursor.empty_reads += 1;
                match page.next_shard_iterator {
                    Some(next) => cursor.iterator = Some(next),
                    None => self.finish(cursor, report).await?,
                }
                return Ok(false);
            }
            cursor.empty_reads = 0;
            let records: Vec<_> = records
                .into_iter()
                .map(|r| to_lambda_record(r, &self.stream_arn))
                .collect();
            let sequences: Vec<Option<String>> = records
                .iter()
                .map(|r| r.change.sequence_number.clone())
                .collect();
            let decoded = records.into_iter().map(decode_record).collect();
            let batch = self
                .processor
                .process(decoded, Timestamp::from_datetime(chrono::Utc::now()))
                .await;
            report.batches += 1;
            let applied = match &batch.first_failed_sequence {
                None => sequences.len(),
                Some(failed) => sequences
                    .iter()
                    .position(|s| s.as_ref() == Some(failed))
                    .unwrap_or(0),
            };
            // Checkpoint the last record before the first failure (all of them on success).
            if let Some(Some(last)) = sequences[..applied].last() {
                let next = Checkpoint {
                    sequence_number: Some(last.clone()),
                    ..cursor.checkpoint.clone()
                };
                self.checkpoints.advance(&cursor.checkpoint, &next).await?;
                cursor.checkpoint = next;
            }
            report.records += applied;
            report.events += batch.events;
            report.removed += batch.removed;
            report.malformed += batch.malformed;
            report.rollup_writes += batch.rollup_writes;
            report.alerts_published += batch.alerts_published;
            match batch.first_failed_sequence {
                None => {
                    match page.next_shard_iterator {
                        Some(next) => cursor.iterator = Some(next),
                        None => self.finish(cursor, report).await?,
                    }
                    return Ok(true);
                }
                Some(failed) => {
                    attempt += 1;
                    report.retried_batches += 1;
                    tracing::warn!(shard_id = %cursor.checkpoint.shard_id, sequence_number = %failed, attempt, "batch not fully applied; retrying from the first failed record");
                    if attempt == MAX_BATCH_ATTEMPTS {
                        return Err(ConsumeError::Stuck {
                            shard_id: cursor.checkpoint.shard_id.clone(),
                            sequence_number: failed,
                        });
                    }
                    tokio::time::sleep(self.poll_interval * 2u32.pow(attempt - 1)).await;
                }
            }
        }
    }

    /// Marks a closed shard, fully applied, as finished.
    async fn finish(
        &self,
        cursor: &mut Cursor,
        report: &mut ConsumeReport,
    ) -> Result<(), ConsumeError> {
        let next = Checkpoint {
            finished: true,
            ..cursor.checkpoint.clone()
        };
        self.checkpoints.advance(&cursor.checkpoint, &next).await?;
        cursor.checkpoint = next;
        report.shards_finished += 1;
        tracing::info!(shard_id = %cursor.checkpoint.shard_id, "shard closed and fully applied");
        Ok(())
    }
}

/// The shards to read now, given (shard, parent) pairs: unfinished shards whose parent is
/// finished or no longer in the stream (trimmed after 24 h), so a child's records always follow
/// its parent's.
fn readable_shards(
    lineage: &[(&str, Option<&str>)],
    finished: impl Fn(&str) -> bool,
) -> Vec<String> {
    let listed: HashSet<&str> = lineage.iter().map(|(id, _)| *id).collect();
    lineage
        .iter()
        .filter(|(id, parent)| {
            !finished(id) && parent.is_none_or(|p| !listed.contains(p) || finished(p))
        })
        .map(|(id, _)| (*id).to_owned())
        .collect()
}

/// The table's current stream, for commands that only know the table.
pub async fn stream_arn_of(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<String, ConsumeError> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| ConsumeError::Streams {
            operation: "DescribeTable",
            source: e.into(),
        })?
        .table
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| ConsumeError::Streams {
            operation: "DescribeTable",
            source: format!("table {table} has no stream enabled").into(),
        })
}

#[cfg(test)]
mod tests {
    use super::readable_shards;

    #[test]
    fn children_wait_for_their_parent_and_orphans_are_read() {
        // root split into a and b; b split into c. "gone" was trimmed from the stream.
        let lineage = [
            ("root", None),
            ("a", Some("root")),
            ("b", Some("root")),
            ("c", Some("b")),
            ("orphan", Some("gone")),
        ];
        let ready = |done: &[&str]| readable_shards(&lineage, |id| done.contains(&id));
        assert_eq!(ready(&[]), ["root", "orphan"]);
        assert_eq!(ready(&["root"]), ["a", "b", "orphan"]);
        assert_eq!(ready(&["root", "b", "orphan"]), ["a", "c"]);
        assert!(ready(&["root", "a", "b", "c", "orphan"]).is_empty());
    }
}
