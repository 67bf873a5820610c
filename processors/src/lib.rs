//! pipetel's adapters and entry points: the stream processor, its DynamoDB and SNS adapters,
//! the Lambda handler and the CLI.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod consumer;
pub mod decode;
pub mod handler;
pub mod local;
pub mod logger;
pub mod ports;
pub mod processor;
pub mod queries;
pub mod replay;
pub mod settings;
pub mod streams;
pub mod tables;
