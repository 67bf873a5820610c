//! `pipetel demo`: the whole product on a laptop. moto (from `.venv`, installed if needed) on
//! loopback; the tables from the infra template; an SQS queue subscribed to the alert topic; a
//! day of six pipelines written with `PipelineLogger`; the stream consumer until caught up; half an
//! hour later the sla-sweeper and the retry dispatcher (moto Step Functions); then what an
//! operator sees: rollups, the retry queue, and the alerts received.

use chrono::{DateTime, Duration, Timelike, Utc};
use pipetel_model::{
    AlertMessage, Name, RetryState, RunDate, SlaRules, StageEvent, Status, Timestamp, JOB_STAGE,
};
use pipetel_processors::adapters::{DynamoRetryQueue, StateMachines, StepFunctionsTarget};
use pipetel_processors::consumer::{
    stream_arn_of, CheckpointTable, ConsumeOptions, StreamConsumer,
};
use pipetel_processors::local::{alert_topic_with_queue, ensure_venv, repo_root, sdk_config, Moto};
use pipetel_processors::logger::put_event;
use pipetel_processors::processor::StreamProcessor;
use pipetel_processors::queries::ProjectionReader;
use pipetel_processors::retry::RetryDispatcher;
use pipetel_processors::settings::Settings;
use pipetel_processors::sweeper::Sweeper;
use pipetel_processors::tables::{create_tables, TableNames};

use crate::output;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pipelines of the demo; all are expected to run daily.
const SOURCES: [&str; 6] = [
    "sales",
    "orders",
    "billing",
    "customers",
    "marketing",
    "inventory",
];
/// The demo's day started this long before now.
const DAY_SPAN_MINUTES: i64 = 360;

