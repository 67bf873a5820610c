//! `pipetel-bench`: generates realistic Lambda DynamoDB Streams events and measures the stream
//! processor on them, in process, against the in-memory store.
//!
//! ```text
//! cargo run --release -p pipetel-bench -- generate --records 1000 --out target/bench/events-1000.json
//! taskset -c 0 cargo run --release -p pipetel-bench -- run target/bench/events-1000.json
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pipetel_model::{SlaRules, Timestamp, DEFAULT_RULES_TOML};
use pipetel_processors::bench::generate::{self, Spec};
use pipetel_processors::bench::run::{pass, Pass};

/// The Lambda binary's allocator, so that the figures are the Lambda's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmarks of the pipetel stream processor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a seeded, realistic Lambda DynamoDB Streams event (JSON).
    Generate {
        /// Stream records in the event.
        #[arg(
            long,
            conflicts_with = "max_bytes",
            required_unless_present = "max_bytes"
        )]
        records: Option<usize>,
        /// As many records as fit in this many bytes of JSON (Lambda's limit: 6291456).
        #[arg(long)]
        max_bytes: Option<usize>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Decodes, validates, folds and projects the event's records against the in-memory store,
    /// on a current-thread runtime; prints throughput and the writes the batch would issue.
    Run {
        event: PathBuf,
        /// Timed passes (after a few untimed warm-up passes); the median is reported.
        #[arg(long, default_value_t = 300)]
        iterations: usize,
    },
}

/// Untimed passes first, so caches and the allocator are warm.
const WARM_UP_PASSES: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Generate {
            records,
            max_bytes,
            seed,
            out,
        } => {
            let event = match (records, max_bytes) {
                (Some(records), _) => generate::event(Spec { records, seed }),
                (None, Some(max_bytes)) => generate::event_of_size(max_bytes, seed),
                (None, None) => unreachable!("clap requires --records or --max-bytes"),
            };
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let json = serde_json::to_vec(&event)?;
            std::fs::write(&out, &json)?;
            println!(
                "wrote {} ({} records, {} bytes)",
                out.display(),
                event["Records"].as_array().map_or(0, Vec::len),
                json.len()
            );
        }
        Command::Run { event, iterations } => {
            let bytes = std::fs::read(&event)?;
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            let rules = SlaRules::from_toml(DEFAULT_RULES_TOML)?;
            let wall_clock = Timestamp::from_datetime(chrono::Utc::now());
            let passes: Vec<Pass> = (0..WARM_UP_PASSES + iterations.max(1))
                .map(|_| runtime.block_on(pass(&bytes, &rules, wall_clock)))
                .skip(WARM_UP_PASSES)
                .collect();
            print_figures(&event, bytes.len(), &passes);
        }
    }
    Ok(())
}

fn print_figures(event: &std::path::Path, bytes: usize, passes: &[Pass]) {
    let first = &passes[0];
    let report = &first.report;
    let records = report.records as f64;
    let median = |phase: fn(&Pass) -> Duration| {
        let mut times: Vec<Duration> = passes.iter().map(phase).collect();
        times.sort();
        times[times.len() / 2]
    };
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records;
    let rate = |d: Duration| records / d.as_secs_f64();
    let fastest = |phase: fn(&Pass) -> Duration| passes.iter().map(phase).min().unwrap_or_default();
    let per_thousand = |n: usize| n as f64 * 1000.0 / report.events as f64;

    println!("event            {} ({bytes} bytes)", event.display());
    println!(
        "records          {} = {} events + {} removed + {} malformed, {} distinct jobs",
        report.records, report.events, report.removed, report.malformed, report.jobs
    );
    println!(
        "passes           {} timed; medians, current-thread runtime",
        passes.len()
    );
    println!(
        "decode+validate  {:>7.3} µs/record (parse the event, decode and validate each record)",
        per_record(median(|p| p.decode))
    );
    println!(
        "fold             {:>7.3} µs/record (fold_by_job over the decoded events)",
        per_record(median(|p| p.fold))
    );
    println!(
        "process          {:>7.3} µs/record (group + fold, rollups, retry queue, SLA, writes to memory)",
        per_record(median(|p| p.project))
    );
    for (name, phase) in [
        (
            "decode+fold",
            Pass::decode_and_fold as fn(&Pass) -> Duration,
        ),
        ("decode+process", Pass::total),
    ] {
        println!(
            "{name:<16} {:>7.3} µs/record = {:>7.0} records/s (fastest pass {:.0} records/s)",
            per_record(median(phase)),
            rate(median(phase)),
            rate(fastest(phase))
        );
    }
    println!(
        "requests/batch   {} read; {} writes = {} rollups + {} retry-queue entries + {} alerts",
        first.reads,
        first.writes(),
        report.rollup_writes,
        report.failed_job_writes,
        first.alert_writes
    );
    println!(
        "per 1,000 events {:.0} writes = {:.0} rollups + {:.0} retry-queue entries + {:.0} alerts",
        per_thousand(first.writes()),
        per_thousand(report.rollup_writes),
        per_thousand(report.failed_job_writes),
        per_thousand(first.alert_writes)
    );
}
