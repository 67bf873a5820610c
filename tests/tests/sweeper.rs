//! The sla-sweeper against moto: silent and never-started jobs found with Queries on the indexes,
//! raised through the same ledger as the stream processor, and resolved when the job moves on.
//! Time is a parameter: hours pass between sweeps without any waiting.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use pipetel_model::{
    AlertKind, AlertMessage, AlertState, Name, RunDate, SlaRules, StageEvent, Status, Timestamp,
    DEFAULT_RULES_TOML,
};
use pipetel_tests::scenario::event;
use pipetel_tests::{OnRequest, Stack, ALERTS_TABLE};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("timestamp", s).unwrap()
}

fn at(hms: &str) -> Timestamp {
    ts(&format!("2026-06-25T{hms}Z"))
}

fn summary(alerts: &[AlertMessage]) -> Vec<(String, AlertKind, AlertState)> {
    let mut s: Vec<_> = alerts
        .iter()
        .map(|a| (a.alert_id.clone(), a.kind, a.state))
        .collect();
    s.sort();
    s
}

#[tokio::test]
async fn a_hung_job_is_alerted_once_by_the_sweeper_and_not_again_by_a_later_event() {
    let stack = Stack::start().await;
    let rules = SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap();
    let processor = stack.processor(stack.dynamodb.clone(), rules.clone());
    // Every DynamoDB operation the sweeper sends, to prove it never Scans.
    let operations = Arc::new(Mutex::new(Vec::new()));
    let seen_ops = operations.clone();
    let sweeper = stack.sweeper(
        stack.dynamodb_with(OnRequest::new(move |operation, _| {
            seen_ops.lock().unwrap().push(operation.to_owned());
            Ok(())
        })),
        rules.clone(),
    );
    let mut seen = 0;

    // extract starts, then the job goes silent: the stream has nothing more to say.
    stack
        .write_events(&[
            event("sales", "job", Status::Running, "01:00:00"),
            event("sales", "eu#extract", Status::Running, "01:00:05"),
        ])
        .await;
    let report = stack
        .project_new(&processor, &mut seen, at("01:00:06"))
        .await;
    assert_eq!(report.alerts_published, 0);

    let quiet = sweeper.run(at("01:20:00"), false).await.unwrap();
    assert!(quiet.breaches.is_empty(), "{quiet}");
    assert_eq!(quiet.jobs, 1);

    let found = sweeper.run(at("01:45:00"), false).await.unwrap();
    assert_eq!(
        summary(&found.breaches),
        [(
            "sales#20260625#STAGE_DURATION:eu/extract".to_owned(),
            AlertKind::StageDuration,
            AlertState::Breached
        )]
    );
    assert_eq!(found.published, 1);
    let alerts = stack.received_alerts().await;
    assert_eq!(summary(&alerts), summary(&found.breaches));
    assert_eq!(alerts[0].detected_at, at("01:45:00"));

    // A later sweep while it still hangs: already in the ledger, nothing sent.
    let again = sweeper.run(at("01:50:00"), false).await.unwrap();
    assert!(
        again.breaches.is_empty() && again.resolutions.is_empty(),
        "{again}"
    );

    // The stage finally completes: the stream processor evaluates the same breach and finds it
    // already alerted.
    stack
        .write_events(&[event("sales", "eu#extract", Status::Done, "02:00:00")])
        .await;
    let report = stack
        .project_new(&processor, &mut seen, at("02:00:01"))
        .await;
    assert_eq!(
        (report.alerts_published, report.alerts_already_published),
        (0, 1)
    );
    assert!(stack.received_alerts().await.is_empty());

    // The next sweep resolves it: one resolution message, same alert_id and kind.
    let resolved = sweeper.run(at("02:05:00"), false).await.unwrap();
    assert!(resolved.breaches.is_empty(), "{resolved}");
    assert_eq!(resolved.resolutions_published, 1);
    let alerts = stack.received_alerts().await;
    assert_eq!(
        summary(&alerts),
        [(
            "sales#20260625#STAGE_DURATION:eu/extract".to_owned(),
            AlertKind::StageDuration,
            AlertState::Resolved
        )]
    );
    assert_eq!(alerts[0].resolved_at, Some(at("02:05:00")));
    let ledger = stack
        .item(
            ALERTS_TABLE,
            "alert_id",
            "sales#20260625#STAGE_DURATION:eu/extract",
        )
        .await
        .unwrap();
    assert_eq!(ledger["state"], AttributeValue::S("RESOLVED".into()));

    let after = sweeper.run(at("02:10:00"), false).await.unwrap();
    assert!(
        after.breaches.is_empty() && after.resolutions.is_empty(),
        "{after}"
    );
    assert!(stack.received_alerts().await.is_empty());

    // Five sweeps, two Queries per watched run date each (rollups, ledger); never a Scan.
    let operations = operations.lock().unwrap().clone();
    assert!(!operations.iter().any(|op| op == "Scan"), "{operations:?}");
    let queries = operations.iter().filter(|op| *op == "Query").count();
    assert_eq!(queries, 5 * 2 * quiet.run_dates.len(), "{operations:?}");
}

