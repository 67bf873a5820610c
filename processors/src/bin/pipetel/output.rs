//! What the query commands print: a readable table for people, `--json` for machines.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use pipetel_model::{AlertMessage, FailedJob, JobRollup};
use pipetel_processors::queries::LedgerAlert;
use pipetel_processors::replay::{Drift, DriftKind};
use serde::Serialize;

type Result = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

fn print_json<T: Serialize>(value: &T) -> Result {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A service run's report: its own text, or `--json`.
pub fn report<T: Serialize + std::fmt::Display>(report: &T, json: bool) -> Result {
    if json {
        return print_json(report);
    }
    println!("{report}");
    Ok(())
}

pub fn jobs(rollups: &[JobRollup], json: bool) -> Result {
    if json {
        return print_json(&rollups);
    }
    let mut out = table(&[
        "job_id", "status", "events", "started", "duration", "stages",
    ]);
    for rollup in rollups {
        let stages: Vec<String> = rollup
            .stages
            .iter()
            .map(|(lane, s)| {
                let attempts = if s.attempts > 1 {
                    format!(" ×{}", s.attempts)
                } else {
                    String::new()
                };
                format!("{lane} {}{attempts}", s.status)
            })
            .collect();
        out.add_row(vec![
            rollup.job_id.clone(),
            rollup.status.as_str().to_owned(),
            rollup.event_count.to_string(),
            or_dash(rollup.started_at),
            or_dash(rollup.duration_seconds.map(|d| format!("{d}s"))),
            stages.join(", "),
        ]);
    }
    println!("{out}");
    Ok(())
}

pub fn failed_jobs(entries: &[FailedJob], json: bool) -> Result {
    if json {
        return print_json(&entries);
    }
    let mut out = table(&[
        "pk",
        "state",
        "failures",
        "failed_at",
        "next_retry_at",
        "error",
    ]);
    for entry in entries {
        out.add_row(vec![
            entry.pk.clone(),
            format!("{:?}", entry.retry_state).to_uppercase(),
            entry.failure_count.to_string(),
            entry.failed_at.to_string(),
            or_dash(entry.next_retry_at),
            entry.error_summary.clone().unwrap_or_default(),
        ]);
    }
    println!("{out}");
    Ok(())
}

pub fn alerts(alerts: &[LedgerAlert], json: bool) -> Result {
    if json {
        return print_json(&alerts);
    }
    let mut out = table(&[
        "severity",
        "kind",
        "alert_id",
        "state",
        "threshold",
        "observed",
    ]);
    for alert in alerts {
        let message: Option<AlertMessage> = serde_json::from_str(&alert.message).ok();
        let measure =
            |pick: fn(&AlertMessage) -> String| message.as_ref().map_or_else(String::new, pick);
        out.add_row(vec![
            alert.severity.clone(),
            alert.kind.clone(),
            alert.alert_id.clone(),
            alert.state.clone(),
            measure(|m| serde_json::to_string(&m.threshold).unwrap_or_default()),
            measure(|m| serde_json::to_string(&m.observed).unwrap_or_default()),
        ]);
    }
    println!("{out}");
    Ok(())
}

/// Alert messages as a subscriber received them.
pub fn received(messages: &[AlertMessage]) {
    let mut out = table(&[
        "state",
        "severity",
        "kind",
        "alert_id",
        "threshold",
        "observed",
    ]);
    for message in messages {
        out.add_row(vec![
            message.state.as_str().to_owned(),
            message.severity.as_str().to_owned(),
            message.kind.to_string(),
            message.alert_id.clone(),
            serde_json::to_string(&message.threshold).unwrap_or_default(),
            serde_json::to_string(&message.observed).unwrap_or_default(),
        ]);
    }
    println!("{out}");
}

pub fn drift(drift: &[Drift], events: usize, json: bool) -> Result {
    if json {
        return print_json(&drift);
    }
    if drift.is_empty() {
        println!("no drift: the projections match the {events} events of the log");
        return Ok(());
    }
    let mut out = table(&["table", "key", "drift"]);
    for d in drift {
        let problem = match &d.problem {
            DriftKind::Missing => "missing (the log implies it)".to_owned(),
            DriftKind::Unexpected => "unexpected (the log does not imply it)".to_owned(),
            DriftKind::Differs(fields) => format!("differs: {}", fields.join(", ")),
            DriftKind::Unreadable(reason) => format!("unreadable: {reason}"),
        };
        out.add_row(vec![d.table.clone(), d.key.clone(), problem]);
    }
    println!("{out}");
    println!(
        "{} drifted items; `pipetel rebuild` re-derives them from the log",
        drift.len()
    );
    Ok(())
}
