//! Event builders shared by the model's tests.
#![allow(dead_code)]

use pipetel_model::{Name, RunDate, StageEvent, Status, Timestamp};

pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse("timestamp", s).unwrap()
}

pub fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

/// An event of `source` on 2026-06-25; `lane` is `stage` or `category#stage`; `at` is `HH:MM:SS`.
pub fn ev(source: &str, lane: &str, status: Status, at: &str) -> StageEvent {
    let (category, stage) = match lane.split_once('#') {
        Some((c, s)) => (Some(name(c)), name(s)),
        None => (None, name(lane)),
    };
    StageEvent::new(
        name(source),
        category,
        stage,
        RunDate::parse("20260625").unwrap(),
        status,
        ts(&format!("2026-06-25T{at}Z")),
    )
    .unwrap()
}
