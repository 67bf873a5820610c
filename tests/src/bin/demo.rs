//! The local demo: a day of pipeline events through a real (moto) DynamoDB table and stream, the
//! stream processor, and SNS→SQS, then the projections and alerts as an operator would see them.
#![forbid(unsafe_code)]

use pipetel_model::{SlaRules, DEFAULT_RULES_TOML};
use pipetel_processors::handler::process_batch;
use pipetel_tests::{lambda_batch, scenario, Stack};

#[tokio::main]
async fn main() {
    println!("starting moto (local DynamoDB, Streams, SNS, SQS) on 127.0.0.1 ...");
    let stack = Stack::start().await;
    println!("  endpoint {}", stack.moto.endpoint);

    let events = scenario::day();
    stack.write_events(&events).await;
    println!("wrote {} stage events to pipeline-logs", events.len());

    let records = stack.read_stream().await;
    println!(
        "read {} records from the table's stream; invoking the stream processor",
        records.len()
    );
    let processor = stack.processor(
        stack.dynamodb.clone(),
        SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap(),
    );
    let response = process_batch(&processor, lambda_batch(&records)).await;
    println!(
        "  batchItemFailures: {}",
        response.batch_item_failures.len()
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

    println!("\nSLA alerts received on the SQS queue subscribed to sla-alerts");
    for alert in stack.received_alerts().await {
        println!(
            "  [{}] {} {} threshold={} observed={}",
            alert.severity.as_str(),
            alert.kind,
            alert.alert_id,
            serde_json::to_string(&alert.threshold).unwrap(),
            serde_json::to_string(&alert.observed).unwrap()
        );
    }
    println!("\nstopping moto");
}
