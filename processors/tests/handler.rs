//! The Lambda handler fed real DynamoDB Streams event JSON (fixtures under `tests/fixtures/`),
//! projected into the in-memory adapters.

use std::collections::BTreeMap;

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use pipetel_model::{EventError, FailedJob, JobRollup, JobStatus, RetryState, SlaRules, Timestamp};
use pipetel_processors::adapters::memory::{MemoryAlerts, MemoryStore};
use pipetel_processors::decode::{decode_raw, Change, DecodeError, StreamBatch};
use pipetel_processors::handler::process_batch;
use pipetel_processors::processor::{BatchReport, StreamProcessor};
use serde_json::value::RawValue;

type Processor = StreamProcessor<MemoryStore, MemoryAlerts>;
type Projections = (BTreeMap<String, JobRollup>, BTreeMap<String, FailedJob>);

const AWS_DOCS: &str = "aws-docs-sample.json";
const DAY: &str = "day-of-sales.json";
const POISON: &str = "poison-in-middle.json";

/// Thresholds no job of the fixtures comes near.
const GENEROUS_RULES: &str = r#"
[defaults]
expected_stages = ["extract", "clean", "convert", "merge"]
max_job_duration = "2h"
deadline = { at = "06:00", days_after = 1 }

[defaults.max_stage_duration]
extract = "30m"
clean = "20m"
convert = "30m"
merge = "20m"
"#;

/// Thresholds that `day-of-sales.json` breaches five times.
const TIGHT_RULES: &str = r#"
[defaults]
expected_stages = ["extract", "clean", "convert", "merge"]
max_job_duration = "1h"

[defaults.max_stage_duration]
clean = "1m"
convert = "5m"
"#;

fn processor(rules: &str) -> Processor {
    let rules = SlaRules::from_toml(rules).expect("test SLA rules parse");
    StreamProcessor::new(MemoryStore::default(), MemoryAlerts::default(), rules)
}

fn load(name: &str) -> StreamBatch {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse("test", text).expect("test timestamp")
}

fn failures(response: &DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| {
            f.item_identifier
                .clone()
                .expect("a failure names its record")
        })
        .collect()
}

fn projections(processor: &Processor) -> Projections {
    (processor.store().rollups(), processor.store().failed_jobs())
}

/// Counters of a batch, through `process` rather than the handler.
async fn report_of(processor: &Processor, records: &[Box<RawValue>]) -> BatchReport {
    let decoded = records.iter().map(|raw| decode_raw(raw)).collect();
    processor.process(decoded, ts("2026-06-25T12:00:00Z")).await
}

/// Projects these records, in this order, on a fresh processor; a clean run is asserted.
async fn project(records: Vec<Box<RawValue>>) -> Projections {
    let processor = processor(GENEROUS_RULES);
    let response = process_batch(&processor, StreamBatch { records }).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    projections(&processor)
}

fn field(raw: &RawValue, path: &[&str]) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    for key in path {
        value = value.get(*key)?.clone();
    }
    value.as_str().map(str::to_owned)
}

/// (lane, status, started_at, finished_at, duration_seconds, attempts, distinct events).
type StageRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    u32,
    usize,
);

fn stage_rows(rollup: &JobRollup) -> Vec<StageRow> {
    rollup
        .stages
        .iter()
        .map(|(lane, s)| {
            (
                lane.clone(),
                s.status.as_str().to_owned(),
                s.started_at.map(|t| t.to_string()),
                s.finished_at.map(|t| t.to_string()),
                s.duration_seconds,
                s.attempts,
                s.events.len(),
            )
        })
        .collect()
}

fn row(
    lane: &str,
    status: &str,
    started: &str,
    finished: &str,
    duration: i64,
    attempts: u32,
    events: usize,
) -> StageRow {
    (
        lane.to_owned(),
        status.to_owned(),
        Some(started.to_owned()),
        Some(finished.to_owned()),
        Some(duration),
        attempts,
        events,
    )
}

