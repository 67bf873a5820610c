//! `pipetel`: log stage events from shell steps, run the stream consumer outside Lambda, query,
//! rebuild and verify the projections, create the tables, and run the local demo.
#![forbid(unsafe_code)]

mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pipetel_model::{RetryState, RunDate, SlaRules, Status, Timestamp};
use pipetel_processors::adapters::StateMachines;
use pipetel_processors::consumer::{
    stream_arn_of, CheckpointTable, ConsumeOptions, StreamConsumer,
};
use pipetel_processors::decode::error_chain;
use pipetel_processors::logger::{Logged, PipelineLogger};
use pipetel_processors::processor::StreamProcessor;
use pipetel_processors::queries::ProjectionReader;
use pipetel_processors::replay::{
    compare, decode_log, dispatcher_owned, nothing_owned, scan_all, write_projections, LogContents,
    Projections, DEFAULT_SCAN_SEGMENTS,
};
use pipetel_processors::retry::RetryDispatcher;
use pipetel_processors::settings::{aws_config, load_rules, RetrySettings, Settings};
use pipetel_processors::sweeper::Sweeper;
use pipetel_processors::tables::{create_tables, Created, TableNames};

/// Exit code when `verify` finds drift (1 is any error, 2 a usage error).
const EXIT_DRIFT: u8 = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "pipetel",
    version,
    about = "Event-sourced telemetry for ETL pipelines: stage events in DynamoDB, projections, SLA alerts.",
    after_help = "Exit codes: 0 success, 1 error (one line on stderr), 2 usage error, 3 `verify` found drift.\n\
                  AWS: the standard environment (AWS_PROFILE, AWS_REGION, credentials). Without --endpoint-url \
                  commands talk to real AWS and say so on stderr."
)]
struct Cli {
    #[command(flatten)]
    aws: AwsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct AwsArgs {
    /// Send AWS requests here (a local emulator, e.g. http://127.0.0.1:5000).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Prefix of the table names (the template's TablePrefix parameter).
    #[arg(long, global = true, env = "PIPETEL_TABLE_PREFIX", default_value = "")]
    table_prefix: String,
    /// SLA and retry rules (TOML); default: PIPETEL_SLA_RULES, else the rules shipped in model/sla-rules.toml.
    #[arg(long, global = true, env = "PIPETEL_SLA_RULES_FILE")]
    sla_rules: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Log a stage event (for shell-based pipeline steps).
    Log {
        #[command(subcommand)]
        status: LogStatus,
    },
    /// Read the event log's stream and update the projections (outside Lambda).
    Consume {
        /// Stop once every shard is read to its end.
        #[arg(long)]
        until_caught_up: bool,
        /// SNS topic for SLA alerts.
        #[arg(long, env = "PIPETEL_ALERT_TOPIC_ARN")]
        topic_arn: String,
        /// Records per GetRecords call.
        #[arg(long, default_value_t = 1000)]
        batch_size: i32,
    },
    /// Replay the event log into projection tables (no alerts are published).
    Rebuild {
        /// Write into the tables under this prefix (created if missing) instead of the live ones.
        #[arg(long)]
        into_prefix: Option<String>,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = DEFAULT_SCAN_SEGMENTS)]
        segments: i32,
    },
    /// Fold the event log and report drift against the stored projections (exit 3 on drift).
    Verify {
        #[arg(long, default_value_t = DEFAULT_SCAN_SEGMENTS)]
        segments: i32,
        #[arg(long)]
        json: bool,
    },
    /// One day's job rollups.
    Jobs {
        /// Run date, YYYYMMDD (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long, value_enum)]
        status: Option<JobStatusArg>,
        #[arg(long)]
        json: bool,
    },
    /// The retry queue (failed-jobs).
    Failed {
        #[arg(long, value_enum, default_value = "pending")]
        state: RetryStateArg,
        #[arg(long)]
        json: bool,
    },
    /// The SLA alerts raised for one run date (from the alert ledger).
    Alerts {
        /// Run date, YYYYMMDD (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Find silent jobs (hung, never started) and resolve breaches that are over (the
    /// sla-sweeper Lambda's work, run once).
    Sweep {
        /// SNS topic for SLA alerts.
        #[arg(long, env = "PIPETEL_ALERT_TOPIC_ARN")]
        topic_arn: String,
        #[command(flatten)]
        run: ScheduledRun,
    },
    /// Resubmit due failed stages to their state machines (the retry-dispatcher Lambda's work,
    /// run once); exit 1 if a resubmission failed.
    Retry {
        /// State machine for every source without its own.
        #[arg(long, env = "PIPETEL_STATE_MACHINE_ARN")]
        state_machine_arn: Option<String>,
        /// Per-source state machines: source=arn,source=arn.
        #[arg(long, env = "PIPETEL_STATE_MACHINES", default_value = "")]
        state_machines: String,
        #[command(flatten)]
        run: ScheduledRun,
    },
    /// Manage the DynamoDB tables.
    Tables {
        #[command(subcommand)]
        action: TablesAction,
    },
    /// The local demo: moto on loopback, a realistic day of pipelines, the processors, the alerts.
    Demo,
}

