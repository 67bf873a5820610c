//! The generated events are realistic (valid stage events, several sources and stages, the three
//! statuses, REMOVE and MODIFY records) and reproducible from their seed.

use std::collections::BTreeSet;

use pipetel_processors::bench::generate::{self, Spec};
use pipetel_processors::decode::{decode_raw, Change, StreamBatch};

fn batch(spec: Spec) -> StreamBatch {
    serde_json::from_value(generate::event(spec)).expect("a Lambda DynamoDB Streams event")
}

#[test]
fn a_thousand_records_of_valid_varied_events() {
    let batch = batch(Spec {
        records: 1000,
        seed: 7,
    });
    assert_eq!(batch.records.len(), 1000);
    let (mut names, mut sources, mut jobs, mut stages, mut statuses) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    for raw in &batch.records {
        let record: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
        names.insert(record["eventName"].as_str().unwrap().to_owned());
        assert_eq!(record["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        match decode_raw(raw).change {
            Change::Event(event) => {
                sources.insert(event.source().to_string());
                jobs.insert(event.job_id());
                stages.insert(event.stage().to_string());
                statuses.insert(event.status().to_string());
            }
            Change::Removed => {}
            Change::Malformed(err) => panic!("{err}: {}", raw.get()),
        }
    }
    assert_eq!(
        names,
        BTreeSet::from(["INSERT", "MODIFY", "REMOVE"].map(str::to_owned))
    );
    assert!(sources.len() >= 5, "{sources:?}");
    assert!(jobs.len() >= 20, "{jobs:?}");
    assert!(stages.len() >= 6, "{stages:?}");
    for status in ["RUNNING", "DONE", "FAILED", "SUCCEEDED"] {
        assert!(statuses.contains(status), "{statuses:?}");
    }
}

#[test]
fn the_seed_decides_the_event() {
    let spec = Spec {
        records: 50,
        seed: 1,
    };
    assert_eq!(generate::event(spec), generate::event(spec));
    assert_ne!(
        generate::event(spec),
        generate::event(Spec { seed: 2, ..spec })
    );
}

#[test]
fn a_sized_event_fills_but_never_exceeds_its_bytes() {
    let max_bytes = 200_000;
    let json = serde_json::to_string(&generate::event_of_size(max_bytes, 7)).unwrap();
    assert!(json.len() <= max_bytes, "{}", json.len());
    assert!(json.len() > max_bytes - 2_000, "{}", json.len());
}
