//! SLA rules: the configuration format and each breach kind at its boundary.

mod common;

use common::{ev, name, ts};
use pipetel_model::Status::{Done, Failed, Running};
use pipetel_model::{
    fold_by_job, AlertKind, ConfigError, FailedJob, JobRollup, Measure, RunDate, SlaRules,
    StageEvent, DEFAULT_RULES_TOML,
};

const RULES: &str = r#"
expected = ["sales"]
[defaults]
expected_stages = ["extract", "merge"]
max_job_duration = "2h"
deadline = { at = "06:00", days_after = 1 }
[defaults.max_stage_duration]
extract = "30m"
[sources.orders]
max_job_duration = "1h"
deadline = { at = "23:00" }
[sources.orders.max_stage_duration]
merge = "10m"
[retry]
max_retries = 2
"#;

fn rules() -> SlaRules {
    SlaRules::from_toml(RULES).unwrap()
}

fn rollup(rules: &SlaRules, events: &[StageEvent]) -> JobRollup {
    let state = fold_by_job(events).into_values().next().unwrap();
    JobRollup::from_state(&state, &rules.for_source(state.source()).expected_stages)
}

fn kinds_at(rules: &SlaRules, r: &JobRollup, now: &str) -> Vec<String> {
    rules
        .evaluate(r, ts(now))
        .iter()
        .map(|b| b.alert_id())
        .collect()
}

#[test]
fn the_shipped_rules_parse() {
    let rules = SlaRules::from_toml(DEFAULT_RULES_TOML).unwrap();
    assert_eq!(rules.for_source(&name("anything")).expected_stages.len(), 4);
    assert_eq!(rules.retry().max_retries, 3);
}

#[test]
fn overrides_replace_what_they_name_and_merge_stage_durations() {
    let r = rules();
    let orders = r.for_source(&name("orders"));
    assert_eq!(orders.max_job_duration, Some(3600));
    assert_eq!(orders.max_stage_duration[&name("extract")], 1800);
    assert_eq!(orders.max_stage_duration[&name("merge")], 600);
    assert_eq!(
        orders.expected_stages,
        r.for_source(&name("x")).expected_stages
    );
    assert_eq!(orders.deadline.unwrap().days_after, 0);
}

#[test]
fn bad_rules_say_where() {
    let err = SlaRules::from_toml("[defaults]\nmax_job_duration = \"two hours\"").unwrap_err();
    assert!(matches!(err, ConfigError::Duration { .. }));
    assert!(
        err.to_string().contains("defaults.max_job_duration"),
        "{err}"
    );

    let err = SlaRules::from_toml("[defaults]\ndeadline = { at = \"25:00\" }").unwrap_err();
    assert!(err.to_string().contains("defaults.deadline.at"), "{err}");

    let err = SlaRules::from_toml("expected = [\"sales\"]").unwrap_err();
    assert!(err.to_string().contains("needs a deadline"), "{err}");

    let err = SlaRules::from_toml("[sources.\"sa#les\"]").unwrap_err();
    assert!(matches!(err, ConfigError::Name { .. }), "{err}");

    assert!(matches!(
        SlaRules::from_toml("[defaults]\nmax_job_durtion = \"1h\""),
        Err(ConfigError::Toml(_))
    ));
    assert!(SlaRules::from_toml("[defaults]\nmax_job_duration = \"0s\"").is_err());
}

#[test]
fn stage_duration_breaches_strictly_above_the_threshold() {
    let r = rules();
    let exactly = rollup(
        &r,
        &[
            ev("sales", "extract", Running, "01:00:00"),
            ev("sales", "extract", Done, "01:30:00"),
        ],
    );
    assert!(kinds_at(&r, &exactly, "2026-06-25T01:31:00Z").is_empty());

    let over = rollup(
        &r,
        &[
            ev("sales", "extract", Running, "01:00:00"),
            ev("sales", "extract", Done, "01:30:01"),
        ],
    );
    let breaches = r.evaluate(&over, ts("2026-06-25T01:31:00Z"));
    assert_eq!(breaches.len(), 1);
    assert_eq!(
        breaches[0].alert_id(),
        "sales#20260625#STAGE_DURATION:extract"
    );
    assert_eq!(
        (breaches[0].threshold, breaches[0].observed),
        (Measure::Seconds(1800), Measure::Seconds(1801))
    );
    assert_eq!(breaches[0].stage, Some(name("extract")));
}

#[test]
fn a_running_stage_breaches_as_time_passes() {
    let r = rules();
    let running = rollup(&r, &[ev("sales", "eu#extract", Running, "01:00:00")]);
    assert!(kinds_at(&r, &running, "2026-06-25T01:30:00Z").is_empty());
    assert_eq!(
        kinds_at(&r, &running, "2026-06-25T01:30:01Z"),
        ["sales#20260625#STAGE_DURATION:eu/extract"]
    );
    let b = &r.evaluate(&running, ts("2026-06-25T01:30:01Z"))[0];
    assert_eq!(
        (b.category.clone(), b.stage.clone()),
        (Some(name("eu")), Some(name("extract")))
    );
}

