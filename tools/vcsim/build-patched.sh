#!/usr/bin/env bash
# build-patched.sh [OUT] — build the patched vSphere simulator to OUT (default ./target/vcsim-patched): govmomi
# 0.24's vcsim from Debian's source with the fidelity patches of the vsphere-cpi kit (../shared/tools/vsphere-cpi
# beside the repository, or $VSPHERE_CPI_KIT; its README explains each patch). Same flags as the stock simulator
# (build.sh). Skips the build when OUT is newer than the kit's build script, its patches and this script, so CI
# pays for it once per target/ (about a minute on 2 cores with a cold Go cache).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-./target/vcsim-patched}
KIT=${VSPHERE_CPI_KIT:-$HERE/../../../shared/tools/vsphere-cpi}
log() { echo "vcsim/build-patched: $*" >&2; }
[ -f "$KIT/build-vcsim.sh" ] || { log "no vsphere-cpi kit at $KIT (set VSPHERE_CPI_KIT)"; exit 1; }
fresh=1
for f in "$KIT/build-vcsim.sh" "$KIT"/vcsim-patches/* "$HERE/build-patched.sh"; do
  [ "$OUT" -nt "$f" ] || fresh=0
done
if [ -x "$OUT" ] && [ $fresh = 1 ]; then
  log "up to date: $OUT"
  exit 0
fi
bash "$KIT/build-vcsim.sh" "$OUT"
