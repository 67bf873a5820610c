//! The stream processor against moto: events written with the SDK, read back from the table's real
//! stream with aws-sdk-dynamodbstreams, handed to the handler in Lambda's event shape, and the
//! projections and SNS→SQS alerts checked.

use std::collections::BTreeMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use pipetel_model::{
    AlertKind, FailedJob, JobRollup, JobStatus, RetryState, SlaRules, StageEvent, Status,
    Timestamp, DEFAULT_RULES_TOML,
};
use pipetel_processors::decode::decode_record;
use pipetel_processors::handler::process_batch;
use pipetel_processors::processor::StreamProcessor;
use pipetel_processors::replay::Projections;
use pipetel_tests::scenario::{day, event};
use pipetel_tests::{lambda_batch, OnRequest, Stack};

type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

fn rules() -> SlaRules {
    SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap()
}

/// What the projections must be: the pure fold of the events (what `pipetel rebuild` derives).
fn expected(events: &[StageEvent]) -> (Vec<JobRollup>, Vec<FailedJob>) {
    let projections = Projections::derive(events, &rules());
    (
        projections.rollups.into_values().collect(),
        projections.failed_jobs.into_values().collect(),
    )
}

fn sequence_of(record: &EventRecord) -> String {
    record.change.sequence_number.clone().unwrap()
}

fn alert_ids(alerts: &[pipetel_model::AlertMessage]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for alert in alerts {
        *ids.entry(alert.alert_id.clone()).or_insert(0) += 1;
    }
    ids
}

#[tokio::test]
async fn projects_events_read_from_the_real_stream() {
    let stack = Stack::start().await;
    let events = day();
    stack.write_events(&events).await;
    let records = stack.read_stream().await;
    assert_eq!(records.len(), events.len());

    let processor = stack.processor(stack.dynamodb.clone(), rules());
    let response = process_batch(&processor, lambda_batch(&records)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let (rollups, failed) = expected(&events);
    assert_eq!(stack.rollups().await, rollups);
    assert_eq!(stack.failed_jobs().await, failed);

    let sales = &rollups[1];
    assert_eq!(
        (sales.job_id.as_str(), sales.status, sales.event_count),
        ("sales#20260625", JobStatus::Succeeded, 14 - 2)
    );
    assert_eq!(sales.stages["eu#clean"].attempts, 2);
    assert_eq!(rollups[0].status, JobStatus::Failed);
    let states: Vec<_> = failed
        .iter()
        .map(|f| (f.pk.as_str(), f.retry_state))
        .collect();
    assert_eq!(
        states,
        [
            ("orders#extract#20260625", RetryState::Pending),
            ("sales#eu#clean#20260625", RetryState::Resolved)
        ]
    );

    let alerts = stack.received_alerts().await;
    let kinds: BTreeMap<String, AlertKind> = alerts
        .iter()
        .map(|a| (a.alert_id.clone(), a.kind))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            (
                "orders#20260625#DEADLINE_MISSED".to_owned(),
                AlertKind::DeadlineMissed
            ),
            (
                "sales#20260625#STAGE_DURATION:eu/convert".to_owned(),
                AlertKind::StageDuration
            ),
        ])
    );
}

#[tokio::test]
async fn redelivered_and_reversed_batches_change_nothing_and_alert_once() {
    let stack = Stack::start().await;
    let events = day();
    stack.write_events(&events).await;
    let records = stack.read_stream().await;
    let processor = stack.processor(stack.dynamodb.clone(), rules());

    let first = processor
        .process(records.iter().cloned().map(decode_record).collect(), now())
        .await;
    assert_eq!((first.rollup_writes, first.alerts_published), (2, 2));
    let after_first = stack.rollups().await;

    let again = processor
        .process(records.iter().cloned().map(decode_record).collect(), now())
        .await;
    assert_eq!(
        (
            again.rollup_writes,
            again.rollups_unchanged,
            again.alerts_published
        ),
        (0, 2, 0)
    );
    assert_eq!(again.alerts_already_published, 2);

    let mut reversed = records.clone();
    reversed.reverse();
    let response = process_batch(&processor, lambda_batch(&reversed)).await;
    assert!(response.batch_item_failures.is_empty());

    assert_eq!(stack.rollups().await, after_first);
    assert_eq!(stack.rollups().await, expected(&events).0);
    let alerts = stack.received_alerts().await;
    assert_eq!(
        alert_ids(&alerts).values().collect::<Vec<_>>(),
        [&1, &1],
        "{alerts:?}"
    );
}

