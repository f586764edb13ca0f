#!/usr/bin/env bash
# tools/bench-report.sh [BENCH...] — runs every benchmark in benches/ in one go (release builds; or only the
# ones named, e.g. `vsphere_official`) and prints one Markdown report to stdout: a summary table with the
# side-by-side figures and ratios the proof suite asks for, then each benchmark's full output. vsphere_official
# (vmcpi next to the official vSphere CPI) also rewrites the block between `<!-- bench:official -->` markers in
# README.md ("Why vmcpi"); VMCPI_BENCH_README=0 leaves README.md alone. Needs root and the test peers (libvirtd
# is started here; the vSphere simulators and sshd are started by the benchmarks that need them) and, for
# vsphere_official, ../shared/tools/vsphere-cpi beside the repository ($VSPHERE_CPI_KIT). Build output and
# progress go to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
BENCHES=("$@")
[ ${#BENCHES[@]} -gt 0 ] || BENCHES=(libvirt vmrun vsphere vsphere_official launcher libvirt_rpc)
wants() { [[ " ${BENCHES[*]} " == *" $1 "* ]]; }
bash tools/packages.sh --tests
if wants libvirt || wants libvirt_rpc; then
  dpkg-query -W -f='${Status}' virtinst 2>/dev/null | grep -q 'install ok installed' ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends virtinst >&2
  bash tools/libvirt-up.sh >/dev/null
fi
bash tools/vcsim/build.sh target/vcsim >&2
# the patched simulator (the vsphere-cpi kit's fidelity patches: the vSphere benches run on it when it builds)
bash tools/vcsim/build-patched.sh target/vcsim-patched >&2 || echo "bench-report: no patched simulator" >&2
# the request counter (an HTTPS proxy) and the govmomi yardstick, from the same Debian govmomi source
bash tools/vcsim/build.sh target/countproxy tools/vcsim/countproxy >&2
bash tools/vcsim/build.sh target/govmomi-steps tools/vcsim/govmomi-steps >&2
# the official vSphere CPI (Ruby, from the vsphere-cpi kit) for the side-by-side
if wants vsphere_official; then
  bash tools/vcsim/official-cpi.sh target/vsphere-cpi >&2 || echo "bench-report: the official vSphere CPI cannot be set up" >&2
fi
cargo build --release --locked --bins >&2
# the binary the BOSH release ships: built as release/build.sh builds it (static, not position-independent);
# every benchmark runs it (VMCPI_BIN), so the figures are those of what operators run
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" OPENSSL_STATIC=1 \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vmcpi >&2
export VMCPI_BIN="$HERE/target/x86_64-unknown-linux-gnu/release/vmcpi"
linkage=$(ldd "$VMCPI_BIN" 2>&1 | tr -s ' \t' ' ' | head -3 | paste -sd ' ' - || true)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for b in "${BENCHES[@]}"; do
  echo "bench-report: running $b ($(uptime | sed 's/.*load/load/'))" >&2
  touch "$out/$b"
  cargo bench --locked --bench "$b" >"$out/$b" 2>"$out/$b.err" || { echo "bench-report: $b failed:" >&2; tail -20 "$out/$b.err" >&2; }
done
for b in libvirt vmrun vsphere vsphere_official launcher libvirt_rpc; do touch "$out/$b"; done
# README.md's "Why vmcpi" table, from a vsphere_official run whose every call succeeded
if [ "${VMCPI_BENCH_README:-1}" != 0 ] && grep -q '^<!-- /readme:official -->$' "$out/vsphere_official" &&
  ! grep -q '^FAILED calls' "$out/vsphere_official"; then
  python3 - "$out/vsphere_official" README.md <<'PY'
import re, sys
bench, readme = sys.argv[1], sys.argv[2]
block = re.search(r"^<!-- readme:official -->\n(.*?)^<!-- /readme:official -->$", open(bench).read(), re.S | re.M).group(1)
text = open(readme).read()
new, n = re.subn(r"(^<!-- bench:official -->\n).*?(^<!-- /bench:official -->$)", lambda m: m.group(1) + block + m.group(2),
                 text, flags=re.S | re.M)
if n != 1:
    sys.exit("bench-report: README.md has no <!-- bench:official --> block")
open(readme, "w").write(new)
PY
  echo "bench-report: README.md's vSphere table rewritten" >&2
fi
# value of the libvirt table row whose first cell starts with $1
lv() { awk -F'|' -v k="$1" 'index($2, k) == 2 { gsub(/^ +| +$/, "", $3); print $3; exit }' "$out/libvirt"; }
line() { grep -m1 -- "$2" "$out/$1" | sed 's/^ *//' || true; }
# "client | virsh | ratio" of the libvirt_rpc line that starts with $1
rpc() { grep -m1 -F -- "$1" "$out/libvirt_rpc" | sed -E 's/.* ([0-9.]+ ms) +virsh +([0-9.]+ ms) +\(([0-9]+x)\)$/\1 | `virsh`: \2 | \3/' || true; }

echo "# vmcpi benchmark report"
echo
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ); every figure below comes from this one run."
echo
echo "| what | measured | compared with | ratio |"
echo "|---|---|---|---|"
echo "| release binary, \`ldd\` | ${linkage:-?} | | |"
echo "| \`info\`, whole process | $(lv '`info` whole process') | \`/bin/true\`: $(lv '`/bin/true` whole process') | $(lv 'ratio info / true') |"
echo "| libvirt create_vm, 4 GiB stemcell | $(lv 'create_vm from the 4096 MiB stemcell') | 64 MiB stemcell: $(lv 'create_vm from the 64 MiB stemcell') | $(lv 'create_vm ratio 4 GiB / 64 MiB') |"
echo "| vmrun create_vm, 4 GiB stemcell | $(line vmrun 'create_vm, 4 GiB stemcell, local' | sed 's/.*local: //') | 64 MiB: $(line vmrun 'create_vm, 64 MiB stemcell, local' | sed 's/.*local: //') | $(line vmrun 'create_vm ratio' | sed -n 's/.*64 MiB: \([0-9.]*\).*/\1/p') |"
echo "| vSphere create_vm | see the vSphere table | (the simulator discards disk bytes: no size ratio) | |"
lc() { awk -F'|' -v f="$1" '/^\| \*\*lifecycle\*\*/ { n = split(f, k, ","); s = ""; for (i = 1; i <= n; i++) { v = $k[i]; gsub(/\*|^ +| +$/, "", v); s = s (s == "" ? "" : ", ") v }; print s; exit }' "$out/vsphere_official"; }
echo "| vSphere lifecycle (10 calls), vmcpi | $(lc 4,7) (requests, time) | the official vSphere CPI: $(lc 3,6) | $(lc 5)× the requests, $(lc 8) faster |"
echo "| vSphere requests per call, worst ratio to govmomi | $(sed -n '/^<!-- wire -->$/,/^<!-- \/wire -->$/p' "$out/vsphere" | awk -F'|' 'NR>3 && $5 != "" { r=$5+0; if (r > m) { m=r; op=$2 } } END { gsub(/^ +| +$/, "", op); printf "%.2f (%s)", m, op }') | govmomi-steps, one session per step | ≤ 0.5 wanted |"
echo "| libvirt create_vm (overlay) | $(lv 'create_vm from the 4 GiB stemcell (overlay' | sed 's/ (ratio.*//') | \`virt-clone\` of the same image: $(lv 'virt-clone of a domain') | $(lv 'create_vm from the 4 GiB stemcell (overlay' | sed -n 's/.*ratio \(.*\))/\1/p') |"
echo "| stemcell import 4 GiB (libvirt) | $(lv 'import 4 GiB: vmcpi') | \`tar xzf\`: $(lv 'baseline: `tar xzf`' | sed 's/ (ratio.*//'); \`cp\`: $(lv 'baseline: `cp'); \`qemu-img convert\`: $(lv 'baseline: `qemu-img') | |"
echo "| create_stemcell peak RSS, 4 GiB image | $(lv 'create_stemcell 4096 MiB: peak RSS') | 64 MiB image: $(lv 'create_stemcell 64 MiB: peak RSS') | $(lv 'create_stemcell peak RSS ratio') |"
echo "| vSphere 4 GiB import | $(line vsphere '4 GiB stemcell import' | sed 's/^4 GiB stemcell import (vCenter model): //') | | |"
echo "| SSH overhead per call (vmrun) | $(line vmrun 'has_vm (1 file check' | sed 's/.*-> //') | | |"
echo "| launcher poll, 10 000 jobs / 20 pools | $(line launcher 'launcher thread CPU time' | sed 's/launcher thread CPU time: //') CPU | | |"
echo "| launcher job → create_vm | $(line launcher 'job appears' | sed 's/.*: //') | | |"
echo "| libvirt RPC client: connect + open (unix socket) | $(rpc 'connect + open (unix socket)') |"
echo "| libvirt RPC client: domain lookup + state | $(rpc 'domain lookup + state (open connection)') |"
echo "| libvirt RPC client: connect, lookup, state, close | $(rpc 'connect + lookup + state + close') |"
echo
echo "## Peak RSS per method (libvirt)"
echo
sed -n '/^| method | peak RSS/,$p' "$out/libvirt"
echo
echo "## vSphere requests per CPI call on the wire: vmcpi next to govmomi"
echo
echo "The simulator (vCenter model) behind an HTTPS proxy that counts requests (tools/vcsim/countproxy); vmcpi"
echo "talks TLS to it as to a vCenter (driver.ca_cert), so does tools/vcsim/govmomi-steps, the same steps through"
echo "govmomi with one session per step (connect, login, logout), as a CPI process has. vmcpi requests: a warm"
echo "call (the session an earlier call kept in state_dir); the cold first call (no session yet) is the last"
echo "column. Ratio: vmcpi warm / govmomi. Same simulator, same run."
echo
sed -n '/^<!-- wire -->$/,/^<!-- \/wire -->$/p' "$out/vsphere" | sed '1d;$d'
echo
echo "## vSphere: vmcpi next to the official vSphere CPI"
echo
echo '```'
sed '/^<!-- readme:official -->$/,/^<!-- \/readme:official -->$/d' "$out/vsphere_official"
echo '```'
echo
echo "## HTTP round trips and wall time per method (vSphere simulator)"
echo
echo '```'
cat "$out/vsphere"
echo '```'
for b in libvirt vmrun launcher libvirt_rpc; do
  echo
  echo "## $b (full output)"
  echo
  if [ "$b" = libvirt ]; then sed '/^# /d' "$out/$b"; else echo '```'; cat "$out/$b"; echo '```'; fi
done
