#!/usr/bin/env bash
# tools/bench-report.sh — runs every benchmark in benches/ (release builds) and prints their Markdown tables,
# measured in the same run, to stdout. Needs the test peers (root, libvirtd; the vSphere simulator and sshd are
# started by the benchmarks that need them). Progress and build output go to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
bash tools/packages.sh --tests
bash tools/libvirt-up.sh >/dev/null
cargo build --release --locked --bins >&2
echo "# vmcpi benchmark report"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%dT%H:%MZ)"
for b in $(sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"/\1/p}' Cargo.toml); do
  echo
  echo "## $b"
  echo
  cargo bench --locked --bench "$b" 2>/dev/null | sed -n '/^#\{1,\} /d; /^|/p; /^$/p; /^[A-Za-z]/p'
done
