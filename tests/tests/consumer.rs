//! `pipetel consume` against moto: the table's real stream read with aws-sdk-dynamodbstreams,
//! shard checkpoints in DynamoDB, a consumer that dies mid-stream and a new one that resumes;
//! and events from a plain boto3 writer projected exactly like the Rust logger's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pipetel_model::{SlaRules, StageEvent, Status, DEFAULT_RULES_TOML};
use pipetel_processors::consumer::{
    stream_arn_of, CheckpointTable, ConsumeError, ConsumeOptions, StreamConsumer,
};
use pipetel_processors::logger::{Logged, PipelineLogger};
use pipetel_processors::replay::Projections;
use pipetel_processors::tables::{create_tables, TableNames};
use pipetel_tests::scenario::{day, event};
use pipetel_tests::{OnRequest, Stack, EVENTS_TABLE};

const CHECKPOINTS_TABLE: &str = "pipetel-checkpoints";

fn rules() -> SlaRules {
    SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap()
}

/// The realistic day plus nine more sources, each failing once: 32 events, 11 jobs, alerts.
fn busy_day() -> Vec<StageEvent> {
    let mut events = day();
    for n in 0..9 {
        let source = format!("feed{n}");
        events.push(event(&source, "extract", Status::Running, "04:00:00"));
        events.push(
            event(&source, "extract", Status::Failed, "04:45:00").with_error("timeout", None),
        );
    }
    events
}

fn alert_counts(alerts: &[pipetel_model::AlertMessage]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for alert in alerts {
        *counts.entry(alert.alert_id.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_consumer_that_dies_mid_stream_is_resumed_without_loss_or_duplicate_alerts() {
    let stack = Stack::start().await;
    let events = busy_day();
    stack.write_events(&events).await;
    let batch_size = 5;

    // The first consumer applies batches but dies on its 3rd checkpoint write, after applying
    // that batch: the worst moment, since the batch is done but not recorded.
    let checkpoint_writes = Arc::new(AtomicUsize::new(0));
    let writes = checkpoint_writes.clone();
    let dying = stack.dynamodb_with(OnRequest::new(move |operation, body| {
        if operation == "PutItem" && body.contains(CHECKPOINTS_TABLE) {
            let n = writes.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 {
                return Err("injected: the consumer's host died".into());
            }
        }
        Ok(())
    }));
    let first = stack.processor(stack.dynamodb.clone(), rules());
    let consumer = StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(dying, CHECKPOINTS_TABLE),
        &stack.stream_arn,
        &first,
    );
    let options = ConsumeOptions {
        until_caught_up: true,
        batch_size: Some(batch_size),
        ..ConsumeOptions::default()
    };
    let err = consumer.run(options).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Checkpoint { .. }), "{err:?}");
    let alerts_before = stack.received_alerts().await;

    // A new consumer (new process, new processor) resumes from the stored checkpoints.
    let second = stack.processor(stack.dynamodb.clone(), rules());
    let report = StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(stack.dynamodb.clone(), CHECKPOINTS_TABLE),
        &stack.stream_arn,
        &second,
    )
    .run(options)
    .await
    .unwrap();
    // Two batches were checkpointed; the third was applied but not recorded, so it is the only
    // one read again.
    assert_eq!(report.records, events.len() - 2 * batch_size as usize);

    let expected = Projections::derive(&events, &rules());
    assert_eq!(
        stack.rollups().await,
        expected.rollups.into_values().collect::<Vec<_>>()
    );
    assert_eq!(
        stack.failed_jobs().await,
        expected.failed_jobs.into_values().collect::<Vec<_>>()
    );

    let mut alerts = alerts_before;
    alerts.extend(stack.received_alerts().await);
    let counts = alert_counts(&alerts);
    assert!(
        counts.contains_key("sales#20260625#STAGE_DURATION:eu/convert"),
        "{counts:?}"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "each alert exactly once: {counts:?}"
    );

    // A third run finds nothing new.
    let idle = StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(stack.dynamodb.clone(), CHECKPOINTS_TABLE),
        &stack.stream_arn,
        &second,
    )
    .run(options)
    .await
    .unwrap();
    assert_eq!(idle.records, 0);
}

