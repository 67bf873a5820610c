//! A seeded generator of realistic Lambda DynamoDB Streams events for the `pipeline-logs` table.
//!
//! Days of pipeline runs: several sources (some split into categories), 4–6 stages per job,
//! RUNNING then DONE, or FAILED and retried with backoff, a job-level record at each end, all
//! written as full-schema items (absent optionals as NULL) like the fixtures under
//! `processors/tests/fixtures/`. The records are ordered by write time and cut at the requested
//! count, so the last jobs are still under way, as in a live stream. A few records are REMOVEs
//! (TTL expiry) and MODIFYs (a producer re-logging a failure with its details), since the stream
//! view type is NEW_AND_OLD_IMAGES.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord, StreamViewType, UserIdentity};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use pipetel_model::{Name, RunDate, StageEvent, Status, Timestamp};
use serde_dynamo::{AttributeValue, Item};
use serde_json::{json, Value};

/// Sources and their categories (empty: the source has no categories).
const SOURCES: &[(&str, &[&str])] = &[
    ("sales", &["eu", "us", "apac"]),
    ("orders", &[]),
    ("inventory", &["eu", "us"]),
    ("payments", &[]),
    ("customers", &[]),
    ("shipments", &["eu", "us"]),
    ("marketing", &[]),
    ("returns", &[]),
];
/// Every stage in pipeline order; each job runs the four the default SLA rules expect and up to
/// two optional ones.
const STAGES: &[(&str, bool)] = &[
    ("extract", true),
    ("validate", false),
    ("clean", true),
    ("enrich", false),
    ("convert", true),
    ("merge", true),
];
/// Failures after which a stage, and so its job, is given up (the default `max_retries`).
const MAX_ATTEMPTS: u32 = 3;
const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/pipeline-logs/stream/2026-06-01T00:00:00.000";
/// Event retention in `pipeline-logs` (the `ttl` attribute).
const EVENT_TTL_DAYS: i64 = 30;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub records: usize,
    pub seed: u64,
}

/// The Lambda event (JSON) of `spec.records` stream records.
pub fn event(spec: Spec) -> Value {
    json!({ "Records": records(spec) })
}

/// The largest event of at most `max_bytes` of JSON (Lambda's payload limit is 6 MiB).
pub fn event_of_size(max_bytes: usize, seed: u64) -> Value {
    // Records are about 1 KB; generate more than can fit, then keep what fits.
    let records = records(Spec {
        records: max_bytes / 500,
        seed,
    });
    let mut size = r#"{"Records":[]}"#.len();
    let fitting: Vec<Value> = records
        .into_iter()
        .take_while(|record| {
            size += record.to_string().len() + 1;
            size <= max_bytes
        })
        .collect();
    json!({ "Records": fitting })
}

fn records(spec: Spec) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let first_day = NaiveDate::from_ymd_opt(2026, 6, 1).expect("a real date");
    let mut writes: Vec<Write> = Vec::new();
    // Every job ends before the next day's first job starts, so whole days, put in write order,
    // cover the requested count once they hold more records than asked for.
    let mut day = 0;
    while writes.len() <= spec.records {
        let run_date = first_day + chrono::Days::new(day);
        for source_index in 0..SOURCES.len() {
            job(&mut rng, source_index, run_date, &mut writes);
        }
        day += 1;
    }
    writes.sort_by_key(|w| w.written_at);
    writes.truncate(spec.records);
    writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| record(&mut rng, i, w))
        .collect()
}

/// One change to the `pipeline-logs` table.
struct Write {
    written_at: DateTime<Utc>,
    change: ChangeKind,
    event: StageEvent,
}

enum ChangeKind {
    Insert,
    /// The item re-put with its failure details filled in.
    Modify {
        old: Box<StageEvent>,
    },
    /// TTL expiry of the item.
    Remove,
}

