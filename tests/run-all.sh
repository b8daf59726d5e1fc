#!/usr/bin/env bash
# Every test of the workspace, as CI runs it:
#  1. a compile check of the benchmarks (they are run by hand: docs/performance.md);
#  2. unit, integration, torture and end-to-end tests (cargo test --workspace), which also
#     build the sample modules (Rust through cargo, C through cc) they load;
#  3. the loom models of the grace-period handshake and of the barrier's count, under
#     --cfg loom in a separate target directory (LOOM_MAX_PREEMPTIONS bounds them);
#  4. one closing line counting every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo bench --workspace --no-run
cargo test --workspace 2>&1 | tee -a "$log"
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg loom" \
    CARGO_TARGET_DIR=target/loom cargo test -p rcu-core --release --lib 2>&1 | tee -a "$log"

# "test result: ok. 8 passed; 0 failed; ..." lines, summed (set -e has already stopped us on
# any failure, so failed is 0 here unless a runner reports one without failing).
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "rcumod: $passed passed, $failed failed"