/// A deterministic Fisher-Yates shuffle (xorshift64), so a failure is reproducible.
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
    items
}

#[tokio::test]
async fn aws_docs_sample_is_set_aside_without_writes_or_failures() {
    let processor = processor(GENEROUS_RULES);
    let response = process_batch(&processor, load(AWS_DOCS)).await;

    assert_eq!(failures(&response), Vec::<String>::new());
    assert!(processor.store().rollups().is_empty());
    assert!(processor.store().failed_jobs().is_empty());
    assert!(processor.alerts().published().is_empty());
    assert_eq!(processor.store().requests.writes(), 0);

    let records = load(AWS_DOCS).records;
    let report = report_of(&self::processor(GENEROUS_RULES), &records).await;
    assert_eq!(
        (
            report.records,
            report.events,
            report.malformed,
            report.removed,
            report.jobs
        ),
        (3, 0, 2, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.first_failed_sequence, None);
    // INSERT and MODIFY carry a NewImage that is not a stage event item; REMOVE is ignored.
    let changes: Vec<_> = records.iter().map(|r| decode_raw(r).change).collect();
    assert!(matches!(
        changes[0],
        Change::Malformed(DecodeError::Item(_))
    ));
    assert!(matches!(
        changes[1],
        Change::Malformed(DecodeError::Item(_))
    ));
    assert!(matches!(changes[2], Change::Removed));
}

#[tokio::test]
async fn day_of_sales_projects_exact_rollups_and_resolves_the_retried_failure() {
    let processor = processor(GENEROUS_RULES);
    let response = process_batch(&processor, load(DAY)).await;
    assert_eq!(failures(&response), Vec::<String>::new());

    let rollups = processor.store().rollups();
    assert_eq!(
        rollups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["orders#20260625", "sales#20260625"],
        "the REMOVE of a 20260526 item must not create a rollup"
    );

    let sales = &rollups["sales#20260625"];
    assert_eq!(sales.source.as_str(), "sales");
    assert_eq!(sales.run_date.to_string(), "20260625");
    assert_eq!(sales.status, JobStatus::Succeeded);
    assert_eq!(sales.started_at, Some(ts("2026-06-25T01:00:00Z")));
    assert_eq!(sales.finished_at, Some(ts("2026-06-25T02:00:50Z")));
    assert_eq!(sales.duration_seconds, Some(3650));
    assert_eq!(sales.last_event_at, ts("2026-06-25T02:00:50Z"));
    assert_eq!(sales.updated_at, ts("2026-06-25T02:00:50Z"));
    assert_eq!(sales.event_count, 12);
    assert_eq!(
        stage_rows(sales),
        vec![
            row(
                "eu#clean",
                "DONE",
                "2026-06-25T01:30:00Z",
                "2026-06-25T01:38:20Z",
                500,
                2,
                4
            ),
            row(
                "eu#convert",
                "DONE",
                "2026-06-25T01:38:30Z",
                "2026-06-25T01:50:30Z",
                720,
                1,
                2
            ),
            row(
                "eu#extract",
                "DONE",
                "2026-06-25T01:00:05Z",
                "2026-06-25T01:10:05Z",
                600,
                1,
                2
            ),
            row(
                "eu#merge",
                "DONE",
                "2026-06-25T01:50:40Z",
                "2026-06-25T02:00:40Z",
                600,
                1,
                2
            ),
            row(
                "job",
                "SUCCEEDED",
                "2026-06-25T01:00:00Z",
                "2026-06-25T02:00:50Z",
                3650,
                1,
                2
            ),
        ]
    );
    let clean = &sales.stages["eu#clean"];
    assert_eq!(clean.category.as_ref().map(|c| c.as_str()), Some("eu"));
    assert_eq!(
        clean.error_summary, None,
        "the retry's DONE is the latest event"
    );
    assert_eq!(
        clean.file_fingerprint.as_deref(),
        Some("sha256:7b2a2ae96aa8560948991cd2fcdb942fd2c1a2b254e268ede83886d348843621")
    );
    let last_failure = clean.last_failure.as_ref().expect("clean failed once");
    assert_eq!(last_failure.at, ts("2026-06-25T01:15:10Z"));
    assert_eq!(
        last_failure.error_summary.as_deref(),
        Some("SchemaError: column 'net_amount' has 12 null values")
    );

    let orders = &rollups["orders#20260625"];
    assert_eq!(
        orders.status,
        JobStatus::Succeeded,
        "all expected stages DONE"
    );
    assert_eq!(orders.started_at, Some(ts("2026-06-25T01:05:00Z")));
    assert_eq!(orders.finished_at, Some(ts("2026-06-25T01:55:30Z")));
    assert_eq!(orders.duration_seconds, Some(3030));
    assert_eq!(orders.last_event_at, ts("2026-06-25T01:55:30Z"));
    assert_eq!(
        orders.event_count, 8,
        "the MODIFY re-puts an event already counted"
    );
    assert_eq!(
        stage_rows(orders),
        vec![
            row(
                "clean",
                "DONE",
                "2026-06-25T01:20:10Z",
                "2026-06-25T01:32:10Z",
                720,
                1,
                2
            ),
            row(
                "convert",
                "DONE",
                "2026-06-25T01:32:20Z",
                "2026-06-25T01:45:20Z",
                780,
                1,
                2
            ),
            row(
                "extract",
                "DONE",
                "2026-06-25T01:05:00Z",
                "2026-06-25T01:20:00Z",
                900,
                1,
                2
            ),
            row(
                "merge",
                "DONE",
                "2026-06-25T01:45:30Z",
                "2026-06-25T01:55:30Z",
                600,
                1,
                2
            ),
        ]
    );
    assert_eq!(orders.stages["extract"].category, None);
    assert_eq!(
        orders.stages["extract"].file_fingerprint.as_deref(),
        Some("sha256:832ae782c7f5ba19d32cc5dc8dd1505b993575661497337e8d1760f81f872b9e"),
        "the item with an unknown and a binary attribute is applied"
    );
    assert_eq!(
        orders.stages["convert"].file_fingerprint.as_deref(),
        Some("sha256:f89b4b9c5f0f801da42ca40908bfab1de48a6c4ce9d92784c2aec7fdefdc5271"),
        "the MODIFY's NewImage is taken as the event"
    );

    let failed = processor.store().failed_jobs();
    assert_eq!(
        failed.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sales#eu#clean#20260625"]
    );
    let entry = &failed["sales#eu#clean#20260625"];
    assert_eq!(entry.job_id, "sales#20260625");
    assert_eq!(entry.source.as_str(), "sales");
    assert_eq!(entry.category.as_ref().map(|c| c.as_str()), Some("eu"));
    assert_eq!(entry.stage.as_str(), "clean");
    assert_eq!(entry.run_date.to_string(), "20260625");
    assert_eq!(entry.failed_at, ts("2026-06-25T01:15:10Z"));
    assert_eq!(
        entry.error_summary.as_deref(),
        Some("SchemaError: column 'net_amount' has 12 null values")
    );
    let details = entry.error_details.as_deref().expect("error_details kept");
    assert!(details.starts_with("Traceback (most recent call last):\n"));
    assert!(details.ends_with("part-0003.parquet)"));
    assert_eq!(entry.failure_count, 1);
    assert_eq!(entry.retry_state, RetryState::Resolved);
    assert_eq!(entry.next_retry_at, None);
    assert_eq!(
        entry.ttl,
        ts("2026-06-25T01:15:10Z").epoch_seconds() + 30 * 86_400
    );

    assert!(processor.alerts().published().is_empty());

    let report = report_of(&self::processor(GENEROUS_RULES), &load(DAY).records).await;
    assert_eq!(
        (
            report.records,
            report.events,
            report.removed,
            report.malformed,
            report.jobs
        ),
        (22, 21, 1, 0, 2),
        "integer and fractional ApproximateCreationDateTime both decode: {report:?}"
    );
    assert_eq!(report.first_failed_sequence, None);
}

#[tokio::test]
async fn poison_records_in_the_middle_are_set_aside_and_the_rest_applied() {
    let processor = processor(GENEROUS_RULES);
    let response = process_batch(&processor, load(POISON)).await;
    assert_eq!(failures(&response), Vec::<String>::new());

    let rollups = processor.store().rollups();
    assert_eq!(
        rollups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["inventory#20260625"]
    );
    let job = &rollups["inventory#20260625"];
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.started_at, Some(ts("2026-06-25T03:00:00Z")));
    assert_eq!(job.finished_at, Some(ts("2026-06-25T03:25:40Z")));
    assert_eq!(job.event_count, 10);
    assert_eq!(
        stage_rows(job),
        vec![
            row(
                "de#clean",
                "DONE",
                "2026-06-25T03:06:10Z",
                "2026-06-25T03:12:10Z",
                360,
                1,
                2
            ),
            row(
                "de#convert",
                "DONE",
                "2026-06-25T03:12:20Z",
                "2026-06-25T03:20:20Z",
                480,
                1,
                2
            ),
            row(
                "de#extract",
                "DONE",
                "2026-06-25T03:00:05Z",
                "2026-06-25T03:06:05Z",
                360,
                1,
                2
            ),
            row(
                "de#merge",
                "DONE",
                "2026-06-25T03:20:30Z",
                "2026-06-25T03:25:30Z",
                300,
                1,
                2
            ),
            row(
                "job",
                "SUCCEEDED",
                "2026-06-25T03:00:00Z",
                "2026-06-25T03:25:40Z",
                1540,
                1,
                2
            ),
        ]
    );
    assert_eq!(
        job.stages["de#clean"].events,
        ["2026-06-25T03:06:10Z#RUNNING", "2026-06-25T03:12:10Z#DONE"],
        "no poison event slipped into the lane"
    );
    assert!(processor.store().failed_jobs().is_empty());

    let records = load(POISON).records;
    let report = report_of(&self::processor(GENEROUS_RULES), &records).await;
    assert_eq!(report.malformed, 6, "{report:?}");
    assert_eq!(
        (report.records, report.events, report.removed, report.jobs),
        (16, 10, 0, 1)
    );
    assert_eq!(report.first_failed_sequence, None);

    // Each poison record is set aside for its own reason.
    let reasons: Vec<Change> = records[3..9].iter().map(|r| decode_raw(r).change).collect();
    let invalid = |i: usize| match &reasons[i] {
        Change::Malformed(DecodeError::Invalid(err)) => err.clone(),
        other => panic!("record {}: {other:?}", i + 3),
    };
    assert!(
        matches!(reasons[0], Change::Malformed(DecodeError::Item(_))),
        "{:?}",
        reasons[0]
    );
    assert!(matches!(invalid(1), EventError::InvalidRunDate { value } if value == "20230229"));
    assert!(matches!(
        invalid(2),
        EventError::InvalidName {
            field: "source",
            ..
        }
    ));
    assert!(matches!(
        invalid(3),
        EventError::KeyMismatch { field: "pk", .. }
    ));
    assert!(matches!(invalid(4), EventError::InvalidStatus { stage, .. } if stage == "job"));
    assert!(
        matches!(
            reasons[5],
            Change::Malformed(DecodeError::MissingNewImage { .. })
        ),
        "{:?}",
        reasons[5]
    );
}

