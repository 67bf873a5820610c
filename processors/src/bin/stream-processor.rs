//! The `stream-processor` Lambda: the `pipeline-logs` stream → rollups, retry queue, SLA alerts.
#![forbid(unsafe_code)]

use lambda_runtime::{run, service_fn, Error};
use pipetel_processors::handler::handle;
use pipetel_processors::processor::StreamProcessor;
use pipetel_processors::settings::{aws_config, Settings};

/// mimalloc rather than glibc's malloc: decoding and folding allocate per record (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let config = aws_config(None).await;
    let processor = StreamProcessor::aws(&config, settings);
    run(service_fn(|event| handle(&processor, event))).await
}
