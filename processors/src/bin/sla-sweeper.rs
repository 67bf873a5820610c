//! The `sla-sweeper` Lambda (EventBridge Scheduler, every 5 minutes): silent and never-started
//! jobs, through the same alert ledger as the stream processor; resolutions of finished breaches.
#![forbid(unsafe_code)]

use lambda_runtime::{run, service_fn, Error};
use pipetel_processors::handler::handle_sweep;
use pipetel_processors::settings::{aws_config, Settings};
use pipetel_processors::sweeper::Sweeper;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let config = aws_config(None).await;
    let sweeper = Sweeper::aws(&config, settings);
    run(service_fn(|event| handle_sweep(&sweeper, event))).await
}
