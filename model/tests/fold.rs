//! The fold's rules, one by one: status precedence, job status, timings, the retry queue.

mod common;

use common::{ev, name, ts};
use pipetel_model::{
    fold_by_job, FailedJob, JobRollup, JobState, JobStatus, Name, RetryPolicy, RetryState, Status,
};
use Status::{Done, Failed, Running, Succeeded};

fn expected() -> Vec<Name> {
    ["extract", "clean", "convert", "merge"].map(name).to_vec()
}

fn rollup(events: &[pipetel_model::StageEvent]) -> JobRollup {
    let jobs = fold_by_job(events);
    assert_eq!(jobs.len(), 1);
    JobRollup::from_state(jobs.values().next().unwrap(), &expected())
}

#[test]
fn all_expected_stages_done_means_succeeded() {
    let r = rollup(&[
        ev("sales", "extract", Running, "01:00:00"),
        ev("sales", "extract", Done, "01:10:00"),
        ev("sales", "clean", Running, "01:10:05"),
        ev("sales", "clean", Done, "01:20:00"),
        ev("sales", "convert", Running, "01:20:05"),
        ev("sales", "convert", Done, "01:30:00"),
        ev("sales", "merge", Running, "01:30:05"),
    ]);
    assert_eq!(r.status, JobStatus::Running);
    assert_eq!(r.finished_at, None);
    assert_eq!(r.duration_seconds, None);

    let mut events = vec![ev("sales", "merge", Done, "01:45:00")];
    events.extend([
        ev("sales", "extract", Running, "01:00:00"),
        ev("sales", "extract", Done, "01:10:00"),
        ev("sales", "clean", Done, "01:20:00"),
        ev("sales", "convert", Done, "01:30:00"),
        ev("sales", "merge", Running, "01:30:05"),
    ]);
    let r = rollup(&events);
    assert_eq!(r.status, JobStatus::Succeeded);
    assert_eq!(r.started_at, Some(ts("2026-06-25T01:00:00Z")));
    assert_eq!(r.finished_at, Some(ts("2026-06-25T01:45:00Z")));
    assert_eq!(r.duration_seconds, Some(45 * 60));
    assert_eq!(r.event_count, 6);
    let extract = &r.stages["extract"];
    assert_eq!((extract.duration_seconds, extract.attempts), (Some(600), 1));
    // clean logged only its terminal event: one attempt, no known start.
    assert_eq!(
        (r.stages["clean"].started_at, r.stages["clean"].attempts),
        (None, 1)
    );
}

#[test]
fn job_stage_decides_when_present() {
    let r = rollup(&[
        ev("sales", "job", Running, "01:00:00"),
        ev("sales", "job", Succeeded, "02:00:00"),
    ]);
    assert_eq!(r.status, JobStatus::Succeeded);
    assert_eq!(r.duration_seconds, Some(3600));

    let r = rollup(&[
        ev("sales", "extract", Done, "01:00:00"),
        ev("sales", "job", Failed, "02:00:00"),
    ]);
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(r.finished_at, Some(ts("2026-06-25T02:00:00Z")));
}

#[test]
fn a_later_event_supersedes_a_failure() {
    let failed = [
        ev("sales", "extract", Running, "01:00:00"),
        ev("sales", "extract", Failed, "01:05:00"),
    ];
    assert_eq!(rollup(&failed).status, JobStatus::Failed);

    let mut retried = failed.to_vec();
    retried.push(ev("sales", "extract", Running, "02:00:00"));
    let r = rollup(&retried);
    assert_eq!(r.status, JobStatus::Running);
    assert_eq!(r.stages["extract"].status, Running);
    assert_eq!(
        r.stages["extract"].started_at,
        Some(ts("2026-06-25T02:00:00Z"))
    );
    assert_eq!(r.stages["extract"].attempts, 2);

    retried.push(ev("sales", "extract", Done, "02:10:00"));
    let r = rollup(&retried);
    assert_eq!(r.stages["extract"].status, Done);
    assert_eq!(r.stages["extract"].duration_seconds, Some(600));
    assert_eq!(
        r.stages["extract"].last_failure.as_ref().unwrap().at,
        ts("2026-06-25T01:05:00Z")
    );
}

#[test]
fn equal_timestamps_prefer_terminal_then_failed() {
    let r = rollup(&[
        ev("sales", "extract", Done, "01:00:00"),
        ev("sales", "extract", Running, "01:00:00"),
    ]);
    assert_eq!(r.stages["extract"].status, Done);
    let r = rollup(&[
        ev("sales", "extract", Done, "01:00:00"),
        ev("sales", "extract", Failed, "01:00:00"),
    ]);
    assert_eq!(r.stages["extract"].status, Failed);
    let r = rollup(&[
        ev("sales", "job", Succeeded, "01:00:00"),
        ev("sales", "job", Failed, "01:00:00"),
    ]);
    assert_eq!(r.status, JobStatus::Failed);
}

#[test]
fn duplicates_count_once() {
    let e = ev("sales", "extract", Running, "01:00:00");
    let r = rollup(&[e.clone(), e.clone(), e]);
    assert_eq!(r.event_count, 1);
    assert_eq!(
        r.stages["extract"].events,
        vec!["2026-06-25T01:00:00Z#RUNNING".to_string()]
    );
}

