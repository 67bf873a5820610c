//! Coalescing, measured on the wire: DynamoDB requests the processor sends for 1,000 realistic
//! events in Lambda-sized batches, counted at the SDK layer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use pipetel_model::{SlaRules, Status};
use pipetel_processors::handler::process_batch;
use pipetel_tests::scenario::event;
use pipetel_tests::{lambda_batch, OnRequest, Stack};

/// Lambda's default batch size for DynamoDB Streams.
const BATCH_SIZE: usize = 100;

#[tokio::test]
async fn writes_are_coalesced_per_job_per_batch() {
    let stack = Stack::start().await;
    // 100 jobs (one per source) running side by side: 4 stages, RUNNING then DONE, 1,000 events.
    let mut events = Vec::new();
    for job in 0..100 {
        let source = format!("source{job:03}");
        for (i, stage) in ["extract", "clean", "convert", "merge"].iter().enumerate() {
            let start = job % 30 + i as u32 * 5;
            events.push(event(
                &source,
                stage,
                Status::Running,
                &format!("01:{start:02}:00"),
            ));
            events.push(event(
                &source,
                stage,
                Status::Done,
                &format!("01:{:02}:30", start + 4),
            ));
        }
        events.push(event(
            &source,
            "job",
            Status::Running,
            &format!("01:{:02}:00", job % 30),
        ));
        events.push(event(
            &source,
            "job",
            Status::Succeeded,
            &format!("01:{:02}:45", job % 30 + 19),
        ));
    }
    events.sort_by_key(|e| (e.timestamp(), e.job_id()));
    stack.write_events(&events).await;
    let records = stack.read_stream().await;
    assert_eq!(records.len(), 1000);

    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let seen = counts.clone();
    let counted = stack.dynamodb_with(OnRequest::new(move |operation, _| {
        *seen
            .lock()
            .unwrap()
            .entry(operation.to_owned())
            .or_insert(0) += 1;
        Ok(())
    }));
    let no_sla = SlaRules::from_toml(
        "[defaults]\nexpected_stages = [\"extract\", \"clean\", \"convert\", \"merge\"]",
    )
    .unwrap();
    let processor = stack.processor(counted, no_sla);
    let mut jobs_per_batch = Vec::new();
    for batch in records.chunks(BATCH_SIZE) {
        let jobs: BTreeSet<String> = batch
            .iter()
            .map(|r| format!("{:?}", r.change.new_image.get("job_id").unwrap()))
            .collect();
        jobs_per_batch.push(jobs.len());
        let response = process_batch(&processor, lambda_batch(batch)).await;
        assert!(response.batch_item_failures.is_empty());
    }

    let counts = counts.lock().unwrap().clone();
    let batches = records.len() / BATCH_SIZE;
    let job_touches: usize = jobs_per_batch.iter().sum();
    assert_eq!(
        counts.get("BatchGetItem"),
        Some(&batches),
        "one read request per batch: {counts:?}"
    );
    assert_eq!(
        counts.get("PutItem"),
        Some(&job_touches),
        "one write per job per batch: {counts:?}"
    );
    assert_eq!(
        counts.get("GetItem"),
        None,
        "no conflicts, no per-job reads: {counts:?}"
    );
    let total: usize = counts.values().sum();
    println!(
        "1,000 events in {batches} batches of {BATCH_SIZE}: {job_touches} job-batches, DynamoDB requests {counts:?} = {total} ({:.0} per 1,000 events)",
        total as f64
    );
    assert!(
        total < records.len() / 2,
        "coalescing keeps requests well under one per event"
    );
}
