#!/usr/bin/env bash
# The test command: installs what the tests need (.venv with moto, cfn-lint, checkov), then runs
# formatting, lints, every Rust test (unit, property, handler, moto integration) and the infra checks.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
if [ -x scripts/check-infra.sh ]; then ./scripts/check-infra.sh; fi