#[test]
fn categories_are_separate_lanes() {
    let r = rollup(&[
        ev("sales", "eu#extract", Failed, "01:00:00"),
        ev("sales", "us#extract", Done, "01:05:00"),
    ]);
    assert_eq!(r.stages["eu#extract"].status, Failed);
    assert_eq!(r.stages["us#extract"].status, Done);
    assert_eq!(r.stages["eu#extract"].category, Some(name("eu")));
    assert_eq!(r.status, JobStatus::Failed);
}

#[test]
fn a_stored_rollup_gives_back_its_state() {
    let events = [
        ev("sales", "eu#extract", Failed, "01:00:00").with_error("disk full", Some("details")),
        ev("sales", "eu#extract", Running, "01:30:00"),
        ev("sales", "merge", Done, "02:00:00").with_file_fingerprint("sha256:ab"),
    ];
    let state = fold_by_job(&events).into_values().next().unwrap();
    let r = JobRollup::from_state(&state, &expected());
    assert_eq!(JobState::from_rollup(&r).unwrap(), state);
}

#[test]
fn merging_two_jobs_is_refused() {
    let mut a = JobState::from_event(&ev("sales", "extract", Running, "01:00:00"));
    let b = JobState::from_event(&ev("orders", "extract", Running, "01:00:00"));
    let err = a.merge(b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot merge job orders#20260625 into job sales#20260625"
    );
}

#[test]
fn the_retry_queue_follows_failures() {
    let policy = RetryPolicy::default();
    let entries = |events: &[pipetel_model::StageEvent]| {
        FailedJob::derive_all(fold_by_job(events).values().next().unwrap(), &policy)
    };
    let mut events = vec![
        ev("sales", "extract", Running, "01:00:00"),
        ev("sales", "extract", Failed, "01:05:00").with_error("timeout", Some("after 300s")),
    ];
    let e = &entries(&events)[0];
    assert_eq!(e.pk, "sales#extract#20260625");
    assert_eq!((e.retry_state, e.failure_count), (RetryState::Pending, 1));
    assert_eq!(e.next_retry_at, Some(ts("2026-06-25T01:20:00Z")));
    assert_eq!(e.error_details.as_deref(), Some("after 300s"));
    assert_eq!(
        e.ttl,
        ts("2026-06-25T01:05:00Z").epoch_seconds() + 30 * 86_400
    );

    events.push(ev("sales", "extract", Failed, "01:30:00"));
    let e = &entries(&events)[0];
    assert_eq!(
        (e.failure_count, e.next_retry_at),
        (2, Some(ts("2026-06-25T02:00:00Z")))
    );

    let mut resolved = events.clone();
    resolved.push(ev("sales", "extract", Done, "03:00:00"));
    let e = &entries(&resolved)[0];
    assert_eq!(
        (e.retry_state, e.next_retry_at),
        (RetryState::Resolved, None)
    );

    events.push(ev("sales", "extract", Failed, "02:30:00"));
    let e = &entries(&events)[0];
    assert_eq!(
        (e.retry_state, e.failure_count, e.next_retry_at),
        (RetryState::Exhausted, 3, None)
    );

    // A stage that never failed has no entry.
    assert!(entries(&[ev("sales", "merge", Done, "01:00:00")]).is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = RetryPolicy::default();
    assert_eq!(
        [1, 2, 3, 4, 5, 6].map(|n| p.backoff_seconds(n)),
        [900, 1800, 3600, 7200, 14400, 21600]
    );
    assert_eq!(p.backoff_seconds(200), 21600);
}

/// The revision is stored with every rollup and compared on every write: its digest must stay
/// exactly the fields below, in this order, however it is computed.
#[test]
fn the_revision_digests_each_lane_printed_field_by_field() {
    let rollup = rollup(&[
        ev("sales", "eu#extract", Running, "01:00:00"),
        ev("sales", "eu#extract", Done, "01:10:00").with_file_fingerprint("sha256:9f2c"),
        ev("sales", "eu#clean", Running, "01:10:05"),
        ev("sales", "eu#clean", Failed, "01:15:00").with_error("schema drift", Some("row 17")),
        ev("sales", "job", Running, "00:59:00"),
    ]);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut field = |text: &str| {
        hasher.update(text.as_bytes());
        hasher.update(&[0x1f]);
    };
    // Lane order: by category (none first), then stage.
    let mut lanes: Vec<_> = rollup.stages.iter().collect();
    lanes.sort_by_key(|(lane, _)| pipetel_model::Lane::parse(lane).unwrap());
    for (lane, stage) in lanes {
        field(lane);
        stage.events.iter().for_each(|sk| field(sk));
        field(stage.error_summary.as_deref().unwrap_or("\u{0}"));
        field(stage.file_fingerprint.as_deref().unwrap_or("\u{0}"));
        if let Some(failure) = &stage.last_failure {
            field(&failure.at.to_string());
            field(failure.error_summary.as_deref().unwrap_or("\u{0}"));
            field(failure.error_details.as_deref().unwrap_or("\u{0}"));
        }
        field("\u{1e}");
    }
    assert_eq!(rollup.revision, format!("{:016x}", hasher.digest()));
}
