//! Convergence properties: projections depend only on the *set* of events, whatever the order,
//! duplication, or split across concurrent writers; SLA breaches only grow as time passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::name;
use pipetel_model::{
    fold_by_job, FailedJob, JobRollup, JobState, Name, RetryPolicy, RunDate, SlaRules, StageEvent,
    Status, Timestamp,
};
use proptest::prelude::*;

const CASES: u32 = 1000;

fn expected_stages() -> Vec<Name> {
    ["extract", "clean"].map(name).to_vec()
}

/// Events of a few jobs, with colliding timestamps (to exercise ties) and, now and then, two
/// payloads for one identity (an overwritten item).
fn arb_event() -> impl Strategy<Value = StageEvent> {
    arb_event_of(vec!["sales", "orders"], vec!["20240229", "20260625"])
}

fn arb_event_of(
    sources: Vec<&'static str>,
    dates: Vec<&'static str>,
) -> impl Strategy<Value = StageEvent> {
    (
        prop::sample::select(sources),
        prop::option::of(prop::sample::select(vec!["eu", "us"])),
        prop::sample::select(vec!["extract", "clean", "job"]),
        prop::sample::select(dates),
        0u8..3,
        0i64..40,
        prop::option::of(prop::sample::select(vec!["disk full", "timeout"])),
        prop::option::of(prop::sample::select(vec!["sha256:1", "sha256:2"])),
    )
        .prop_map(
            |(source, category, stage, date, status, minute, error, fingerprint)| {
                let status = match (status, stage == "job") {
                    (0, _) => Status::Running,
                    (1, false) => Status::Done,
                    (1, true) => Status::Succeeded,
                    _ => Status::Failed,
                };
                let run_date = RunDate::parse(date).unwrap();
                let at = Timestamp::from_epoch_seconds(1_750_000_000 + minute * 60).unwrap();
                let mut event = StageEvent::new(
                    name(source),
                    category.map(name),
                    name(stage),
                    run_date,
                    status,
                    at,
                )
                .unwrap();
                if let Some(error) = error {
                    event = event.with_error(error, Some("details"));
                }
                if let Some(fingerprint) = fingerprint {
                    event = event.with_file_fingerprint(fingerprint);
                }
                event
            },
        )
}

/// Everything the processors write for a set of events.
fn projections(events: &[StageEvent]) -> BTreeMap<String, (JobRollup, Vec<FailedJob>)> {
    states_projections(fold_by_job(events))
}

fn states_projections(
    states: BTreeMap<String, JobState>,
) -> BTreeMap<String, (JobRollup, Vec<FailedJob>)> {
    states
        .into_iter()
        .map(|(id, s)| {
            let rollup = JobRollup::from_state(&s, &expected_stages());
            (
                id,
                (rollup, FailedJob::derive_all(&s, &RetryPolicy::default())),
            )
        })
        .collect()
}

