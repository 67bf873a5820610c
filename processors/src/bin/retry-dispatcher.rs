//! The `retry-dispatcher` Lambda (EventBridge Scheduler, every 15 minutes): resubmits due
//! failed-jobs entries to the pipeline's state machine.
#![forbid(unsafe_code)]

use lambda_runtime::{run, service_fn, Error};
use pipetel_processors::handler::handle_retry;
use pipetel_processors::retry::RetryDispatcher;
use pipetel_processors::settings::{aws_config, RetrySettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = RetrySettings::from_env()?;
    let config = aws_config(None).await;
    let dispatcher = RetryDispatcher::aws(&config, settings);
    run(service_fn(|event| handle_retry(&dispatcher, event))).await
}