/// One run of a scheduled function, by hand.
#[derive(Args)]
struct ScheduledRun {
    /// Decide and report what would be done; publish, resubmit and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run as of this time, e.g. 2026-06-25T07:00:00Z (default: now).
    #[arg(long)]
    now: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TablesAction {
    /// Create the tables exactly as infra/template.yaml defines them (existing ones are kept).
    Create,
}

#[derive(Subcommand)]
enum LogStatus {
    /// RUNNING: the stage started.
    Start(LogArgs),
    /// DONE (SUCCEEDED for the `job` stage).
    Done {
        #[command(flatten)]
        run: LogArgs,
        /// Fingerprint of the file the stage produced (e.g. sha256:...).
        #[arg(long)]
        file_fingerprint: Option<String>,
    },
    /// FAILED, with the error (truncated to the contract's limits).
    Failed {
        #[command(flatten)]
        run: LogArgs,
        /// One-line error summary (at most 500 characters kept).
        #[arg(long)]
        error: String,
        /// Error details (at most 1000 characters kept).
        #[arg(long)]
        error_details: Option<String>,
    },
}

#[derive(Args)]
struct LogArgs {
    #[arg(long)]
    source: String,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    stage: String,
    /// YYYYMMDD.
    #[arg(long)]
    run_date: String,
    /// Event time, e.g. 2026-06-25T11:30:56Z (default: now).
    #[arg(long)]
    at: Option<String>,
    /// The orchestrator's execution (e.g. a Step Functions execution ARN).
    #[arg(long, env = "PIPETEL_EXECUTION_ID")]
    execution_id: Option<String>,
    #[arg(long)]
    attempt: Option<u32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum JobStatusArg {
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, ValueEnum)]
enum RetryStateArg {
    Pending,
    Resolved,
    Exhausted,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pipetel: error: {}", error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (warnings and up, minus the SDK's credential-chain chatter, unless RUST_LOG
/// says otherwise); stdout is for results.
fn tracing_init() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,aws_config=error".into()),
        )
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    if let Command::Demo = cli.command {
        demo::run().await?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = aws_config(cli.aws.endpoint_url.as_deref()).await;
    if cli.aws.endpoint_url.is_none() {
        let region = config
            .region()
            .map_or("(no region)".to_owned(), |r| r.to_string());
        eprintln!("pipetel: no --endpoint-url: using AWS in {region} from the environment");
    }
    let tables = TableNames::with_prefix(&cli.aws.table_prefix);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let reader = || {
        ProjectionReader::new(
            dynamodb.clone(),
            &tables.rollups,
            &tables.failed_jobs,
            &tables.alerts,
        )
    };
    match cli.command {
        Command::Demo => unreachable!("handled above"),
        Command::Log { status } => {
            let logged = log(dynamodb, &tables.events, status).await?;
            if logged == Logged::AlreadyLogged {
                eprintln!("pipetel: this event was already logged; nothing written");
            }
        }
        Command::Consume {
            until_caught_up,
            topic_arn,
            batch_size,
        } => {
            let settings =
                Settings::for_tables(&tables, topic_arn, rules(cli.aws.sla_rules.as_deref())?);
            let processor = StreamProcessor::aws(&config, settings);
            let stream_arn = stream_arn_of(&dynamodb, &tables.events).await?;
            let consumer = StreamConsumer::new(
                aws_sdk_dynamodbstreams::Client::new(&config),
                CheckpointTable::new(dynamodb.clone(), &tables.checkpoints),
                stream_arn,
                &processor,
            );
            let report = consumer
                .run(ConsumeOptions {
                    until_caught_up,
                    batch_size: Some(batch_size),
                    ..ConsumeOptions::default()
                })
                .await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Rebuild {
            into_prefix,
            segments,
        } => {
            let rules = rules(cli.aws.sla_rules.as_deref())?;
            let target = TableNames::with_prefix(into_prefix.as_deref().unwrap_or(&tables.prefix));
            if into_prefix.is_some() {
                create_tables(&dynamodb, &target.prefix).await?;
            }
            let (log, projections) =
                read_and_fold_log(&dynamodb, &tables.events, segments, &rules).await?;
            let requests = write_projections(
                &dynamodb,
                &target.rollups,
                &target.failed_jobs,
                &projections,
            )
            .await?;
            println!(
                "rebuilt {} rollups and {} failed-jobs entries into {} and {} from {} events ({} set aside) in {} write requests",
                projections.rollups.len(),
                projections.failed_jobs.len(),
                target.rollups,
                target.failed_jobs,
                log.events.len(),
                log.malformed.len(),
                requests
            );
        }
        Command::Verify { segments, json } => {
            let rules = rules(cli.aws.sla_rules.as_deref())?;
            let (log, projections) =
                read_and_fold_log(&dynamodb, &tables.events, segments, &rules).await?;
            let none = &|_| {};
            let mut drift = compare(
                &tables.rollups,
                "job_id",
                &projections.rollups,
                scan_all(&dynamodb, &tables.rollups, segments, none).await?,
                nothing_owned,
            );
            drift.extend(compare(
                &tables.failed_jobs,
                "pk",
                &projections.failed_jobs,
                scan_all(&dynamodb, &tables.failed_jobs, segments, none).await?,
                dispatcher_owned,
            ));
            output::drift(&drift, log.events.len(), json)?;
            if !drift.is_empty() {
                return Ok(ExitCode::from(EXIT_DRIFT));
            }
        }
        Command::Jobs {
            date,
            source,
            status,
            json,
        } => {
            let status = status.map(|s| match s {
                JobStatusArg::Running => "RUNNING",
                JobStatusArg::Succeeded => "SUCCEEDED",
                JobStatusArg::Failed => "FAILED",
            });
            let jobs = reader()
                .jobs(run_date(date.as_deref())?, source.as_deref(), status)
                .await?;
            output::jobs(&jobs, json)?;
        }
        Command::Failed { state, json } => {
            let state = match state {
                RetryStateArg::Pending => RetryState::Pending,
                RetryStateArg::Resolved => RetryState::Resolved,
                RetryStateArg::Exhausted => RetryState::Exhausted,
            };
            output::failed_jobs(&reader().failed_jobs(state).await?, json)?;
        }
        Command::Alerts { date, json } => {
            output::alerts(&reader().alerts(run_date(date.as_deref())?).await?, json)?;
        }
        Command::Sweep { topic_arn, run } => {
            let settings =
                Settings::for_tables(&tables, topic_arn, rules(cli.aws.sla_rules.as_deref())?);
            let report = Sweeper::aws(&config, settings)
                .run(timestamp(run.now.as_deref())?, run.dry_run)
                .await?;
            output::report(&report, run.json)?;
        }
        Command::Retry {
            state_machine_arn,
            state_machines,
            run,
        } => {
            let settings = RetrySettings {
                failed_jobs_table: tables.failed_jobs.clone(),
                state_machines: StateMachines::parse(state_machine_arn, &state_machines)?,
                rules: rules(cli.aws.sla_rules.as_deref())?,
            };
            let report = RetryDispatcher::aws(&config, settings)
                .run(timestamp(run.now.as_deref())?, run.dry_run)
                .await?;
            output::report(&report, run.json)?;
            if report.failed() > 0 {
                return Err(format!("{} resubmissions failed", report.failed()).into());
            }
        }
        Command::Tables {
            action: TablesAction::Create,
        } => {
            for created in create_tables(&dynamodb, &tables.prefix).await? {
                match created {
                    Created::New(table) => println!("created {table}"),
                    Created::AlreadyThere(table) => println!("exists  {table}"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn log(
    dynamodb: aws_sdk_dynamodb::Client,
    table: &str,
    command: LogStatus,
) -> Result<Logged, BoxError> {
    let (run, status, fingerprint, error) = match command {
        LogStatus::Start(run) => (run, Status::Running, None, None),
        LogStatus::Done {
            run,
            file_fingerprint,
        } => {
            let status = if run.stage == pipetel_model::JOB_STAGE {
                Status::Succeeded
            } else {
                Status::Done
            };
            (run, status, file_fingerprint, None)
        }
        LogStatus::Failed {
            run,
            error,
            error_details,
        } => (run, Status::Failed, None, Some((error, error_details))),
    };
    let mut logger = PipelineLogger::new(
        dynamodb,
        table,
        &run.source,
        run.category.as_deref(),
        &run.run_date,
    )?;
    if let Some(id) = run.execution_id {
        logger = logger.with_execution_id(id);
    }
    let at = match run.at.as_deref() {
        Some(at) => Timestamp::parse("at", at)?,
        None => Timestamp::from_datetime(chrono::Utc::now()),
    };
    let mut event = logger.event(&run.stage, status, at)?;
    if let Some(fingerprint) = fingerprint {
        event = event.with_file_fingerprint(fingerprint);
    }
    if let Some((summary, details)) = error {
        event = event.with_error(&summary, details.as_deref());
    }
    if let Some(attempt) = run.attempt {
        event = event.with_attempt(attempt);
    }
    Ok(logger.log(event).await?)
}

/// The whole event log (parallel Scan, a progress spinner on a terminal), decoded and folded.
async fn read_and_fold_log(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    segments: i32,
    rules: &SlaRules,
) -> Result<(LogContents, Projections), BoxError> {
    let progress = progress_bar("reading the event log");
    let items = scan_all(dynamodb, table, segments, &|n| progress.inc(n as u64)).await?;
    progress.finish_and_clear();
    let log = decode_log(items);
    let projections = Projections::derive(&log.events, rules);
    Ok((log, projections))
}

fn rules(path: Option<&std::path::Path>) -> Result<SlaRules, BoxError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read SLA rules {}: {e}", path.display()))?;
            Ok(SlaRules::from_toml(&text)?)
        }
        None => Ok(load_rules()?),
    }
}

fn timestamp(value: Option<&str>) -> Result<Timestamp, BoxError> {
    Ok(match value {
        Some(value) => Timestamp::parse("now", value)?,
        None => Timestamp::from_datetime(chrono::Utc::now()),
    })
}

fn run_date(value: Option<&str>) -> Result<RunDate, BoxError> {
    Ok(match value {
        Some(value) => RunDate::parse(value)?,
        None => RunDate::from_date(chrono::Utc::now().date_naive()),
    })
}

/// A progress bar on a terminal; hidden when stderr is not one (scripts, CI).
fn progress_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {pos} items ({per_sec})") {
        bar.set_style(style);
    }
    bar
}