pub async fn run() -> Result<(), BoxError> {
    let root = repo_root();
    ensure_venv(&root)?;
    let moto = Moto::start(&root)?;
    println!("▶ moto (DynamoDB, Streams, SNS, SQS) on {}", moto.endpoint);
    let config = sdk_config(&moto.endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let tables = TableNames::with_prefix("");
    let created = create_tables(&dynamodb, &tables.prefix).await?;
    println!(
        "▶ created {} tables from infra/template.yaml",
        created.len()
    );
    let (topic_arn, queue_url) = alert_topic_with_queue(&config, "sla-alerts", "operators").await?;
    println!("▶ SQS queue subscribed to the sla-alerts topic");

    let now = Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now);
    let day = Day::ending(now);
    let rules = SlaRules::from_toml(&day.rules_toml())?;
    let events = day.events()?;
    for event in &events {
        put_event(&dynamodb, &tables.events, event).await?;
    }
    println!(
        "▶ logged {} stage events: two good days, then run {} of 5 pipelines (a 6th, inventory, never starts)",
        events.len(),
        day.run_date
    );

    let settings = Settings::for_tables(&tables, topic_arn, rules);
    let processor = StreamProcessor::aws(&config, settings.clone());
    let consumer = StreamConsumer::new(
        aws_sdk_dynamodbstreams::Client::new(&config),
        CheckpointTable::new(dynamodb.clone(), &tables.checkpoints),
        stream_arn_of(&dynamodb, &tables.events).await?,
        &processor,
    );
    let report = consumer.run(ConsumeOptions::UNTIL_CAUGHT_UP).await?;
    println!(
        "▶ consumer caught up: {} records in {} batches, {} rollup writes, {} alerts published",
        report.records, report.batches, report.rollup_writes, report.alerts_published
    );

    let later = Timestamp::from_datetime(now + Duration::minutes(30));
    println!("\n▶ 30 minutes later ({later}): the scheduled functions run");
    let sweeper = Sweeper::aws(&config, settings.clone());
    println!(
        "\nsla-sweeper (pipetel sweep)\n{}",
        sweeper.run(later, false).await?
    );

    let sfn = aws_sdk_sfn::Client::new(&config);
    let machine = sfn
        .create_state_machine()
        .name("etl-pipeline")
        .definition(r#"{"StartAt":"Run","States":{"Run":{"Type":"Pass","End":true}}}"#)
        .role_arn("arn:aws:iam::123456789012:role/etl-pipeline")
        .send()
        .await?
        .state_machine_arn;
    let dispatcher = RetryDispatcher::new(
        DynamoRetryQueue::new(dynamodb.clone(), &tables.failed_jobs),
        StepFunctionsTarget::new(
            sfn.clone(),
            StateMachines::parse(Some(machine.clone()), "")?,
        ),
        settings.rules.retry().clone(),
    );
    println!(
        "\nretry-dispatcher (pipetel retry --dry-run)\n{}",
        dispatcher.run(later, true).await?
    );
    println!(
        "\nretry-dispatcher (pipetel retry)\n{}",
        dispatcher.run(later, false).await?
    );
    for execution in sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await?
        .executions
    {
        let input = sfn
            .describe_execution()
            .execution_arn(&execution.execution_arn)
            .send()
            .await?
            .input
            .unwrap_or_default();
        println!(
            "  Step Functions execution {} input {input}",
            execution.name
        );
    }

    // The resubmitted run extracts successfully this time.
    for (status, minutes) in [(Status::Running, 31), (Status::Done, 34)] {
        let at = Timestamp::from_datetime(now + Duration::minutes(minutes));
        let event = StageEvent::new(
            Name::parse("source", "orders")?,
            None,
            Name::parse("stage", "extract")?,
            day.run_date,
            status,
            at,
        )?
        .with_attempt(2);
        put_event(&dynamodb, &tables.events, &event).await?;
    }
    let report = consumer.run(ConsumeOptions::UNTIL_CAUGHT_UP).await?;
    println!(
        "\n▶ the retried orders extract succeeded; consumer applied {} more records",
        report.records
    );

    let reader = ProjectionReader::new(
        dynamodb.clone(),
        &tables.rollups,
        &tables.failed_jobs,
        &tables.alerts,
    );
    println!(
        "\njob-rollups for {} (pipetel jobs --date {})",
        day.run_date, day.run_date
    );
    output::jobs(&reader.jobs(day.run_date, None, None).await?, false)?;
    println!("\nfailed-jobs retry queue (pipetel failed --state resolved)");
    output::failed_jobs(&reader.failed_jobs(RetryState::Resolved).await?, false)?;
    println!("\nSLA alerts received by the SQS subscriber");
    output::received(&receive_all(&config, &queue_url).await?);
    println!("\n▶ stopping moto");
    drop(moto);
    Ok(())
}

/// Every alert message waiting in the queue.
async fn receive_all(
    config: &aws_config::SdkConfig,
    queue_url: &str,
) -> Result<Vec<AlertMessage>, BoxError> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut alerts = Vec::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return Ok(alerts);
        }
        for message in messages {
            alerts.push(serde_json::from_str(message.body().unwrap_or_default())?);
            if let Some(handle) = message.receipt_handle {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
}

/// A realistic day that ends now: six sources, each showing one thing operators care about.
struct Day {
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    run_date: RunDate,
}

impl Day {
    fn ending(now: DateTime<Utc>) -> Self {
        let start = now - Duration::minutes(DAY_SPAN_MINUTES);
        Self {
            start,
            now,
            run_date: RunDate::from_date(start.date_naive()),
        }
    }

    /// The shipped defaults, every source expected daily, and a deadline half an hour ago for
    /// `marketing` (still running) and `inventory` (never started).
    fn rules_toml(&self) -> String {
        let deadline = self.now - Duration::minutes(30);
        let days_after = (deadline.date_naive() - self.run_date.date()).num_days();
        let missed = format!(
            "deadline = {{ at = \"{}\", days_after = {days_after} }}",
            deadline.format("%H:%M")
        );
        format!(
            r#"expected = ["sales", "orders", "billing", "customers", "marketing", "inventory"]

[defaults]
expected_stages = ["extract", "clean", "convert", "merge"]
max_job_duration = "2h"
deadline = {{ at = "06:00", days_after = 1 }}

[defaults.max_stage_duration]
extract = "30m"
clean = "20m"
convert = "30m"
merge = "20m"

[sources.marketing]
{missed}

[sources.inventory]
{missed}
"#
        )
    }

    fn events(&self) -> Result<Vec<StageEvent>, BoxError> {
        use Status::*;
        let event = |source: &str, lane: &str, status: Status, minute: f64| {
            let (category, stage) = match lane.split_once('#') {
                Some((c, s)) => (Some(Name::parse("category", c)?), s),
                None => (None, lane),
            };
            let at = self.start + Duration::seconds((minute * 60.0) as i64);
            StageEvent::new(
                Name::parse("source", source)?,
                category,
                Name::parse("stage", stage)?,
                self.run_date,
                status,
                Timestamp::from_datetime(at),
            )
        };
        // The two days before: every pipeline ran and succeeded (the sweeper looks back that far).
        let mut events = Vec::new();
        for days_before in 1..=2 {
            let run_date = RunDate::from_date(self.run_date.date() - Duration::days(days_before));
            let started = self.start - Duration::days(days_before);
            for source in SOURCES {
                for (status, minutes) in [(Running, 0), (Succeeded, 90)] {
                    events.push(StageEvent::new(
                        Name::parse("source", source)?,
                        None,
                        Name::parse("stage", JOB_STAGE)?,
                        run_date,
                        status,
                        Timestamp::from_datetime(started + Duration::minutes(minutes)),
                    )?);
                }
            }
        }
        events.extend([
            // sales: clean fails on schema drift, the retry succeeds; convert is slow (50 min).
            event("sales", "job", Running, 0.0)?
                .with_execution_id("arn:aws:states:us-east-1:123456789012:execution:sales:run-1"),
            event("sales", "eu#extract", Running, 0.1)?,
            event("sales", "eu#extract", Done, 10.0)?.with_file_fingerprint("sha256:9f2c41"),
            event("sales", "eu#clean", Running, 10.1)?,
            event("sales", "eu#clean", Failed, 15.0)?
                .with_error("schema drift: column amount", Some("ValueError at row 17")),
            event("sales", "eu#clean", Running, 45.0)?.with_attempt(2),
            event("sales", "eu#clean", Done, 50.0)?,
            event("sales", "eu#convert", Running, 50.1)?,
            event("sales", "eu#convert", Done, 100.0)?,
            event("sales", "eu#merge", Running, 100.1)?,
            event("sales", "eu#merge", Done, 115.0)?,
            event("sales", "job", Succeeded, 115.1)?,
            // billing: a healthy run.
            event("billing", "extract", Running, 60.0)?,
            event("billing", "extract", Done, 70.0)?,
            event("billing", "clean", Running, 70.1)?,
            event("billing", "clean", Done, 80.0)?,
            event("billing", "convert", Running, 80.1)?,
            event("billing", "convert", Done, 100.0)?,
            event("billing", "merge", Running, 100.1)?,
            event("billing", "merge", Done, 110.0)?,
            // orders: extract fails; it waits in the retry queue.
            event("orders", "extract", Running, 120.0)?,
            event("orders", "extract", Failed, 125.0)?.with_error("source API returned 503", None),
            // marketing: still converting at its deadline.
            event("marketing", "extract", Running, 280.0)?,
            event("marketing", "extract", Done, 295.0)?,
            event("marketing", "clean", Running, 295.1)?,
            event("marketing", "clean", Done, 310.0)?,
            event("marketing", "convert", Running, 345.0)?,
            // customers: clean started ten minutes ago and will go silent.
            event("customers", "extract", Running, 330.0)?,
            event("customers", "extract", Done, 340.0)?,
            event("customers", "clean", Running, 350.0)?,
        ]);
        Ok(events)
    }
}