#[tokio::test]
async fn two_consumers_on_one_stream_cannot_both_move_a_checkpoint() {
    let stack = Stack::start().await;
    stack.write_events(&day()).await;
    let processor = stack.processor(stack.dynamodb.clone(), rules());
    let consumer = || {
        StreamConsumer::new(
            stack.streams.clone(),
            CheckpointTable::new(stack.dynamodb.clone(), CHECKPOINTS_TABLE),
            &stack.stream_arn,
            &processor,
        )
    };
    let options = ConsumeOptions {
        max_records: Some(2),
        batch_size: Some(2),
        ..ConsumeOptions::default()
    };
    // Both load the same (empty) checkpoints, apply the same first batch, and race to record it.
    let (a, b) = (consumer(), consumer());
    let (a, b) = tokio::join!(a.run(options), b.run(options));
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(ConsumeError::ConcurrentConsumer { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
}

/// The contract from Python: what a data engineer's boto3 step would write.
const BOTO3_WRITER: &str = r##"
import json, os, sys
import boto3

table = boto3.resource("dynamodb", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1").Table(sys.argv[1])
for e in json.load(sys.stdin):
    pk_parts = [e["source"]] + ([e["category"]] if e.get("category") else []) + [e["stage"], e["run_date"]]
    table.put_item(
        Item={
            "pk": "#".join(pk_parts),
            "sk": f'{e["timestamp"]}#{e["status"]}',
            "job_id": f'{e["source"]}#{e["run_date"]}',
            "source": e["source"],
            "category": e.get("category"),
            "stage": e["stage"],
            "run_date": e["run_date"],
            "status": e["status"],
            "timestamp": e["timestamp"],
            "file_fingerprint": e.get("file_fingerprint"),
            "error_summary": (e.get("error_summary") or None) and e["error_summary"][:500],
            "error_details": (e.get("error_details") or None) and e["error_details"][:1000],
        }
        | {k: e[k] for k in ("execution_id", "attempt", "ttl") if e.get(k) is not None},
        ConditionExpression="attribute_not_exists(pk)",
    )
"##;

#[tokio::test]
async fn events_from_a_plain_boto3_writer_are_projected_like_the_loggers() {
    let stack = Stack::start().await;
    let boto3 = TableNames::with_prefix("boto3-");
    create_tables(&stack.dynamodb, &boto3.prefix).await.unwrap();
    let events = day();

    // The Rust side: PipelineLogger, one logger per run, events logged twice (idempotent).
    for event in &events {
        let logger = PipelineLogger::new(
            stack.dynamodb.clone(),
            EVENTS_TABLE,
            event.source().as_str(),
            event.category().map(|c| c.as_str()),
            &event.run_date().to_string(),
        )
        .unwrap();
        assert_eq!(logger.log(event.clone()).await.unwrap(), Logged::Written);
        assert_eq!(
            logger.log(event.clone()).await.unwrap(),
            Logged::AlreadyLogged
        );
    }

    // The Python side: the same events as plain JSON, written by boto3 from the project's venv.
    let plain: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e.to_item()).unwrap())
        .collect();
    let mut python =
        std::process::Command::new(pipetel_processors::local::repo_root().join(".venv/bin/python"))
            .args(["-c", BOTO3_WRITER, &boto3.events])
            .env("ENDPOINT", &stack.moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    serde_json::to_writer(python.stdin.take().unwrap(), &plain).unwrap();
    assert!(python.wait().unwrap().success(), "the boto3 writer failed");

    // Both logs hold identical items.
    let scan = |table: String, key: &'static str| {
        let client = stack.dynamodb.clone();
        async move {
            let mut items = client
                .scan()
                .table_name(table)
                .send()
                .await
                .unwrap()
                .items
                .unwrap();
            items.sort_by_key(|i| format!("{:?}{:?}", i.get(key), i.get("sk")));
            items
        }
    };
    assert_eq!(
        scan(EVENTS_TABLE.to_owned(), "pk").await,
        scan(boto3.events.clone(), "pk").await
    );

    // Both streams, consumed into their own projections, give the same result.
    let options = ConsumeOptions::UNTIL_CAUGHT_UP;
    let rust_side = stack.processor(stack.dynamodb.clone(), rules());
    StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(stack.dynamodb.clone(), CHECKPOINTS_TABLE),
        &stack.stream_arn,
        &rust_side,
    )
    .run(options)
    .await
    .unwrap();
    let python_side = pipetel_processors::processor::StreamProcessor::new(
        pipetel_processors::adapters::DynamoProjectionStore::new(
            stack.dynamodb.clone(),
            &boto3.rollups,
            &boto3.failed_jobs,
        ),
        pipetel_processors::adapters::SnsAlertSink::new(
            stack.dynamodb.clone(),
            stack.sns.clone(),
            &boto3.alerts,
            &stack.topic_arn,
        ),
        rules(),
    );
    let report = StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(stack.dynamodb.clone(), &boto3.checkpoints),
        stream_arn_of(&stack.dynamodb, &boto3.events).await.unwrap(),
        &python_side,
    )
    .run(options)
    .await
    .unwrap();
    assert_eq!((report.events, report.malformed), (events.len(), 0));
    assert_eq!(
        scan(boto3.rollups.clone(), "job_id").await,
        scan("job-rollups".into(), "job_id").await
    );
    assert_eq!(
        scan(boto3.failed_jobs.clone(), "pk").await,
        scan("failed-jobs".into(), "pk").await
    );
}
