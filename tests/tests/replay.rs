//! `pipetel rebuild` and `verify` against moto: projections re-derived from the event log alone
//! equal what the stream processor built live, and tampering is found.

use aws_sdk_dynamodb::types::AttributeValue;
use pipetel_model::{SlaRules, Status, DEFAULT_RULES_TOML};
use pipetel_processors::consumer::{CheckpointTable, ConsumeOptions, StreamConsumer};
use pipetel_processors::replay::{
    batch_write, compare, decode_log, dispatcher_owned, nothing_owned, scan_all, write_projections,
    Drift, DriftKind, Projections, MAX_BATCH_WRITE_ITEMS,
};
use pipetel_processors::tables::{create_tables, TableNames};
use pipetel_tests::scenario::{day, event};
use pipetel_tests::{Stack, EVENTS_TABLE, FAILED_JOBS_TABLE, ROLLUPS_TABLE};

fn rules() -> SlaRules {
    SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap()
}

/// The stack with the day's events written and consumed live from the stream.
async fn live_stack() -> Stack {
    let stack = Stack::start().await;
    let mut events = day();
    // A stage that failed three times: an EXHAUSTED entry.
    for minute in ["10", "20", "30"] {
        events.push(event(
            "billing",
            "convert",
            Status::Running,
            &format!("05:{minute}:00"),
        ));
        events.push(
            event(
                "billing",
                "convert",
                Status::Failed,
                &format!("05:{minute}:30"),
            )
            .with_error("out of memory", None),
        );
    }
    stack.write_events(&events).await;
    let processor = stack.processor(stack.dynamodb.clone(), rules());
    StreamConsumer::new(
        stack.streams.clone(),
        CheckpointTable::new(stack.dynamodb.clone(), "pipetel-checkpoints"),
        &stack.stream_arn,
        &processor,
    )
    .run(ConsumeOptions::UNTIL_CAUGHT_UP)
    .await
    .unwrap();
    stack
}

async fn derive_from_log(stack: &Stack) -> (Projections, usize) {
    let items = scan_all(&stack.dynamodb, EVENTS_TABLE, 3, &|_| {})
        .await
        .unwrap();
    let log = decode_log(items);
    (Projections::derive(&log.events, &rules()), log.events.len())
}

async fn drift(stack: &Stack, projections: &Projections) -> Vec<Drift> {
    let none = &|_| {};
    let mut drift = compare(
        ROLLUPS_TABLE,
        "job_id",
        &projections.rollups,
        scan_all(&stack.dynamodb, ROLLUPS_TABLE, 2, none)
            .await
            .unwrap(),
        nothing_owned,
    );
    drift.extend(compare(
        FAILED_JOBS_TABLE,
        "pk",
        &projections.failed_jobs,
        scan_all(&stack.dynamodb, FAILED_JOBS_TABLE, 2, none)
            .await
            .unwrap(),
        dispatcher_owned,
    ));
    drift.sort_by(|a, b| a.key.cmp(&b.key));
    drift
}

#[tokio::test]
async fn a_rebuild_from_the_log_equals_the_live_projections() {
    let stack = live_stack().await;
    let (projections, events) = derive_from_log(&stack).await;
    assert_eq!(events, day().len() + 6);
    assert_eq!(projections.rollups.len(), 3);

    let fresh = TableNames::with_prefix("rebuilt-");
    create_tables(&stack.dynamodb, &fresh.prefix).await.unwrap();
    write_projections(
        &stack.dynamodb,
        &fresh.rollups,
        &fresh.failed_jobs,
        &projections,
    )
    .await
    .unwrap();

    let read = |table: String| {
        let client = stack.dynamodb.clone();
        async move {
            let items = scan_all(&client, &table, 1, &|_| {}).await.unwrap();
            let mut rows: Vec<serde_json::Value> = serde_dynamo::from_items(items).unwrap();
            rows.sort_by_key(|r| r.to_string());
            rows
        }
    };
    let live_rollups = read(ROLLUPS_TABLE.into()).await;
    assert_eq!(live_rollups.len(), 3);
    assert_eq!(read(fresh.rollups.clone()).await, live_rollups);
    let live_failed = read(FAILED_JOBS_TABLE.into()).await;
    let states: Vec<&str> = live_failed
        .iter()
        .map(|f| f["retry_state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"EXHAUSTED"), "{states:?}");
    assert_eq!(read(fresh.failed_jobs.clone()).await, live_failed);
}

#[tokio::test]
async fn verify_finds_tampered_missing_and_unexpected_items_and_a_rebuild_repairs_them() {
    let stack = live_stack().await;
    let (projections, _) = derive_from_log(&stack).await;
    assert_eq!(drift(&stack, &projections).await, []);

    let client = &stack.dynamodb;
    client
        .update_item()
        .table_name(ROLLUPS_TABLE)
        .key("job_id", AttributeValue::S("orders#20260625".into()))
        .update_expression("SET #status = :ok, event_count = :n")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":ok", AttributeValue::S("SUCCEEDED".into()))
        .expression_attribute_values(":n", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    client
        .delete_item()
        .table_name(FAILED_JOBS_TABLE)
        .key("pk", AttributeValue::S("sales#eu#clean#20260625".into()))
        .send()
        .await
        .unwrap();
    client
        .put_item()
        .table_name(ROLLUPS_TABLE)
        .item("job_id", AttributeValue::S("ghost#20260625".into()))
        .send()
        .await
        .unwrap();

    let found = drift(&stack, &projections).await;
    let problems: Vec<(&str, &DriftKind)> =
        found.iter().map(|d| (d.key.as_str(), &d.problem)).collect();
    assert_eq!(
        problems,
        [
            ("ghost#20260625", &DriftKind::Unexpected),
            (
                "orders#20260625",
                &DriftKind::Differs(vec!["event_count".into(), "status".into()])
            ),
            ("sales#eu#clean#20260625", &DriftKind::Missing),
        ]
    );

    // Rebuilding in place re-derives every projection; only the item no event implies is left,
    // for an operator to look at.
    write_projections(client, ROLLUPS_TABLE, FAILED_JOBS_TABLE, &projections)
        .await
        .unwrap();
    let left: Vec<_> = drift(&stack, &projections)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(left, ["ghost#20260625"]);
}

#[tokio::test]
async fn batch_writes_carry_at_most_25_items_per_request() {
    let stack = Stack::start().await;
    let item = |n: usize| {
        std::collections::HashMap::from([(
            "job_id".to_owned(),
            AttributeValue::S(format!("job{n}#20260625")),
        )])
    };
    let requests = |count: usize| {
        let client = stack.dynamodb.clone();
        async move {
            batch_write(&client, ROLLUPS_TABLE, (0..count).map(item).collect())
                .await
                .unwrap()
        }
    };
    assert_eq!(MAX_BATCH_WRITE_ITEMS, 25);
    assert_eq!(requests(25).await, 1);
    assert_eq!(requests(26).await, 2);
    assert_eq!(requests(50).await, 2);
    let stored = scan_all(&stack.dynamodb, ROLLUPS_TABLE, 1, &|_| {})
        .await
        .unwrap();
    assert_eq!(stored.len(), 50);
}