/// The writes of one job: a job-level RUNNING, each lane's stages in order (retried after a
/// failure, up to [`MAX_ATTEMPTS`]), and a job-level SUCCEEDED or FAILED.
fn job(rng: &mut fastrand::Rng, source_index: usize, run_date: NaiveDate, writes: &mut Vec<Write>) {
    let (source, categories) = SOURCES[source_index];
    let start = run_date
        .and_hms_opt(1, 0, 0)
        .expect("a real time")
        .and_utc()
        + Duration::minutes(source_index as i64 * 7 + rng.i64(0..10));
    let stages: Vec<&str> = STAGES
        .iter()
        .filter(|(_, expected)| *expected || rng.bool())
        .map(|(stage, _)| *stage)
        .collect();
    let lanes: Vec<Option<&str>> = if categories.is_empty() {
        vec![None]
    } else {
        categories.iter().copied().map(Some).collect()
    };
    let mut log = Log {
        rng,
        writes,
        source,
        run_date,
    };
    let execution_id = format!(
        "arn:aws:states:us-east-1:123456789012:execution:etl-{source}:{source}-{}",
        RunDate::from_date(run_date)
    );

    let started = log.event(None, "job", Status::Running, start);
    log.insert(started.with_execution_id(&execution_id));
    let mut job_end = start;
    let mut job_failed = false;
    for (lane_index, category) in lanes.iter().enumerate() {
        let mut at = start + Duration::seconds(5 + lane_index as i64 * 3);
        'stages: for stage in &stages {
            for attempt in 1..=MAX_ATTEMPTS {
                let running = log.event(*category, stage, Status::Running, at);
                log.insert(if attempt > 1 {
                    running.with_attempt(attempt)
                } else {
                    running
                });
                // Mostly minutes; one stage in twenty runs 35–50 minutes, past its SLA limit.
                let minutes = if log.rng.u8(0..20) == 0 {
                    log.rng.i64(35..50)
                } else {
                    log.rng.i64(2..18)
                };
                at += Duration::minutes(minutes) + Duration::seconds(log.rng.i64(0..60));
                if log.rng.u8(0..12) != 0 {
                    let done = log.event(*category, stage, Status::Done, at);
                    let done = if *stage == "extract" {
                        let digest = log.rng.u64(..);
                        done.with_file_fingerprint(format!("sha256:{digest:016x}"))
                    } else {
                        done
                    };
                    log.insert(done);
                    at += Duration::seconds(5);
                    continue 'stages;
                }
                let summary = ERRORS[log.rng.usize(..ERRORS.len())];
                let failed = log
                    .event(*category, stage, Status::Failed, at)
                    .with_error(summary, None);
                log.insert(failed);
                // Retried after the default backoff (15 minutes, doubled each time).
                at += Duration::minutes(15 << (attempt - 1));
            }
            job_failed = true;
            break;
        }
        job_end = job_end.max(at);
    }
    let status = if job_failed {
        Status::Failed
    } else {
        Status::Succeeded
    };
    let finished = log.event(None, "job", status, job_end);
    log.insert(finished.with_execution_id(&execution_id));
}

/// Appends one job's writes, with the occasional REMOVE and MODIFY a live table's stream carries.
struct Log<'a> {
    rng: &'a mut fastrand::Rng,
    writes: &'a mut Vec<Write>,
    source: &'static str,
    run_date: NaiveDate,
}

impl Log<'_> {
    /// An event of this job (the lane's `source`, `run_date`, a `ttl` 30 days after `at`).
    fn event(
        &self,
        category: Option<&str>,
        stage: &str,
        status: Status,
        at: DateTime<Utc>,
    ) -> StageEvent {
        let name = |s: &str| Name::parse("name", s).expect("generator names are valid");
        let at = Timestamp::from_datetime(at);
        StageEvent::new(
            name(self.source),
            category.map(name),
            name(stage),
            RunDate::from_date(self.run_date),
            status,
            at,
        )
        .expect("statuses fit their stages")
        .with_ttl(at.epoch_seconds() + EVENT_TTL_DAYS * 86_400)
    }

    /// Logs `event` (written a fraction of a second after its timestamp). About 1 in 100 is
    /// followed by the TTL expiry of the same lane's event of [`EVENT_TTL_DAYS`] earlier, and about
    /// 1 failure in 20 is re-logged with its details (a MODIFY).
    fn insert(&mut self, event: StageEvent) {
        let written_at =
            event.timestamp().datetime() + Duration::milliseconds(self.rng.i64(5..900));
        if self.rng.u8(0..100) == 0 {
            let expired = Log {
                rng: self.rng,
                writes: self.writes,
                source: self.source,
                run_date: self.run_date - chrono::Days::new(EVENT_TTL_DAYS as u64),
            }
            .event(
                event.category().map(Name::as_str),
                event.stage().as_str(),
                event.status(),
                event.timestamp().datetime() - Duration::days(EVENT_TTL_DAYS),
            );
            self.writes.push(Write {
                written_at: written_at + Duration::milliseconds(1),
                change: ChangeKind::Remove,
                event: expired,
            });
        }
        if event.status() == Status::Failed && self.rng.u8(0..20) == 0 {
            let summary = event.error_summary().unwrap_or_default().to_owned();
            self.writes.push(Write {
                written_at: written_at + Duration::seconds(2),
                change: ChangeKind::Modify {
                    old: Box::new(event.clone()),
                },
                event: event.clone().with_error(&summary, Some(TRACEBACK)),
            });
        }
        self.writes.push(Write {
            written_at,
            change: ChangeKind::Insert,
            event,
        });
    }
}

