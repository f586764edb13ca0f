#!/usr/bin/env bash
# tools/packages.sh — install the Debian packages vmcpi needs to build, run its demo and its tests.
# Idempotent; installs only what is missing. Needs root (apt-get).
#   build:  gcc pkg-config libssl-dev (the ssh2 crate builds libssh2 against OpenSSL)
#   run:    nothing on the CPI's machine: vmcpi speaks libvirt's protocol, reads disk images and writes settings
#           media itself (no libvirt-clients, no qemu-utils); the hypervisor host runs libvirt + QEMU
#           (tools/libvirt-up.sh installs and starts them here, with virsh and qemu-img, which the tests and
#           the demo use to make images and look at libvirt's state)
#   tests:  ovmf (EFI stemcells), jq, xorriso (only a cross-check: tests/medium.rs reads vmcpi's ISOs with it),
#           strace (tests/libvirt.rs proves the CPI starts no other process),
#           perl (the launcher's fake CPI), ruby (BOSH template rendering), prometheus (promtool),
#           golang-go + golang-github-vmware-govmomi-dev (vSphere simulator), openssh-server/client,
#           time (GNU time: a CPI process's peak memory in tests/vsphere_hostile.rs),
#           openssl (the CLI makes the GitHub App keys of the launcher's tests: no key is kept in the repository),
#           cpio (the test stemcell's initramfs), and what the BOSH director that tests/director_e2e.rs starts
#           (../shared/tools/bosh/director/director-up.sh) runs on: Ruby libraries, puma, PostgreSQL 15,
#           nats-server, nginx (director-up.sh installs any that is missing itself too; here they are installed
#           with the rest, before the tests start)
set -euo pipefail
want=(gcc pkg-config libssl-dev jq ovmf curl ca-certificates)
if [ "${1:-}" = "--tests" ]; then
  want+=(xorriso perl ruby prometheus golang-go golang-github-vmware-govmomi-dev openssh-server openssh-client time cpio openssl
    strace)
  want+=(ruby-activesupport ruby-addressable ruby-bcrypt ruby-delayed-job ruby-eventmachine ruby-httpclient ruby-json
    ruby-logging ruby-multi-json ruby-netaddr ruby-pg ruby-rufus-scheduler ruby-sequel ruby-sinatra ruby-sys-filesystem
    puma postgresql-15 nats-server nginx)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "packages: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # the prometheus package would start its server from a postinst on a systemd host; policy-rc.d stops that
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
