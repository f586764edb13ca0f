#!/usr/bin/env bash
# official-cpi.sh [DEST] — install the official BOSH vSphere CPI (cloudfoundry/bosh-vsphere-cpi-release, Ruby,
# unmodified) into DEST (default ./target/vsphere-cpi) with the vsphere-cpi kit's setup.sh (../shared/tools/
# vsphere-cpi beside the repository, or $VSPHERE_CPI_KIT): Debian's Ruby packages (installed with apt when
# missing) and the gems packed in the kit; no RubyGems.org. The CPI is then DEST/bin/vsphere_cpi CONFIG.json.
# Skipped when DEST was set up from the same archive. For benches/vsphere_official.rs only.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-./target/vsphere-cpi}
KIT=${VSPHERE_CPI_KIT:-$HERE/../../../shared/tools/vsphere-cpi}
log() { echo "vcsim/official-cpi: $*" >&2; }
[ -f "$KIT/setup.sh" ] || { log "no vsphere-cpi kit at $KIT (set VSPHERE_CPI_KIT)"; exit 1; }
if [ -x "$DEST/bin/vsphere_cpi" ] && [ "$DEST/.vsphere-cpi-setup" -nt "$KIT/bosh-vsphere-cpi.tgz" ] &&
  [ "$DEST/.vsphere-cpi-setup" -nt "$KIT/setup.sh" ]; then
  log "up to date: $DEST/bin/vsphere_cpi"
  exit 0
fi
bash "$KIT/setup.sh" "$DEST"