#[tokio::test]
async fn redelivery_and_replay_change_nothing_and_alert_once_per_breach() {
    let processor = processor(TIGHT_RULES);
    let mut snapshots = Vec::new();
    for pass in 0..3 {
        let mut batch = load(DAY);
        if pass == 2 {
            batch.records.reverse();
        }
        let response = process_batch(&processor, batch).await;
        assert_eq!(failures(&response), Vec::<String>::new(), "pass {pass}");
        snapshots.push(projections(&processor));
    }
    assert_eq!(snapshots[0].0.len(), 2);
    assert_eq!(snapshots[1], snapshots[0], "second delivery");
    assert_eq!(snapshots[2], snapshots[0], "reversed replay");

    let mut per_alert: BTreeMap<String, usize> = BTreeMap::new();
    for message in processor.alerts().published() {
        *per_alert.entry(message.alert_id).or_default() += 1;
    }
    assert_eq!(
        per_alert.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "orders#20260625#STAGE_DURATION:clean",
            "orders#20260625#STAGE_DURATION:convert",
            "sales#20260625#JOB_DURATION",
            "sales#20260625#STAGE_DURATION:eu/clean",
            "sales#20260625#STAGE_DURATION:eu/convert",
        ]
    );
    assert!(per_alert.values().all(|&n| n == 1), "{per_alert:?}");
}

