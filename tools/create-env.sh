#!/usr/bin/env bash
# tools/create-env.sh — `bosh create-env` of a real deployment on a local QEMU through vmcpi's libvirt driver:
# a VM with a real BOSH agent (the test stemcell, tools/test-stemcell/), one job whose package the agent
# compiles on the VM, a persistent disk, and a status page you can read at http://127.0.0.1:STATUS_PORT/cgi-bin/status.
#
#   tools/create-env.sh [up|status|down|all] [--family openstack|vsphere] [--disk-size MiB]
#
#   up      build what is missing (vmcpi, the CPI release, the test release, the test stemcell), then
#           bosh create-env (again with another --disk-size: the CLI migrates the persistent disk)
#   status  print the job's status page (what the VM sees: job, persistent disk, network)
#   down    bosh delete-env, then remove the libvirt storage pool create-env made (delete-env leaves it)
#   all     up, status, down (the default)
#
# Everything it writes is under WORK (default /var/tmp/vmcpi-create-env/FAMILY), outside the checkout:
# state.json, creds.yml (the mbus password: a secret), the releases, the CLI's HOME, the VM's serial log.
# The checkout is not changed. Needs root on Debian 12 (packages, libvirtd) and a Rust toolchain.
# Inputs (each overridable; the defaults are the copies in ../shared/tools/bosh beside this repository):
#   BOSH_CLI       the bosh CLI v7 (official download: https://github.com/cloudfoundry/bosh-cli/releases)
#   BOSH_AGENT     the bosh-agent binary, MONIT_TARBALL monit-5.2.5.tar.gz (see tools/test-stemcell/build.sh)
#   MBUS_PORT, STATUS_PORT   loopback ports forwarded to the agent (6868) and the status page (8080);
#                            defaults 26868/28080 (openstack) and 26869/28081 (vsphere)
#   POOL                     the libvirt storage pool (default vmcpi-ce-FAMILY), created in WORK/pool
# Needs Ruby (the bosh CLI renders job templates with it: installed here).
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
action=all
family=openstack
disk_size=1024
while [ $# -gt 0 ]; do
  case "$1" in
    up | status | down | all) action=$1; shift ;;
    --family) family=$2; shift 2 ;;
    --disk-size) disk_size=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "create-env.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$family" in
  openstack) def_mbus=26868; def_status=28080 ;;
  vsphere) def_mbus=26869; def_status=28081 ;;
  *) echo "create-env.sh: --family must be openstack or vsphere" >&2; exit 2 ;;
esac
case "$disk_size" in '' | *[!0-9]*) echo "create-env.sh: --disk-size must be a number of MiB" >&2; exit 2 ;; esac
WORK=${WORK:-/var/tmp/vmcpi-create-env/$family}
MBUS_PORT=${MBUS_PORT:-$def_mbus}
STATUS_PORT=${STATUS_PORT:-$def_status}
shared=$(cd "$HERE/.." && pwd)/shared/tools/bosh
BOSH_CLI=${BOSH_CLI:-$shared/bosh}
export BOSH_AGENT=${BOSH_AGENT:-$shared/bosh-agent} MONIT_TARBALL=${MONIT_TARBALL:-$shared/monit-5.2.5.tar.gz}
POOL=${POOL:-vmcpi-ce-$family}
say() { printf '\n== %s\n' "$*" >&2; }
phase_start=0
phase() { phase_start=$(date +%s); say "$*"; }
took() { echo "create-env.sh: $1 took $(( $(date +%s) - phase_start )) s" >&2; }

[ -x "$BOSH_CLI" ] || { echo "create-env.sh: no bosh CLI at $BOSH_CLI: set BOSH_CLI (https://github.com/cloudfoundry/bosh-cli/releases)" >&2; exit 1; }
mkdir -p "$WORK/home"
# VMCPI_NO_TOOLS_LOG=FILE: the CLI (and so the CPI) runs where virsh, qemu-img, ssh and nc are tripwires that
# record any use in FILE (tools/without-libvirt-tools.sh): how tests/bosh_e2e.rs proves the CPI needs none
bosh() {
  if [ -n "${VMCPI_NO_TOOLS_LOG:-}" ]; then
    HOME=$WORK/home bash "$HERE/tools/without-libvirt-tools.sh" "$VMCPI_NO_TOOLS_LOG" "$BOSH_CLI" --tty "$@"
  else
    HOME=$WORK/home "$BOSH_CLI" --tty "$@"
  fi
}

status() {
  curl -fsS --max-time 10 "http://127.0.0.1:$STATUS_PORT/cgi-bin/status"
}

