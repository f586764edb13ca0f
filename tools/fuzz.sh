#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS] [TARGET…] — run the cargo-fuzz targets in fuzz/ (default: all, 30 s each).
# Seeds come from fuzz/seeds/ (built from spec/ and the examples); new inputs go to fuzz/corpus/ (ignored by git).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`, done here when missing).
# Prints the executions per target; exits non-zero when a target crashes (the input lands in fuzz/artifacts/).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-30}; shift || true
cd "$HERE/fuzz"
command -v cargo-fuzz >/dev/null || [ -x "$HOME/.cargo/bin/cargo-fuzz" ] || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^vmcpi-fuzz$')
cargo +nightly fuzz build -O "${targets[@]}" >&2 2>/dev/null || cargo +nightly fuzz build -O >&2
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz: $t: ${execs:-?} executions in ${SECS} s, no crash"
  else
    echo "fuzz: $t: CRASH (see fuzz/artifacts/$t)"; tail -30 "$log"; status=1
  fi
  rm -f "$log"
done
exit $status
