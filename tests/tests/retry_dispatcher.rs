//! The retry dispatcher against moto (DynamoDB, Step Functions, SNS→SQS): due entries found with a
//! Query on `pending-by-due`, resubmitted with StartExecution under an idempotent name, pushed out
//! by the backoff; resolved by a later DONE, or exhausted with one JOB_FAILED alert.
//! Time is a parameter: hours pass between runs without any waiting.

use aws_sdk_dynamodb::types::AttributeValue;
use pipetel_model::{
    execution_name, AlertKind, RetryState, SlaRules, Status, Timestamp, DEFAULT_RULES_TOML,
};
use pipetel_processors::adapters::StateMachines;
use pipetel_processors::ports::Submitted;
use pipetel_processors::retry::Outcome;
use pipetel_tests::scenario::event;
use pipetel_tests::{Stack, FAILED_JOBS_TABLE};
use serde_json::json;

fn at(hms: &str) -> Timestamp {
    Timestamp::parse("timestamp", &format!("2026-06-25T{hms}Z")).unwrap()
}

fn rules() -> SlaRules {
    SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap()
}

fn only(source: &str, arn: &str) -> StateMachines {
    StateMachines::parse(None, &format!("{source}={arn}")).unwrap()
}

#[tokio::test]
async fn a_failed_stage_is_resubmitted_once_with_backoff_and_resolved_by_a_later_done() {
    let stack = Stack::start().await;
    let rules = rules();
    let machine = stack.state_machine("sales-pipeline").await;
    let processor = stack.processor(stack.dynamodb.clone(), rules.clone());
    let dispatcher = stack.dispatcher(only("sales", &machine), &rules);
    let pk = "sales#eu#clean#20260625";
    let mut seen = 0;

    stack
        .write_events(&[
            event("sales", "eu#clean", Status::Running, "01:10:05"),
            event("sales", "eu#clean", Status::Failed, "01:15:00").with_error("schema drift", None),
        ])
        .await;
    stack
        .project_new(&processor, &mut seen, at("01:15:01"))
        .await;

    // Not due before failed_at + 15 min.
    assert!(dispatcher
        .run(at("01:29:59"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());

    let dry = dispatcher.run(at("01:31:00"), true).await.unwrap();
    assert_eq!(dry.dispatches.len(), 1);
    assert_eq!(dry.dispatches[0].outcome, Outcome::WouldSubmit);
    assert!(
        stack.executions(&machine).await.is_empty(),
        "a dry run resubmits nothing"
    );

    let run = dispatcher.run(at("01:31:00"), false).await.unwrap();
    let name = execution_name(pk, 1);
    assert_eq!(run.dispatches.len(), 1, "{run}");
    assert_eq!(run.dispatches[0].execution_name, name);
    assert!(matches!(
        &run.dispatches[0].outcome,
        Outcome::Submitted { submitted: Submitted::Started { run_id } } if run_id.ends_with(&name)
    ));
    assert_eq!(
        stack.executions(&machine).await,
        [(
            name.clone(),
            json!({"source": "sales", "category": "eu", "stage": "clean", "run_date": "20260625",
                   "job_id": "sales#20260625", "attempt": 2})
        )]
    );
    // failure_count stays event-derived; the dispatch is recorded beside it and the entry is
    // out of the due window for one backoff.
    let item = stack.item(FAILED_JOBS_TABLE, "pk", pk).await.unwrap();
    assert_eq!(item["failure_count"], AttributeValue::N("1".into()));
    assert_eq!(
        item["next_retry_at"],
        AttributeValue::S("2026-06-25T01:46:00Z".into())
    );
    assert_eq!(item["dispatch_count"], AttributeValue::N("1".into()));
    assert_eq!(item["execution_name"], AttributeValue::S(name.clone()));
    assert!(dispatcher
        .run(at("01:40:00"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());

    // The resubmitted run never logs anything and has ended: the entry is due again, but the
    // execution name is taken, so nothing is resubmitted twice.
    let executions = stack
        .sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .unwrap();
    stack
        .sfn
        .stop_execution()
        .execution_arn(&executions.executions[0].execution_arn)
        .send()
        .await
        .unwrap();
    let again = dispatcher.run(at("01:47:00"), false).await.unwrap();
    assert_eq!(
        again.dispatches[0].outcome,
        Outcome::Submitted {
            submitted: Submitted::AlreadyStarted
        }
    );
    assert_eq!(stack.executions(&machine).await.len(), 1);

    // The retry runs (the entry leaves the due index, the dispatch attributes survive the
    // processor's write), then succeeds: RESOLVED.
    stack
        .write_events(&[event("sales", "eu#clean", Status::Running, "01:50:00").with_attempt(2)])
        .await;
    stack
        .project_new(&processor, &mut seen, at("01:50:01"))
        .await;
    let item = stack.item(FAILED_JOBS_TABLE, "pk", pk).await.unwrap();
    assert_eq!(item["retry_state"], AttributeValue::S("PENDING".into()));
    assert!(!item.contains_key("next_retry_at"), "{item:?}");
    assert_eq!(item["dispatch_count"], AttributeValue::N("2".into()));
    assert!(dispatcher
        .run(at("03:00:00"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());

    stack
        .write_events(&[event("sales", "eu#clean", Status::Done, "02:00:00")])
        .await;
    stack
        .project_new(&processor, &mut seen, at("02:00:01"))
        .await;
    let entry = &stack.failed_jobs().await[0];
    assert_eq!(
        (entry.retry_state, entry.next_retry_at),
        (RetryState::Resolved, None)
    );
    assert!(dispatcher
        .run(at("09:00:00"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());
    assert_eq!(stack.executions(&machine).await.len(), 1);
}

#[tokio::test]
async fn a_stage_that_keeps_failing_is_retried_with_backoff_then_exhausted_with_one_alert() {
    let stack = Stack::start().await;
    let rules = rules();
    let machine = stack.state_machine("orders-pipeline").await;
    let processor = stack.processor(stack.dynamodb.clone(), rules.clone());
    let pk = "orders#extract#20260625";
    let mut seen = 0;

    stack
        .write_events(&[
            event("orders", "extract", Status::Running, "03:00:00"),
            event("orders", "extract", Status::Failed, "03:05:00"),
        ])
        .await;
    stack
        .project_new(&processor, &mut seen, at("03:05:01"))
        .await;

    // No state machine for the source: reported, nothing written, still due next time.
    let unconfigured = stack.dispatcher(only("sales", &machine), &rules);
    let run = unconfigured.run(at("03:20:00"), false).await.unwrap();
    assert!(
        matches!(&run.dispatches[0].outcome, Outcome::Failed { reason } if reason.contains("no retry target")),
        "{run}"
    );
    assert_eq!(run.failed(), 1);

    let dispatcher = stack.dispatcher(only("orders", &machine), &rules);
    let first = dispatcher.run(at("03:20:00"), false).await.unwrap();
    assert_eq!(first.dispatches[0].execution_name, execution_name(pk, 1));

    // The retry fails again: 2 failures, next retry 30 min after it.
    stack
        .write_events(&[
            event("orders", "extract", Status::Running, "03:25:00"),
            event("orders", "extract", Status::Failed, "03:30:00"),
        ])
        .await;
    stack
        .project_new(&processor, &mut seen, at("03:30:01"))
        .await;
    assert!(dispatcher
        .run(at("03:59:59"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());
    let second = dispatcher.run(at("04:00:00"), false).await.unwrap();
    assert_eq!(second.dispatches.len(), 1, "{second}");
    assert_eq!(second.dispatches[0].failure_count, 2);
    assert_eq!(second.dispatches[0].execution_name, execution_name(pk, 2));
    assert_eq!(second.dispatches[0].next_retry_at, at("04:30:00"));

    // Third failure: max_retries reached, EXHAUSTED, one JOB_FAILED alert, no more resubmissions.
    stack
        .write_events(&[
            event("orders", "extract", Status::Running, "04:05:00"),
            event("orders", "extract", Status::Failed, "04:10:00"),
        ])
        .await;
    stack
        .project_new(&processor, &mut seen, at("04:10:01"))
        .await;
    let entry = &stack.failed_jobs().await[0];
    assert_eq!(
        (entry.retry_state, entry.failure_count, entry.next_retry_at),
        (RetryState::Exhausted, 3, None)
    );
    assert!(dispatcher
        .run(at("12:00:00"), false)
        .await
        .unwrap()
        .dispatches
        .is_empty());

    let executions = stack.executions(&machine).await;
    let names: Vec<_> = executions.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, [execution_name(pk, 1), execution_name(pk, 2)]);
    assert_eq!(executions[1].1["attempt"], 3);

    let alerts = stack.received_alerts().await;
    let failed: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::JobFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{alerts:?}");
    assert_eq!(failed[0].alert_id, "orders#20260625#JOB_FAILED:extract");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
}
