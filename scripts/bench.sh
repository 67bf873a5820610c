#!/usr/bin/env bash
# The benchmark command (BENCHMARKS.md): builds release binaries, generates the events, then prints
# the processor's in-process speed and write cost on one core, the Lambda binary's stripped size,
# and its init time and peak memory on a 6 MiB event against a local Runtime API and moto.
# `--criterion` also runs `cargo bench -p pipetel-processors --bench hot_paths` (the hot functions, a few minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench
mkdir -p "$out"
./scripts/setup-venv.sh

# Built apart: one build would unify the benchmark's `memory` feature into the Lambda binary.
cargo build --release --locked -p pipetel-processors --bin stream-processor
cargo build --release --locked -p pipetel-processors --features bench --bin pipetel-bench
bench=target/release/pipetel-bench
lambda=target/release/stream-processor

"$bench" generate --records 1000 --out "$out/events-1000.json"
"$bench" generate --max-bytes 6291456 --out "$out/events-6mib.json"

echo
echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), rustc $(rustc --version | cut -d' ' -f2)"
echo
echo "== in process, one core (taskset -c 0): decode + validate + fold + write planning, in-memory store"
taskset -c 0 "$bench" run "$out/events-1000.json"
echo
echo "== stream-processor (release, lto, stripped by the release profile)"
echo "binary size      $(stat -c %s "$lambda") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "$lambda")"))"
.venv/bin/python scripts/lambda-bench.py "$lambda" "$out/events-6mib.json" .venv/bin/moto_server

if [ "${1:-}" = "--criterion" ]; then
  echo
  echo "== criterion: hot functions on the 1,000-record event"
  taskset -c 0 cargo bench --locked -p pipetel-processors --bench hot_paths
fi