#[tokio::test]
async fn concurrent_handlers_on_one_job_converge() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let stack = Stack::start().await;
    let events = day();
    stack.write_events(&events).await;
    let records = stack.read_stream().await;
    // Two shards' worth of the same jobs, projected at the same time by two processors.
    let (odd, even): (Vec<_>, Vec<_>) = records
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 1);
    let strip = |v: Vec<(usize, EventRecord)>| v.into_iter().map(|(_, r)| r).collect::<Vec<_>>();
    let (odd, even) = (strip(odd), strip(even));

    let a = stack.processor(aws_sdk_dynamodb::Client::new(&stack.config), rules());
    let b = stack.processor(aws_sdk_dynamodb::Client::new(&stack.config), rules());
    // An alert claimed by the other processor and not yet published is reported in flight, and
    // its record retried, as Lambda does.
    let (tries_a, tries_b) =
        tokio::join!(deliver_like_lambda(&a, odd), deliver_like_lambda(&b, even));
    assert!(tries_a <= 3 && tries_b <= 3, "{tries_a} {tries_b}");

    let (rollups, failed) = expected(&events);
    assert_eq!(stack.rollups().await, rollups);
    assert_eq!(stack.failed_jobs().await, failed);
    let alerts = stack.received_alerts().await;
    assert!(alert_ids(&alerts).values().all(|&n| n == 1), "{alerts:?}");
}

#[tokio::test]
async fn a_poison_record_is_set_aside_and_the_rest_applied() {
    let stack = Stack::start().await;
    let events = day();
    stack.write_events(&events[..4]).await;
    let mut poison: Item =
        serde_dynamo::to_item(event("sales", "eu#clean", Status::Done, "09:00:00").to_item())
            .unwrap();
    poison.remove("status");
    stack.write_item(poison).await;
    let mut bad_date: Item =
        serde_dynamo::to_item(event("orders", "merge", Status::Done, "09:00:00").to_item())
            .unwrap();
    bad_date.insert(
        "run_date".into(),
        aws_sdk_dynamodb::types::AttributeValue::S("20230229".into()),
    );
    stack.write_item(bad_date).await;
    stack.write_events(&events[4..]).await;

    let records = stack.read_stream().await;
    assert_eq!(records.len(), events.len() + 2);
    let processor = stack.processor(stack.dynamodb.clone(), rules());
    let report = processor
        .process(records.iter().cloned().map(decode_record).collect(), now())
        .await;
    assert_eq!(
        (
            report.malformed,
            report.events,
            report.first_failed_sequence
        ),
        (2, events.len(), None)
    );
    assert_eq!(stack.rollups().await, expected(&events).0);
}

#[tokio::test]
async fn a_failed_write_reports_the_first_record_of_that_job() {
    let stack = Stack::start().await;
    let events = day();
    stack.write_events(&events).await;
    let records = stack.read_stream().await;

    // Rollup writes of one job fail at the SDK layer, as exhausted throttling retries would.
    let failing = stack.dynamodb_with(OnRequest::new(|operation, body| {
        if operation == "PutItem"
            && body.contains("\"job-rollups\"")
            && body.contains("orders#20260625")
        {
            return Err("injected ProvisionedThroughputExceededException".into());
        }
        Ok(())
    }));
    let processor = stack.processor(failing, rules());
    let response = process_batch(&processor, lambda_batch(&records)).await;

    let first_orders = records
        .iter()
        .position(|r| {
            r.change
                .new_image
                .get("job_id")
                .is_some_and(|v| format!("{v:?}").contains("orders#"))
        })
        .unwrap();
    let reported: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    assert_eq!(reported, [sequence_of(&records[first_orders])]);
    let stored: Vec<String> = stack
        .rollups()
        .await
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    assert_eq!(
        stored,
        ["sales#20260625"],
        "the job before the failure is fully applied"
    );

    // Lambda retries from the reported record; with the table healthy again everything converges.
    let healthy = stack.processor(stack.dynamodb.clone(), rules());
    let retry = process_batch(&healthy, lambda_batch(&records[first_orders..])).await;
    assert!(retry.batch_item_failures.is_empty());
    assert_eq!(stack.rollups().await, expected(&events).0);
    assert_eq!(stack.failed_jobs().await, expected(&events).1);
}

/// Invokes the handler as Lambda would: again from the reported record until none is reported.
/// Returns the number of invocations.
async fn deliver_like_lambda<S, A>(
    processor: &StreamProcessor<S, A>,
    mut records: Vec<EventRecord>,
) -> usize
where
    S: pipetel_processors::ports::ProjectionStore,
    A: pipetel_processors::ports::AlertSink,
{
    for invocation in 1..=5 {
        let response = process_batch(processor, lambda_batch(&records)).await;
        let Some(failed) = response.batch_item_failures.first() else {
            return invocation;
        };
        let from = records
            .iter()
            .position(|r| r.change.sequence_number == failed.item_identifier)
            .expect("the reported record is in the batch");
        records.drain(..from);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("still failing after 5 invocations");
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}