/// A history, a shuffled copy of it with duplicates, and a split of it into batches.
fn arb_history() -> impl Strategy<Value = (Vec<StageEvent>, Vec<StageEvent>, Vec<Vec<StageEvent>>)>
{
    prop::collection::vec(arb_event(), 1..40).prop_flat_map(|events| {
        let n = events.len();
        let dupes = prop::collection::vec(0..n, 0..n);
        let cuts = prop::collection::vec(0..=n, 0..6);
        (Just(events), dupes, cuts, any::<prop::sample::Index>()).prop_flat_map(
            |(events, dupes, mut cuts, _)| {
                let mut noisy = events.clone();
                noisy.extend(dupes.iter().map(|&i| events[i].clone()));
                cuts.sort_unstable();
                let mut batches = Vec::new();
                let mut from = 0;
                for cut in cuts.into_iter().chain([events.len()]) {
                    batches.push(events[from..cut.max(from)].to_vec());
                    from = cut.max(from);
                }
                (
                    Just(events),
                    Just(noisy).prop_shuffle(),
                    Just(batches).prop_shuffle(),
                )
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any permutation with any duplication gives identical rollups and failed-job entries.
    #[test]
    fn order_and_duplication_do_not_matter((events, noisy, _) in arb_history()) {
        prop_assert_eq!(projections(&events), projections(&noisy));
    }

    /// Batches folded separately (as concurrent writers would) and merged in any order converge.
    #[test]
    fn batches_merged_in_any_order_converge((events, _, batches) in arb_history()) {
        let mut merged: BTreeMap<String, JobState> = BTreeMap::new();
        for batch in &batches {
            for (id, state) in fold_by_job(batch) {
                match merged.get_mut(&id) {
                    Some(mine) => mine.merge(state).unwrap(),
                    None => { merged.insert(id, state); }
                }
            }
        }
        prop_assert_eq!(states_projections(merged), projections(&events));
    }

    /// Folding an event in is merging the event's own state.
    #[test]
    fn apply_is_merging_the_event_state((events, noisy, _) in arb_history()) {
        let merged = |events: &[StageEvent]| {
            let mut jobs: BTreeMap<String, JobState> = BTreeMap::new();
            for event in events {
                let state = JobState::from_event(event);
                match jobs.get_mut(&event.job_id()) {
                    Some(mine) => mine.merge(state).unwrap(),
                    None => { jobs.insert(event.job_id(), state); }
                }
            }
            jobs
        };
        prop_assert_eq!(fold_by_job(&events), merged(&events));
        prop_assert_eq!(fold_by_job(&noisy), merged(&noisy));
    }

    /// Merge is idempotent, commutative and associative on states.
    #[test]
    fn merge_is_a_semilattice(parts in prop::array::uniform3(prop::collection::vec(arb_event_of(vec!["sales"], vec!["20260625"]), 1..15))) {
        let [a, b, c] = parts.map(|events| fold_by_job(&events).into_values().next().unwrap());
        let (a, b, c) = (&a, &b, &c);
        let join = |x: &JobState, y: &JobState| { let mut x = x.clone(); x.merge(y.clone()).unwrap(); x };
        prop_assert_eq!(join(a, a), a.clone());
        prop_assert_eq!(join(a, b), join(b, a));
        prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
    }

    /// What is stored in a rollup item is enough to resume folding (the read-merge-write cycle).
    #[test]
    fn stored_rollups_round_trip((events, _, _) in arb_history()) {
        for state in fold_by_job(&events).into_values() {
            let stored = JobRollup::from_state(&state, &expected_stages());
            let back = JobState::from_rollup(&stored).unwrap();
            prop_assert_eq!(back.revision(), state.revision());
            prop_assert_eq!(back, state);
        }
    }

    /// For a fixed rollup, the set of breaches at a later `now` contains the set at an earlier one.
    #[test]
    fn sla_breaches_are_monotonic_in_now((events, _, _) in arb_history(), t1 in 0i64..200_000, dt in 0i64..200_000) {
        let rules = SlaRules::from_toml(r#"
            [defaults]
            expected_stages = ["extract", "clean"]
            max_job_duration = "30m"
            deadline = { at = "01:00", days_after = 0 }
            [defaults.max_stage_duration]
            extract = "10m"
            clean = "5m"
        "#).unwrap();
        let earlier = Timestamp::from_epoch_seconds(1_750_000_000 + t1).unwrap();
        let later = earlier.plus_seconds(dt);
        for state in fold_by_job(&events).into_values() {
            let rollup = JobRollup::from_state(&state, &expected_stages());
            let ids = |now| rules.evaluate(&rollup, now).iter().map(|b| b.alert_id()).collect::<BTreeSet<_>>();
            let (before, after) = (ids(earlier), ids(later));
            prop_assert!(before.is_subset(&after), "{:?} then {:?}", before, after);
        }
    }
}
