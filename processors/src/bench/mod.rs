//! Benchmarks of the stream processor: a seeded generator of realistic Lambda DynamoDB Streams
//! events ([`generate`]) and one timed pass of such an event through the handler's path against
//! the in-memory store ([`run`]). Used by the `pipetel-bench` command and the criterion benches;
//! see `BENCHMARKS.md`.

pub mod generate;
pub mod run;
