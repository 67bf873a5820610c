//! pipetel's adapters and entry points: the stream processor, the SLA sweeper, the retry
//! dispatcher, their DynamoDB, SNS and Step Functions adapters, and the Lambda handlers.
#![forbid(unsafe_code)]

pub mod adapters;
#[cfg(feature = "bench")]
pub mod bench;
pub mod consumer;
pub mod decode;
pub mod handler;
pub mod local;
pub mod logger;
pub mod ports;
pub mod processor;
pub mod queries;
pub mod replay;
pub mod retry;
pub mod settings;
pub mod streams;
pub mod sweeper;
pub mod tables;
