#!/usr/bin/env bash
# The local demo: installs the emulator into .venv if needed, then runs a day of events through
# moto's DynamoDB + Streams, the stream processor and SNS→SQS, then the sla-sweeper and the retry
# dispatcher (moto Step Functions), and prints what operators see.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh
cargo run --quiet --locked -p pipetel-tests --bin demo
