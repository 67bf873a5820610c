//! The local demo: a day of pipeline events through a real (moto) DynamoDB table and stream, the
//! stream processor, and SNS→SQS, then the projections and alerts as an operator would see them;
//! then the sla-sweeper catches a job that went silent, and the retry dispatcher resubmits a failed
//! stage to a (moto) Step Functions state machine. The clock is simulated (the scenario's day), so
//! the output is the same whenever it runs.
#![forbid(unsafe_code)]

use pipetel_model::{SlaRules, Status, Timestamp, DEFAULT_RULES_TOML};
use pipetel_processors::adapters::StateMachines;
use pipetel_tests::{scenario, Stack};

fn at(hms: &str) -> Timestamp {
    Timestamp::parse("timestamp", &format!("2026-06-25T{hms}Z")).unwrap()
}

#[tokio::main]
async fn main() {
    println!("starting moto (local DynamoDB, Streams, SNS, SQS, Step Functions) on 127.0.0.1 ...");
    let stack = Stack::start().await;
    println!("  endpoint {}", stack.moto.endpoint);

    let mut events = scenario::day();
    // billing starts its extract and then goes silent: the stream has nothing more to say.
    events.push(scenario::event(
        "billing",
        "extract",
        Status::Running,
        "02:55:00",
    ));
    stack.write_events(&events).await;
    println!("wrote {} stage events to pipeline-logs", events.len());

    let rules = SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap();
    let processor = stack.processor(stack.dynamodb.clone(), rules.clone());
    let clock = at("03:10:00");
    let mut seen = 0;
    let report = stack.project_new(&processor, &mut seen, clock).await;
    println!(
        "read {} records from the table's stream; stream processor at {clock}: {} rollups written, {} alerts",
        report.records, report.rollup_writes, report.alerts_published
    );

    println!("\njob-rollups");
    println!(
        "  {:<18} {:<10} {:>7} {:>9}  stages",
        "job_id", "status", "events", "duration"
    );
    for rollup in stack.rollups().await {
        let stages: Vec<String> = rollup
            .stages
            .iter()
            .map(|(lane, s)| format!("{lane}={}x{}", s.status, s.attempts))
            .collect();
        let duration = rollup
            .duration_seconds
            .map_or("-".to_owned(), |d| format!("{d}s"));
        println!(
            "  {:<18} {:<10} {:>7} {:>9}  {}",
            rollup.job_id,
            rollup.status.as_str(),
            rollup.event_count,
            duration,
            stages.join(" ")
        );
    }

    println!("\nfailed-jobs (retry queue)");
    for entry in stack.failed_jobs().await {
        println!(
            "  {:<26} {:?} failures={} next_retry_at={} error={:?}",
            entry.pk,
            entry.retry_state,
            entry.failure_count,
            entry
                .next_retry_at
                .map_or("-".to_owned(), |t| t.to_string()),
            entry.error_summary.unwrap_or_default()
        );
    }

    print_alerts(
        &stack,
        "SLA alerts received on the SQS queue subscribed to sla-alerts",
    )
    .await;

    let now = at("03:30:00");
    println!("\n--- 20 minutes later ({now}): the scheduled functions run ---");
    let sweeper = stack.sweeper(stack.dynamodb.clone(), rules.clone());
    let sweep = sweeper.run(now, false).await.unwrap();
    println!("\nsla-sweeper\n{sweep}");

    let machine = stack.state_machine("etl-pipeline").await;
    let dispatcher = stack.dispatcher(
        StateMachines::parse(Some(machine.clone()), "").unwrap(),
        &rules,
    );
    let dry = dispatcher.run(now, true).await.unwrap();
    println!("\nretry-dispatcher --dry-run\n{dry}");
    let retry = dispatcher.run(now, false).await.unwrap();
    println!("\nretry-dispatcher\n{retry}");
    println!("\nStep Functions executions of {machine}");
    for (name, input) in stack.executions(&machine).await {
        println!("  {name} input={input}");
    }
    let again = dispatcher.run(at("03:35:00"), false).await.unwrap();
    println!(
        "retry-dispatcher again at 03:35: {} due (the entry waits one backoff)",
        again.dispatches.len()
    );

    print_alerts(&stack, "SLA alerts received after the sweep").await;
    println!("\nstopping moto");
}

async fn print_alerts(stack: &Stack, title: &str) {
    println!("\n{title}");
    for alert in stack.received_alerts().await {
        println!(
            "  [{}] {} {} {} threshold={} observed={}",
            alert.severity.as_str(),
            alert.state.as_str(),
            alert.kind,
            alert.alert_id,
            serde_json::to_string(&alert.threshold).unwrap(),
            serde_json::to_string(&alert.observed).unwrap()
        );
    }
}
