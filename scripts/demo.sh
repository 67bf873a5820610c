#!/usr/bin/env bash
# The local demo (`pipetel demo`): installs the emulator into .venv if needed, then runs a day of
# events through moto's DynamoDB + Streams, the stream consumer and processor, SNS→SQS, the
# sla-sweeper and the retry dispatcher (moto Step Functions), and prints what operators see.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked -p pipetel-processors --bin pipetel -- demo