#[tokio::test]
async fn a_failed_job_is_retried_from_its_first_record_and_converges() {
    let clean = project(load(DAY).records).await;

    let processor = processor(GENEROUS_RULES);
    processor.store().fail_writes_of("orders#20260625");
    let records = load(DAY).records;
    let first_orders = records
        .iter()
        .position(|r| {
            field(r, &["dynamodb", "NewImage", "job_id", "S"]).as_deref() == Some("orders#20260625")
        })
        .expect("orders appears in the batch");
    let first_sales = records
        .iter()
        .position(|r| {
            field(r, &["dynamodb", "NewImage", "job_id", "S"]).as_deref() == Some("sales#20260625")
        })
        .expect("sales appears in the batch");
    assert!(
        first_sales < first_orders,
        "sales is the first job of the batch"
    );
    let retry_from = field(&records[first_orders], &["dynamodb", "SequenceNumber"]).unwrap();

    let response = process_batch(
        &processor,
        StreamBatch {
            records: records.clone(),
        },
    )
    .await;
    assert_eq!(failures(&response), [retry_from]);

    let (rollups, failed_jobs) = projections(&processor);
    assert_eq!(
        rollups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sales#20260625"]
    );
    assert_eq!(
        rollups["sales#20260625"], clean.0["sales#20260625"],
        "the job before the failure is fully applied"
    );
    assert_eq!(failed_jobs, clean.1, "its retry-queue entry too");

    processor.store().heal();
    let retry = StreamBatch {
        records: records[first_orders..].to_vec(),
    };
    let response = process_batch(&processor, retry).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(projections(&processor), clean);
}

