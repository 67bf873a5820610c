//! The sweep and retry decisions: silent jobs, never-started sources, resolutions, due retries.

mod common;

use std::collections::BTreeSet;

use common::{ev, name, ts};
use pipetel_model::Status::{Done, Failed, Running, Succeeded};
use pipetel_model::{
    execution_name, fold_by_job, plan_retries, plan_sweep, watched_run_dates, AlertKind,
    AlertState, FailedJob, JobRollup, LedgerAlert, LedgerState, RetryState, RunDate, SlaRules,
    StageEvent, Status, SweepPlan, Timestamp, MAX_EXECUTION_NAME_CHARS,
};
use proptest::prelude::*;

const RULES: &str = r#"
expected = ["sales", "orders"]
[defaults]
expected_stages = ["extract", "merge"]
max_job_duration = "2h"
deadline = { at = "06:00", days_after = 1 }
[defaults.max_stage_duration]
extract = "30m"
merge = "10m"
[retry]
max_retries = 3
backoff_base = "15m"
"#;
const LEASE: i64 = 60;

fn rules() -> SlaRules {
    SlaRules::from_toml(RULES).unwrap()
}

fn rollups(rules: &SlaRules, events: &[StageEvent]) -> Vec<JobRollup> {
    fold_by_job(events)
        .into_values()
        .map(|s| JobRollup::from_state(&s, &rules.for_source(s.source()).expected_stages))
        .collect()
}

fn date(s: &str) -> RunDate {
    RunDate::parse(s).unwrap()
}

/// The ledger after `plan` was carried out at `now`.
fn apply(ledger: &mut Vec<LedgerAlert>, plan: &SweepPlan, now: Timestamp) {
    for breach in &plan.raise {
        ledger.push(LedgerAlert {
            message: breach.message(now),
            state: LedgerState::Published,
        });
    }
    for resolution in &plan.resolve {
        for alert in ledger.iter_mut() {
            if alert.message.alert_id == resolution.alert_id {
                alert.state = LedgerState::Resolved;
            }
        }
    }
}

fn ids(plan: &SweepPlan) -> Vec<String> {
    plan.raise.iter().map(|b| b.alert_id()).collect()
}

#[test]
fn run_dates_under_watch_follow_the_deadlines() {
    let dates = watched_run_dates(&rules(), ts("2026-06-26T00:10:00Z"));
    assert_eq!(
        dates,
        [date("20260626"), date("20260625"), date("20260624")]
    );
    let none = SlaRules::from_toml("[defaults]\ndeadline = { at = \"23:00\" }").unwrap();
    assert_eq!(
        watched_run_dates(&none, ts("2026-06-26T00:10:00Z")),
        [date("20260626"), date("20260625")]
    );
}

