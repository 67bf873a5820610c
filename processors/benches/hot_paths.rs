//! Criterion benches of the stream processor's hot functions, on the generated 1,000-record event
//! (the same one `scripts/bench.sh` writes): decoding a batch, folding its events per job,
//! deriving rollups, and `process` against the in-memory store. Throughput is in records.
#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pipetel_model::{fold_by_job, JobRollup, SlaRules, StageEvent, Timestamp, DEFAULT_RULES_TOML};
use pipetel_processors::adapters::memory::{MemoryAlerts, MemoryStore};
use pipetel_processors::bench::generate::{self, Spec};
use pipetel_processors::bench::run::pass;
use pipetel_processors::decode::{decode_raw, Change, DecodedRecord, StreamBatch};
use pipetel_processors::processor::StreamProcessor;

/// The Lambda binary's allocator, so that the figures are the Lambda's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 1000;
const SEED: u64 = 7;

fn event_json() -> Vec<u8> {
    serde_json::to_vec(&generate::event(Spec {
        records: RECORDS,
        seed: SEED,
    }))
    .expect("the event serializes")
}

fn decode(event: &[u8]) -> Vec<DecodedRecord> {
    let batch: StreamBatch = serde_json::from_slice(event).expect("a Lambda event");
    batch.records.iter().map(|raw| decode_raw(raw)).collect()
}

fn events(records: Vec<DecodedRecord>) -> Vec<StageEvent> {
    records
        .into_iter()
        .filter_map(|r| match r.change {
            Change::Event(event) => Some(*event),
            _ => None,
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let event = event_json();
    let rules = SlaRules::from_toml(DEFAULT_RULES_TOML).expect("the shipped rules parse");
    let wall_clock = Timestamp::parse("bench", "2026-06-09T00:00:00Z").expect("a timestamp");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let stage_events = events(decode(&event));
    let states = fold_by_job(&stage_events);

    let mut group = c.benchmark_group("stream_processor");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("decode_batch", |b| b.iter(|| decode(&event)));
    group.bench_function("fold_by_job", |b| b.iter(|| fold_by_job(&stage_events)));
    group.bench_function("rollups_from_state", |b| {
        b.iter(|| {
            states
                .values()
                .map(|state| {
                    let expected = &rules.for_source(state.source()).expected_stages;
                    JobRollup::from_state(state, expected)
                })
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("process_in_memory", |b| {
        b.iter_batched(
            || {
                let processor = StreamProcessor::new(
                    MemoryStore::default(),
                    MemoryAlerts::default(),
                    rules.clone(),
                );
                (processor, decode(&event))
            },
            |(processor, records)| runtime.block_on(processor.process(records, wall_clock)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("event_to_writes", |b| {
        b.iter(|| runtime.block_on(pass(&event, &rules, wall_clock)))
    });
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
