#!/usr/bin/env bash
# Every test of the workspace, as CI runs it:
#  1. unit, integration, torture and end-to-end tests (cargo test --workspace), which also
#     build the sample modules (Rust through cargo, C through cc) they load;
#  2. the loom models of the grace-period handshake and of the barrier's count, under
#     --cfg loom in a separate target directory (LOOM_MAX_PREEMPTIONS bounds them; about a
#     minute on 2 cores);
#  3. a compile check of the benchmarks (they are run by hand: docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg loom" \
    CARGO_TARGET_DIR=target/loom cargo test -p rcu-core --release --lib
cargo bench --workspace --no-run