#[tokio::test]
async fn a_never_started_expected_source_is_alerted_and_resolved_when_it_starts() {
    let stack = Stack::start().await;
    let rules = SlaRules::from_toml(
        &DEFAULT_RULES_TOML.replace("expected = []", r#"expected = ["sales", "orders"]"#),
    )
    .unwrap();
    let processor = stack.processor(stack.dynamodb.clone(), rules.clone());
    let sweeper = stack.sweeper(stack.dynamodb.clone(), rules.clone());
    let mut seen = 0;

    // orders runs on 20260625; sales does not.
    stack
        .write_events(&[
            event("orders", "job", Status::Running, "01:00:00"),
            event("orders", "job", Status::Succeeded, "01:30:00"),
        ])
        .await;
    stack
        .project_new(&processor, &mut seen, at("01:30:01"))
        .await;

    // Before 20260625's deadline only the earlier watched day (20260624) is overdue.
    let early = sweeper
        .run(ts("2026-06-26T05:59:00Z"), false)
        .await
        .unwrap();
    let ids: Vec<_> = early.breaches.iter().map(|b| b.alert_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sales#20260624#JOB_NOT_STARTED",
            "orders#20260624#JOB_NOT_STARTED"
        ]
    );
    stack.received_alerts().await;

    let dry = sweeper.run(ts("2026-06-26T06:01:00Z"), true).await.unwrap();
    assert_eq!(dry.breaches.len(), 1);
    assert_eq!(dry.published, 0);
    assert!(
        stack.received_alerts().await.is_empty(),
        "a dry run sends nothing"
    );

    let due = sweeper
        .run(ts("2026-06-26T06:01:00Z"), false)
        .await
        .unwrap();
    assert_eq!(due.published, 1);
    let alerts = stack.received_alerts().await;
    assert_eq!(
        summary(&alerts),
        [(
            "sales#20260625#JOB_NOT_STARTED".to_owned(),
            AlertKind::JobNotStarted,
            AlertState::Breached
        )]
    );
    assert_eq!(alerts[0].stage, None);
    let again = sweeper
        .run(ts("2026-06-26T06:20:00Z"), false)
        .await
        .unwrap();
    assert!(again.breaches.is_empty(), "{again}");

    // sales starts, late: the processor raises the missed deadline, the sweep resolves the
    // not-started alert.
    let late = StageEvent::new(
        Name::parse("source", "sales").unwrap(),
        None,
        Name::parse("stage", "extract").unwrap(),
        RunDate::parse("20260625").unwrap(),
        Status::Running,
        ts("2026-06-26T06:30:00Z"),
    )
    .unwrap();
    stack.write_events(&[late]).await;
    stack
        .project_new(&processor, &mut seen, ts("2026-06-26T06:30:01Z"))
        .await;
    let swept = sweeper
        .run(ts("2026-06-26T06:35:00Z"), false)
        .await
        .unwrap();
    assert!(swept.breaches.is_empty(), "{swept}");
    assert_eq!(swept.resolutions_published, 1);
    assert_eq!(
        summary(&stack.received_alerts().await),
        [
            (
                "sales#20260625#DEADLINE_MISSED".to_owned(),
                AlertKind::DeadlineMissed,
                AlertState::Breached
            ),
            (
                "sales#20260625#JOB_NOT_STARTED".to_owned(),
                AlertKind::JobNotStarted,
                AlertState::Resolved
            ),
        ]
    );
}