up() {
  phase "packages, libvirtd, vmcpi"
  bash "$HERE/tools/packages.sh" --tests > /dev/null
  bash "$HERE/tools/libvirt-up.sh" > /dev/null
  if [ -n "${VMCPI_BIN:-}" ]; then
    cpi=$VMCPI_BIN
  else
    command -v cargo > /dev/null || { echo "create-env.sh: cargo not found: install Rust (https://rustup.rs) or set VMCPI_BIN" >&2; exit 1; }
    (cd "$HERE" && cargo build --release --locked --bin vmcpi)
    cpi=$HERE/target/release/vmcpi
  fi
  took "set-up"

  phase "the test stemcell (cached by its inputs)"
  sc_dir=$(bash "$HERE/tools/test-stemcell/build.sh" | tail -n 1)
  took "stemcell"

  phase "the releases: vmcpi (the CPI) and vmcpi-e2e (the job), built outside the checkout"
  # release/build.sh leaves the checkout as it is; one build at a time (two families may run at once)
  ( flock 9
    BOSH=$BOSH_CLI HOME=$WORK/home bash "$HERE/release/build.sh" --binary linux-amd64="$cpi" --tarball "$WORK/vmcpi-release.tgz" ) \
    9> /tmp/vmcpi-create-env-release.lock > "$WORK/release-build.log" 2>&1 || { cat "$WORK/release-build.log" >&2; exit 1; }
  BOSH_CLI=$BOSH_CLI SCRATCH=$WORK/e2e-release bash "$HERE/tools/test-release.sh" "$WORK/e2e-release.tgz" > /dev/null
  took "releases"

  phase "bosh create-env (family $family, persistent disk $disk_size MiB)"
  mkdir -p "$WORK/pool"   # the CPI defines the pool here on first use; the directory must exist
  bosh create-env "$HERE/examples/create-env/manifest.yml" \
    --state "$WORK/state.json" --vars-store "$WORK/creds.yml" \
    -v cpi_release_url="file://$WORK/vmcpi-release.tgz" -v test_release_url="file://$WORK/e2e-release.tgz" \
    -v stemcell_url="file://$sc_dir/bosh-$( [ "$family" = openstack ] && echo openstack-kvm || echo vsphere-esxi )-debian-bookworm-go_agent.tgz" \
    -v kernel="$sc_dir/vmlinuz" -v initrd="$sc_dir/initrd.img" -v serial_log="$WORK/serial.log" \
    -v disk_size="$disk_size" -v mbus_port="$MBUS_PORT" -v status_port="$STATUS_PORT" \
    -v pool="$POOL" -v pool_path="$WORK/pool" -v state_dir="$WORK/cpi-state"
  took "create-env"
}

down() {
  phase "bosh delete-env"
  [ -f "$WORK/state.json" ] || { echo "create-env.sh: no $WORK/state.json: nothing deployed" >&2; return 0; }
  sc_dir=$(bash "$HERE/tools/test-stemcell/build.sh" | tail -n 1)
  bosh delete-env "$HERE/examples/create-env/manifest.yml" \
    --state "$WORK/state.json" --vars-store "$WORK/creds.yml" \
    -v cpi_release_url="file://$WORK/vmcpi-release.tgz" -v test_release_url="file://$WORK/e2e-release.tgz" \
    -v stemcell_url="file://$sc_dir/none.tgz" -v kernel=x -v initrd=x -v serial_log=x -v disk_size="$disk_size" \
    -v mbus_port="$MBUS_PORT" -v status_port="$STATUS_PORT" \
    -v pool="$POOL" -v pool_path="$WORK/pool" -v state_dir="$WORK/cpi-state"
  # create-env's CPI made the pool (pool_path); delete-env deletes what is in it, not the pool itself
  if virsh -c qemu:///system pool-info "$POOL" > /dev/null 2>&1; then
    left=$(virsh -q -c qemu:///system vol-list "$POOL" | awk 'NF { print $1 }')
    if [ -z "$left" ]; then
      virsh -q -c qemu:///system pool-destroy "$POOL" > /dev/null 2>&1 || true
      virsh -q -c qemu:///system pool-undefine "$POOL" > /dev/null
      echo "create-env.sh: removed the empty storage pool $POOL" >&2
    else
      echo "create-env.sh: pool $POOL still holds: $left" >&2
    fi
  fi
  took "delete-env"
}

case "$action" in
  up) up ;;
  status) status ;;
  down) down ;;
  all) up; say "status page (http://127.0.0.1:$STATUS_PORT/cgi-bin/status)"; status; down ;;
esac