#[tokio::test]
async fn any_arrival_order_gives_the_same_projections() {
    let records = load(DAY).records;
    let in_order = project(records.clone()).await;
    assert_eq!(in_order.0.len(), 2);
    assert_eq!(in_order.1.len(), 1);

    let mut reversed = records.clone();
    reversed.reverse();
    assert_eq!(project(reversed).await, in_order, "reversed");

    let sequence = |rs: &[Box<RawValue>]| -> Vec<String> {
        rs.iter()
            .map(|r| field(r, &["dynamodb", "SequenceNumber"]).unwrap())
            .collect()
    };
    for seed in 1..=8 {
        let order = shuffled(records.clone(), seed);
        assert_ne!(sequence(&order), sequence(&records), "seed {seed} shuffles");
        assert_eq!(project(order).await, in_order, "shuffle seed {seed}");
    }
}

#[tokio::test]
async fn an_empty_batch_gets_an_empty_response() {
    let processor = processor(GENEROUS_RULES);
    let batch: StreamBatch = serde_json::from_str(r#"{"Records":[]}"#).unwrap();
    let response = process_batch(&processor, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(processor.store().rollups().is_empty());
    assert_eq!(processor.store().requests.reads(), 0);
    assert_eq!(processor.store().requests.writes(), 0);
}
