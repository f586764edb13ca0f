#!/usr/bin/env bash
# tools/demo.sh — the main job: a full BOSH CPI lifecycle against a local QEMU through libvirt.
#
#   create_stemcell → create_vm → create_disk → attach_disk → set_vm_metadata → detach_disk →
#   delete_vm → delete_disk → delete_stemcell
#
# The stemcell is a tiny Linux built from Debian's kernel and busybox (tools/tiny-guest): it boots, prints
# the agent settings it finds on its config drive and the disks it sees, then powers off. Everything runs
# as a shell pipeline, the way BOSH calls a CPI: one JSON request on stdin, one JSON response on stdout.
# Needs root (installs packages, starts libvirtd if none runs) and a Rust toolchain (cargo).
# Env: DEMO_DIR (work dir, default /var/tmp/vmcpi-demo), DOMAIN_TYPE (qemu or kvm; default qemu).
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DEMO_DIR:-/var/tmp/vmcpi-demo}
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "packages and libvirt"
bash "$HERE/tools/packages.sh"
bash "$HERE/tools/libvirt-up.sh" >/dev/null
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }

say "building vmcpi (release)"
(cd "$HERE" && cargo build --release --locked --bin vmcpi)
CPI=$HERE/target/release/vmcpi

say "building the tiny guest"
bash "$HERE/tools/tiny-guest/build.sh" "$DIR/guest"

mkdir -p "$DIR"
cat >"$DIR/cpi.json" <<JSON
{"driver": {"kind": "libvirt", "uri": "qemu:///system", "pool": "vmcpi-demo", "pool_path": "$DIR/pool",
            "domain_type": "${DOMAIN_TYPE:-qemu}", "graphics": false},
 "agent": {"mbus": "https://mbus:demo-password@0.0.0.0:6868", "ntp": ["0.pool.ntp.org"]}}
JSON
# cpi CALL: sends one request (JSON on stdin), prints the response's result, fails on an error
cpi() {
  local resp
  resp=$("$CPI" --config "$DIR/cpi.json" 2>>"$DIR/cpi.log")
  if [ "$(jq -r '.error' <<<"$resp")" != null ]; then echo "CPI error: $(jq -c .error <<<"$resp")" >&2; exit 1; fi
  jq -c '.result' <<<"$resp"
}
wait_off() {
  for _ in $(seq 1 300); do
    [ "$(virsh -c qemu:///system domstate "$1" 2>/dev/null)" = "shut off" ] && return 0; sleep 1
  done; echo "guest did not finish" >&2; return 1
}

say "create_stemcell (an OpenStack-format image: root.img in a gzipped tar)"
rm -f "$DIR/root.img"; qemu-img create -q -f qcow2 "$DIR/root.img" 64M
tar czf "$DIR/image" -C "$DIR" root.img
SC=$(jq -n --arg img "$DIR/image" '{method:"create_stemcell", arguments:[$img, {name:"tiny-guest", version:"1"}], api_version:2}' | cpi | jq -r .)
echo "stemcell: $SC"

say "create_vm (boots the tiny guest; its serial console goes to $DIR/serial.log)"
rm -f "$DIR/serial.log"
VM=$(jq -n --arg sc "$SC" --arg g "$DIR/guest" --arg log "$DIR/serial.log" '{method:"create_vm", api_version:2, arguments:[
  "agent-demo", $sc,
  {cpu:1, ram:256, disk:64, kernel:($g+"/vmlinuz"), initrd:($g+"/initrd.img"), cmdline:"console=ttyS0 panic=1 quiet loglevel=3", serial_log:$log},
  {private:{type:"manual", ip:"10.0.0.10", netmask:"255.255.255.0", gateway:"10.0.0.1", cloud_properties:{type:"user"}}},
  [], {bosh:{group:"demo"}}]}' | cpi | jq -r '.[0]')
echo "vm: $VM"
wait_off "$VM"; grep '^TINY-GUEST: \(start\|block\)' "$DIR/serial.log" >&2
echo "settings the guest read from its config drive:" >&2
sed -n '/user-data .* BEGIN/,/user-data .* END/p' "$DIR/serial.log" | grep -v '^TINY-GUEST' | jq . >&2

say "create_disk + attach_disk"
DISK=$(jq -n --arg vm "$VM" '{method:"create_disk", arguments:[128, {}, $vm], api_version:2}' | cpi | jq -r .)
HINT=$(jq -n --arg vm "$VM" --arg d "$DISK" '{method:"attach_disk", arguments:[$vm, $d], api_version:2}' | cpi)
echo "disk: $DISK, hint: $HINT"

say "set_vm_metadata"
jq -n --arg vm "$VM" '{method:"set_vm_metadata", arguments:[$vm, {director:"demo", name:"demo/0", deployment:"demo"}], api_version:2}' | cpi >/dev/null
virsh -c qemu:///system desc "$VM" --title

say "reboot_vm: the guest now sees the disk at the hinted place"
rm -f "$DIR/serial.log"
jq -n --arg vm "$VM" '{method:"reboot_vm", arguments:[$vm], api_version:2}' | cpi >/dev/null
wait_off "$VM"; grep '^TINY-GUEST: block' "$DIR/serial.log" >&2
echo "persistent disks in the settings: $(sed -n '/user-data .* BEGIN/,/user-data .* END/p' "$DIR/serial.log" | grep -v '^TINY-GUEST' | jq -c .disks.persistent)" >&2

say "detach_disk, delete_vm, delete_disk, delete_stemcell"
jq -n --arg vm "$VM" --arg d "$DISK" '{method:"detach_disk", arguments:[$vm, $d], api_version:2}' | cpi >/dev/null
jq -n --arg vm "$VM" '{method:"delete_vm", arguments:[$vm], api_version:2}' | cpi >/dev/null
jq -n --arg d "$DISK" '{method:"delete_disk", arguments:[$d], api_version:2}' | cpi >/dev/null
jq -n --arg sc "$SC" '{method:"delete_stemcell", arguments:[$sc], api_version:2}' | cpi >/dev/null
echo "left in pool vmcpi-demo: $(virsh -c qemu:///system vol-list vmcpi-demo | tail -n +3 | grep -c . || true) volumes" >&2
say "done: the CPI log is in $DIR/cpi.log"