#[test]
fn job_duration_and_deadline() {
    let r = rules();
    let running = rollup(
        &r,
        &[
            ev("sales", "extract", Running, "01:00:00"),
            ev("sales", "extract", Done, "01:10:00"),
        ],
    );
    assert_eq!(
        kinds_at(&r, &running, "2026-06-25T03:00:01Z"),
        ["sales#20260625#JOB_DURATION"]
    );
    assert_eq!(
        kinds_at(&r, &running, "2026-06-26T06:00:01Z"),
        [
            "sales#20260625#JOB_DURATION",
            "sales#20260625#DEADLINE_MISSED"
        ]
    );
    // A job that succeeded on time never breaches its deadline, however late it is evaluated.
    let done = rollup(
        &r,
        &[
            ev("sales", "extract", Done, "01:10:00"),
            ev("sales", "merge", Done, "01:20:00"),
        ],
    );
    assert!(kinds_at(&r, &done, "2026-07-01T00:00:00Z").is_empty());
}

#[test]
fn deadline_counts_days_across_leap_day() {
    let r = rules();
    let deadline = r.for_source(&name("sales")).deadline.unwrap();
    assert_eq!(
        deadline.on(RunDate::parse("20240228").unwrap()),
        ts("2024-02-29T06:00:00Z")
    );
    assert_eq!(
        deadline.on(RunDate::parse("20241231").unwrap()),
        ts("2025-01-01T06:00:00Z")
    );
}

#[test]
fn not_started_only_for_expected_sources_past_deadline() {
    let r = rules();
    let date = RunDate::parse("20260625").unwrap();
    assert!(r
        .not_started(&name("sales"), date, ts("2026-06-26T06:00:00Z"))
        .is_none());
    let b = r
        .not_started(&name("sales"), date, ts("2026-06-26T06:00:01Z"))
        .unwrap();
    assert_eq!(
        (b.kind, b.alert_id().as_str()),
        (AlertKind::JobNotStarted, "sales#20260625#JOB_NOT_STARTED")
    );
    assert!(r
        .not_started(&name("orders"), date, ts("2026-07-01T00:00:00Z"))
        .is_none());
}

#[test]
fn exhausted_retries_raise_job_failed_once_per_lane() {
    let r = rules();
    let events = [
        ev("sales", "extract", Failed, "01:00:00"),
        ev("sales", "extract", Failed, "02:00:00"),
    ];
    let state = fold_by_job(&events).into_values().next().unwrap();
    let entries = FailedJob::derive_all(&state, r.retry());
    let breaches = r.exhausted(&entries);
    assert_eq!(breaches.len(), 1);
    assert_eq!(breaches[0].alert_id(), "sales#20260625#JOB_FAILED:extract");
    assert_eq!(
        (breaches[0].threshold, breaches[0].observed),
        (Measure::Count(2), Measure::Count(2))
    );
    let one_failure = FailedJob::derive_all(
        &fold_by_job(&events[..1]).into_values().next().unwrap(),
        r.retry(),
    );
    assert!(r.exhausted(&one_failure).is_empty());
}

#[test]
fn the_alert_message_has_the_contract_fields() {
    let r = rules();
    let running = rollup(&r, &[ev("sales", "extract", Running, "01:00:00")]);
    let breach = &r.evaluate(&running, ts("2026-06-25T02:00:00Z"))[0];
    let json = serde_json::to_value(breach.message(ts("2026-06-25T02:00:00Z"))).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "alert_id",
            "category",
            "detected_at",
            "job_id",
            "kind",
            "observed",
            "run_date",
            "severity",
            "source",
            "stage",
            "state",
            "threshold"
        ]
    );
    assert_eq!(json["state"], "BREACHED");
    assert_eq!(json["kind"], "STAGE_DURATION");
    assert_eq!(json["severity"], "WARNING");
    assert_eq!(json["threshold"], 1800);
    assert_eq!(json["run_date"], "20260625");
    assert_eq!(json["category"], serde_json::Value::Null);

    // A resolution is the same body, marked RESOLVED, with when it was found over.
    let resolved = breach
        .message(ts("2026-06-25T02:00:00Z"))
        .resolution(ts("2026-06-25T03:00:00Z"));
    let json = serde_json::to_value(resolved).unwrap();
    assert_eq!(
        (&json["state"], &json["resolved_at"], &json["kind"]),
        (
            &serde_json::json!("RESOLVED"),
            &serde_json::json!("2026-06-25T03:00:00Z"),
            &serde_json::json!("STAGE_DURATION")
        )
    );
}
