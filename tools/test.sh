#!/usr/bin/env bash
# tools/test.sh — the test command: installs what the tests need, starts the test peers, runs the suite.
# Needs root on a Debian 12 machine (apt-get, libvirtd) and a Rust toolchain. With CI set, a test whose
# peer is missing fails instead of skipping. Extra arguments go to `cargo test` (e.g. a test-name filter).
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
bash tools/packages.sh --tests
# libvirtd + QEMU (started by hand when no daemon answers; no systemd needed)
bash tools/libvirt-up.sh >/dev/null
# the vSphere simulator (govmomi's, from Debian's packaged source; the tests start their own instances), and
# the patched one (the fidelity patches of ../shared/tools/vsphere-cpi, or $VSPHERE_CPI_KIT), which the vSphere
# suites prefer when it is there (VMCPI_VCSIM=stock: the stock one); both cached in target/
bash tools/vcsim/build.sh target/vcsim
bash tools/vcsim/build-patched.sh target/vcsim-patched ||
  echo "test.sh: no patched simulator (no vsphere-cpi kit); the vSphere suites run on the stock one" >&2
log=$(mktemp)
set +e
cargo test --locked --no-fail-fast --lib --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -oE '^test result: .* ([0-9]+) passed' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -oE '^test result: .* ([0-9]+) failed' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "$passed passed, $failed failed"
exit "$status"