#[test]
fn a_hung_stage_is_raised_once_and_resolved_when_it_completes() {
    let rules = rules();
    let dates = [date("20260625")];
    let mut events = vec![
        ev("sales", "job", Running, "01:00:00"),
        ev("sales", "extract", Running, "01:00:00"),
    ];
    let mut ledger = Vec::new();

    let early = plan_sweep(
        &rules,
        ts("2026-06-25T01:20:00Z"),
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    assert!(early.raise.is_empty() && early.resolve.is_empty());

    let now = ts("2026-06-25T01:45:00Z");
    let plan = plan_sweep(
        &rules,
        now,
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    assert_eq!(ids(&plan), ["sales#20260625#STAGE_DURATION:extract"]);
    apply(&mut ledger, &plan, now);

    // Later sweeps see it in the ledger: nothing new while it still hangs, except new breaches.
    let later = ts("2026-06-25T03:30:00Z");
    let plan = plan_sweep(
        &rules,
        later,
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    assert_eq!(ids(&plan), ["sales#20260625#JOB_DURATION"]);
    apply(&mut ledger, &plan, later);

    events.extend([
        ev("sales", "extract", Done, "03:40:00"),
        ev("sales", "merge", Running, "03:41:00"),
        ev("sales", "merge", Done, "03:45:00"),
        ev("sales", "job", Succeeded, "03:46:00"),
    ]);
    let done = ts("2026-06-25T03:50:00Z");
    let plan = plan_sweep(
        &rules,
        done,
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    assert!(plan.raise.is_empty(), "{:?}", plan.raise);
    let resolved: BTreeSet<_> = plan
        .resolve
        .iter()
        .map(|m| (m.alert_id.as_str(), m.kind, m.state, m.resolved_at))
        .collect();
    assert_eq!(
        resolved,
        BTreeSet::from([
            (
                "sales#20260625#JOB_DURATION",
                AlertKind::JobDuration,
                AlertState::Resolved,
                Some(done)
            ),
            (
                "sales#20260625#STAGE_DURATION:extract",
                AlertKind::StageDuration,
                AlertState::Resolved,
                Some(done)
            ),
        ])
    );
    apply(&mut ledger, &plan, done);
    let again = plan_sweep(
        &rules,
        done.plus_seconds(300),
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    assert_eq!(again, SweepPlan::default());
}

#[test]
fn a_breach_measured_on_a_finished_stage_is_final() {
    let rules = rules();
    let dates = [date("20260625")];
    let events = [
        ev("sales", "extract", Running, "01:00:00"),
        ev("sales", "extract", Done, "01:50:00"),
    ];
    let rollups = rollups(&rules, &events);
    // The stream processor reported the slow stage when it finished.
    let ledger = vec![LedgerAlert {
        message: rules.evaluate(&rollups[0], ts("2026-06-25T01:50:00Z"))[0]
            .message(ts("2026-06-25T01:50:02Z")),
        state: LedgerState::Published,
    }];
    let plan = plan_sweep(
        &rules,
        ts("2026-06-25T02:00:00Z"),
        &dates,
        &rollups,
        &ledger,
        LEASE,
    );
    assert_eq!(plan, SweepPlan::default());
}

#[test]
fn expected_sources_without_a_job_are_raised_after_their_deadline_and_resolved_when_they_start() {
    let rules = rules();
    let now = ts("2026-06-26T06:30:00Z");
    let dates = watched_run_dates(&rules, now);
    let orders = rollups(&rules, &[ev("orders", "extract", Running, "05:00:00")]);
    let mut ledger = Vec::new();
    let plan = plan_sweep(&rules, now, &dates, &orders, &ledger, LEASE);
    let raised: BTreeSet<_> = plan.raise.iter().map(|b| (b.alert_id(), b.kind)).collect();
    // 20260626 is not due before 20260627T06:00; orders ran on 20260625 (and is late instead).
    assert_eq!(
        raised,
        BTreeSet::from([
            (
                "orders#20260624#JOB_NOT_STARTED".to_owned(),
                AlertKind::JobNotStarted
            ),
            (
                "orders#20260625#DEADLINE_MISSED".to_owned(),
                AlertKind::DeadlineMissed
            ),
            (
                "orders#20260625#JOB_DURATION".to_owned(),
                AlertKind::JobDuration
            ),
            (
                "orders#20260625#STAGE_DURATION:extract".to_owned(),
                AlertKind::StageDuration
            ),
            (
                "sales#20260624#JOB_NOT_STARTED".to_owned(),
                AlertKind::JobNotStarted
            ),
            (
                "sales#20260625#JOB_NOT_STARTED".to_owned(),
                AlertKind::JobNotStarted
            ),
        ])
    );
    apply(&mut ledger, &plan, now);

    let mut events = vec![ev("orders", "extract", Running, "05:00:00")];
    events.push(
        StageEvent::new(
            name("sales"),
            None,
            name("extract"),
            date("20260625"),
            Running,
            ts("2026-06-26T07:00:00Z"),
        )
        .unwrap(),
    );
    let later = ts("2026-06-26T07:05:00Z");
    let plan = plan_sweep(
        &rules,
        later,
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    // Started, but after its deadline: that is a new breach of its own.
    assert_eq!(ids(&plan), ["sales#20260625#DEADLINE_MISSED"]);
    let resolved: Vec<_> = plan.resolve.iter().map(|m| m.alert_id.as_str()).collect();
    assert_eq!(resolved, ["sales#20260625#JOB_NOT_STARTED"]);
}

#[test]
fn abandoned_claims_are_raised_again_fresh_ones_are_not() {
    let rules = rules();
    let now = ts("2026-06-25T01:45:00Z");
    let dates = [date("20260625")];
    let r = rollups(&rules, &[ev("sales", "extract", Running, "01:00:00")]);
    let breach = rules.evaluate(&r[0], now).remove(0);
    let claimed = |at| {
        vec![LedgerAlert {
            message: breach.message(at),
            state: LedgerState::Claimed { at },
        }]
    };
    let fresh = plan_sweep(
        &rules,
        now,
        &dates,
        &r,
        &claimed(now.plus_seconds(-10)),
        LEASE,
    );
    assert!(fresh.raise.is_empty());
    let stale = plan_sweep(
        &rules,
        now,
        &dates,
        &r,
        &claimed(now.plus_seconds(-600)),
        LEASE,
    );
    assert_eq!(ids(&stale), [breach.alert_id()]);
}

#[test]
fn an_exhausted_stage_alert_resolves_when_a_rerun_succeeds() {
    let rules = rules();
    let dates = [date("20260625")];
    let mut events = vec![
        ev("sales", "extract", Failed, "01:00:00"),
        ev("sales", "extract", Failed, "01:20:00"),
        ev("sales", "extract", Failed, "01:50:00"),
    ];
    let entries =
        FailedJob::derive_all(fold_by_job(&events).values().next().unwrap(), rules.retry());
    let exhausted = rules.exhausted(&entries);
    assert_eq!(exhausted.len(), 1);
    let ledger = vec![LedgerAlert {
        message: exhausted[0].message(ts("2026-06-25T01:50:01Z")),
        state: LedgerState::Published,
    }];
    events.push(ev("sales", "extract", Running, "02:00:00"));
    events.push(ev("sales", "extract", Done, "02:10:00"));
    let plan = plan_sweep(
        &rules,
        ts("2026-06-25T02:15:00Z"),
        &dates,
        &rollups(&rules, &events),
        &ledger,
        LEASE,
    );
    let resolved: Vec<_> = plan
        .resolve
        .iter()
        .map(|m| (m.alert_id.as_str(), m.kind))
        .collect();
    assert_eq!(
        resolved,
        [("sales#20260625#JOB_FAILED:extract", AlertKind::JobFailed)]
    );
}

fn entries(events: &[StageEvent]) -> Vec<FailedJob> {
    fold_by_job(events)
        .values()
        .flat_map(|s| FailedJob::derive_all(s, rules().retry()))
        .collect()
}

#[test]
fn due_entries_are_dispatched_under_a_stable_name() {
    let policy = rules().retry().clone();
    let mut events = vec![
        ev("sales", "eu#clean", Running, "01:00:00"),
        ev("sales", "eu#clean", Failed, "01:05:00"),
        ev("orders", "extract", Failed, "01:10:00"),
    ];
    assert!(plan_retries(&entries(&events), &policy, ts("2026-06-25T01:19:59Z")).is_empty());
    let now = ts("2026-06-25T01:30:00Z");
    let plan = plan_retries(&entries(&events), &policy, now);
    let names: Vec<_> = plan
        .iter()
        .map(|d| (d.entry.pk.as_str(), d.execution_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "sales#eu#clean#20260625",
                execution_name("sales#eu#clean#20260625", 1).as_str()
            ),
            (
                "orders#extract#20260625",
                execution_name("orders#extract#20260625", 1).as_str()
            ),
        ]
    );
    assert!(plan[0]
        .execution_name
        .starts_with("sales-eu-clean-20260625-"));
    assert!(plan[0].execution_name.ends_with("-f1"));
    assert_eq!(plan[0].next_retry_at, ts("2026-06-25T01:45:00Z"));
    let input = plan[0].input();
    assert_eq!(
        (
            input.stage.as_str(),
            input.category.as_ref().map(|c| c.as_str()),
            input.attempt
        ),
        ("clean", Some("eu"), 2)
    );

    // The retry runs: the entry leaves the due window; it fails again: back with the next backoff.
    events.push(ev("sales", "eu#clean", Running, "01:31:00"));
    let e = entries(&events)
        .into_iter()
        .find(|e| e.stage.as_str() == "clean")
        .unwrap();
    assert_eq!(
        (e.retry_state, e.next_retry_at),
        (RetryState::Pending, None)
    );
    events.push(ev("sales", "eu#clean", Failed, "01:40:00"));
    let plan = plan_retries(&entries(&events), &policy, ts("2026-06-25T02:10:00Z"));
    let clean: Vec<_> = plan
        .iter()
        .filter(|d| d.entry.stage.as_str() == "clean")
        .collect();
    assert_eq!(clean[0].entry.failure_count, 2);
    assert_eq!(
        clean[0].execution_name,
        execution_name("sales#eu#clean#20260625", 2)
    );
    assert_eq!(
        clean[0].entry.next_retry_at,
        Some(ts("2026-06-25T02:10:00Z"))
    );
}

#[test]
fn execution_names_follow_step_functions_rules() {
    let long = format!(
        "{}#{}#{}#20260625",
        "s".repeat(64),
        "c.d".repeat(21),
        "x".repeat(64)
    );
    for pk in [
        long.as_str(),
        "a.b#extract#20260625",
        "a-b#extract#20260625",
    ] {
        let n = execution_name(pk, u32::MAX);
        assert!(n.len() <= MAX_EXECUTION_NAME_CHARS, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{n}"
        );
    }
    assert_ne!(
        execution_name("a.b#extract#20260625", 1),
        execution_name("a-b#extract#20260625", 1)
    );
    assert_eq!(
        execution_name("a#b#20260625", 1),
        execution_name("a#b#20260625", 1)
    );
}

fn arb_events() -> impl Strategy<Value = Vec<StageEvent>> {
    let event = (
        prop::sample::select(vec!["sales", "orders", "billing"]),
        prop::sample::select(vec!["extract", "merge", "job"]),
        prop::sample::select(vec!["20260624", "20260625"]),
        0u8..3,
        0i64..(48 * 60),
    )
        .prop_map(|(source, stage, day, status, minute)| {
            let status = match (status, stage == "job") {
                (0, _) => Status::Running,
                (1, false) => Status::Done,
                (1, true) => Status::Succeeded,
                _ => Status::Failed,
            };
            let run_date = date(day);
            let at = Timestamp::from_epoch_seconds(
                run_date
                    .date()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp()
                    + minute * 60,
            )
            .unwrap();
            StageEvent::new(name(source), None, name(stage), run_date, status, at).unwrap()
        });
    prop::collection::vec(event, 0..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Carrying out a sweep and sweeping again at the same instant does nothing more.
    #[test]
    fn a_sweep_is_idempotent(events in arb_events(), minutes in 0i64..(72 * 60)) {
        let rules = rules();
        let now = ts("2026-06-24T00:00:00Z").plus_seconds(minutes * 60);
        let dates = watched_run_dates(&rules, now);
        let rollups = rollups(&rules, &events);
        let mut ledger = Vec::new();
        let plan = plan_sweep(&rules, now, &dates, &rollups, &ledger, LEASE);
        apply(&mut ledger, &plan, now);
        prop_assert_eq!(plan_sweep(&rules, now, &dates, &rollups, &ledger, LEASE), SweepPlan::default());
    }

    /// With an empty ledger, what a sweep raises at a later instant contains what it raises earlier.
    #[test]
    fn raised_breaches_only_grow_with_now(events in arb_events(), t1 in 0i64..(72 * 60), dt in 0i64..(24 * 60)) {
        let rules = rules();
        let dates = [date("20260624"), date("20260625")];
        let rollups = rollups(&rules, &events);
        let earlier = ts("2026-06-24T00:00:00Z").plus_seconds(t1 * 60);
        let raised = |now| plan_sweep(&rules, now, &dates, &rollups, &[], LEASE).raise.iter().map(|b| b.alert_id()).collect::<BTreeSet<_>>();
        let (before, after) = (raised(earlier), raised(earlier.plus_seconds(dt * 60)));
        prop_assert!(before.is_subset(&after), "{:?} then {:?}", before, after);
    }
}
