//! One pass of a Lambda event through the processor, in process, against the in-memory store:
//! exactly the handler's path (parse the event, decode and validate each record, then `process`:
//! group and fold per job, derive the projections and alerts, issue the writes), timed by phase,
//! with the requests counted. The fold alone is timed on the side, for the decode + fold figure.

use std::time::{Duration, Instant};

use crate::adapters::memory::{MemoryAlerts, MemoryStore};
use crate::decode::{decode_raw, Change, DecodedRecord, StreamBatch};
use crate::processor::{BatchReport, StreamProcessor};
use pipetel_model::{fold_by_job, SlaRules, Timestamp};

/// What one pass did and how long each phase took.
#[derive(Debug, Clone)]
pub struct Pass {
    /// Parsing the event JSON, decoding and validating every record.
    pub decode: Duration,
    /// Folding the decoded events per job (`fold_by_job`), on the side: `process` folds again.
    pub fold: Duration,
    /// Grouping and folding per job, deriving projections and alerts, issuing the writes.
    pub project: Duration,
    pub report: BatchReport,
    /// Projection store requests: one `BatchGetItem`, then puts.
    pub reads: usize,
    /// Alerts raised (each a conditional claim in the ledger, then a publish).
    pub alert_writes: usize,
}

impl Pass {
    /// The handler's whole path: decode, then `process`.
    pub fn total(&self) -> Duration {
        self.decode + self.project
    }

    pub fn decode_and_fold(&self) -> Duration {
        self.decode + self.fold
    }

    /// Rollup and retry-queue puts plus alert claims: the writes the batch issues.
    pub fn writes(&self) -> usize {
        self.report.rollup_writes + self.report.failed_job_writes + self.alert_writes
    }
}

/// Runs `event` (Lambda event JSON) through a processor with empty in-memory projections.
pub async fn pass(event: &[u8], rules: &SlaRules, wall_clock: Timestamp) -> Pass {
    let processor = StreamProcessor::new(
        MemoryStore::default(),
        MemoryAlerts::default(),
        rules.clone(),
    );
    let started = Instant::now();
    let batch: StreamBatch =
        serde_json::from_slice(event).expect("a Lambda DynamoDB Streams event");
    let records: Vec<DecodedRecord> = batch.records.iter().map(|raw| decode_raw(raw)).collect();
    let decoded = Instant::now();

    let folding = Instant::now();
    let jobs = fold_by_job(records.iter().filter_map(|record| match &record.change {
        Change::Event(event) => Some(&**event),
        _ => None,
    }));
    let fold = folding.elapsed();
    drop(jobs);

    let projecting = Instant::now();
    let report = processor.process(records, wall_clock).await;
    // Freeing the event is part of the invocation too.
    drop(batch);
    let projected = Instant::now();
    Pass {
        decode: decoded - started,
        fold,
        project: projected - projecting,
        report,
        reads: processor.store().requests.reads(),
        alert_writes: processor.alerts().requests.writes(),
    }
}