const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"etl/run.py\", line 88, in run_stage\n    raise StageError(summary)\nStageError";

const ERRORS: &[&str] = &[
    "schema drift: column amount",
    "source API returned 503",
    "S3 GetObject: SlowDown",
    "row count mismatch: expected 10000, got 9731",
    "out of memory in worker",
];

/// The stream record of `write` as Lambda delivers it: the `aws_lambda_events` shape, without the
/// nulls and empty images that shape writes for what a real record leaves out.
fn record(rng: &mut fastrand::Rng, index: usize, write: Write) -> Value {
    let image = |event: &StageEvent| -> Item {
        serde_dynamo::to_item(event.to_item()).expect("stage events serialize to items")
    };
    let keys = |event: &StageEvent| -> Item {
        Item::from(HashMap::from([
            ("pk".to_owned(), AttributeValue::S(event.pk())),
            ("sk".to_owned(), AttributeValue::S(event.sk())),
        ]))
    };
    let mut change = StreamRecord::default();
    change.approximate_creation_date_time = write.written_at;
    change.keys = keys(&write.event);
    change.sequence_number = Some(format!(
        "{}",
        44_215_845_000_000_000_174_504_392_u128 + index as u128 * 100
    ));
    change.stream_view_type = Some(StreamViewType::NewAndOldImages);
    let mut out = EventRecord::default();
    match write.change {
        ChangeKind::Insert => {
            out.event_name = "INSERT".into();
            change.new_image = image(&write.event);
        }
        ChangeKind::Modify { old } => {
            out.event_name = "MODIFY".into();
            change.old_image = image(&old);
            change.new_image = image(&write.event);
        }
        ChangeKind::Remove => {
            out.event_name = "REMOVE".into();
            change.old_image = image(&write.event);
            let mut identity = UserIdentity::default();
            identity.type_ = "Service".into();
            identity.principal_id = "dynamodb.amazonaws.com".into();
            out.user_identity = Some(identity);
        }
    }
    change.size_bytes = approximate_size(&change);
    out.change = change;
    out.aws_region = "us-east-1".into();
    out.event_id = format!("{:016x}{:016x}", rng.u64(..), rng.u64(..));
    out.event_source = Some("aws:dynamodb".into());
    out.event_version = Some("1.1".into());
    out.event_source_arn = Some(STREAM_ARN.into());
    let mut json = serde_json::to_value(out).expect("records serialize");
    let record = json.as_object_mut().expect("a record is an object");
    record.retain(|_, value| !value.is_null());
    let stream = record["dynamodb"]
        .as_object_mut()
        .expect("dynamodb is an object");
    stream.retain(|_, value| value.as_object().is_none_or(|map| !map.is_empty()));
    json
}

/// DynamoDB's `SizeBytes`: roughly the attribute names and values of the images and keys.
fn approximate_size(change: &StreamRecord) -> i64 {
    [&change.keys, &change.new_image, &change.old_image]
        .iter()
        .flat_map(|item| item.iter())
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    _ => 1,
                }
        })
        .sum::<usize>() as i64
}
