#!/usr/bin/env bash
# tools/test-stemcell/build.sh — build a minimal BOSH stemcell with a REAL bosh-agent, in both families:
#
#   OUT/bosh-openstack-kvm-debian-bookworm-go_agent.tgz   qcow2 root.img; settings from a ConfigDrive
#                                                         (config-2); persistent disks by id (virtio)
#   OUT/bosh-vsphere-esxi-debian-bookworm-go_agent.tgz    OVF + stream-optimised VMDK; settings from the
#                                                         CD-ROM's `env` file; disks by SCSI target (scsi)
#   OUT/vmlinuz, OUT/initrd.img                           the kernel both boot (direct kernel boot)
#   OUT/launcher-guest/agent-launcher-guest-openstack-kvm-debian-bookworm.tgz, vmlinuz, initrd.img
#                                                         an agent-launcher guest (OpenStack family, qcow2): the
#                                                         same Debian 12 plus curl and jq, NO bosh-agent, with
#                                                         examples/launcher/bootstrap.sh + its systemd unit
#                                                         enabled, DHCP by default (systemd-networkd), and a
#                                                         stand-in buildkite-agent (buildkite-agent-standin.sh)
#                                                         and a stand-in GitHub Actions runner
#                                                         (actions-runner-standin.sh as /opt/actions-runner/run.sh,
#                                                         user `runner`): neither is the real agent or runner
#
# Usage: tools/test-stemcell/build.sh [--print-dir]       (prints OUT on its last line of stdout)
#
# What is inside: Debian 12 (minbase, from the apt sources this host uses) with systemd, udev and the tools
# the agent runs (iproute2, iputils-arping, parted, fdisk, e2fsprogs, eject), systemd-resolved (the agent
# restarts it when a network has DNS servers), ca-certificates (a director's agents run update-ca-certificates
# at every update_settings; no public CA is trusted: the VMs talk to the director only), busybox (for test
# jobs), the bosh-agent at /var/vcap/bosh/bin/bosh-agent, davcli as /var/vcap/bosh/bin/bosh-blobstore-dav (a
# director's agents fetch packages and jobs from its WebDAV blobstore with it, and upload compiled packages),
# monit 5.2.5 built from source at /var/vcap/bosh/bin/monit (the version stemcells ship: Debian's monit 5.33
# answers the agent's start request with 403 "Invalid CSRF Token"), the stemcell layout
# (/var/vcap/{bosh,data,store,sys,monit}, user vcap in groups admin/vcap, a `syslog` group the agent chowns its
# logs to), systemd units bosh-agent.service (enabled) and monit.service (started by the agent: agent.json
# says ServiceManager systemd), and agent.json per family. Units no test VM needs are masked (kernel
# debug/trace/config file systems, device-mapper/DRM/fuse/loop modules, gettys, apt and maintenance timers).
#
# Boot: the kernel and initrd are NOT inside the image's boot loader: the VMs boot them directly
# (VM cloud_properties kernel/initrd/cmdline "root=LABEL=rootfs console=ttyS0 rw"; add no_timer_check under
# software emulation on a busy host). Why: installing a boot loader into a disk image needs loop devices or
# nbd (privileges a CI sandbox often lacks), while `mke2fs -d` builds the root file system from a directory
# with no mounts at all. Consequence: these stemcells are for libvirt tests only; a real vSphere or
# Workstation host cannot boot them. The initrd is a small one of our own (busybox, five modules, no udev;
# see 2b below): under TCG on 2 cores the root is mounted about 10 s after power-on instead of 40 s.
#
# Inputs, each overridable (so this works outside this repository's layout):
#   BOSH_AGENT      the bosh-agent binary       (default: ../shared/tools/bosh/bosh-agent beside the repo)
#   BOSH_DAVCLI     davcli, the WebDAV blobstore client (default: ../shared/tools/bosh/director/davcli;
#                   upstream: github.com/cloudfoundry/bosh-davcli)
#   MONIT_TARBALL   monit-5.2.5.tar.gz          (default: ../shared/tools/bosh/monit-5.2.5.tar.gz)
#   APT_SOURCES     an apt .sources/.list file  (default: this host's /etc/apt/sources.list.d/debian.sources
#                                                or /etc/apt/sources.list)
#   STEMCELL_CACHE  cache directory             (default: /var/cache/vmcpi/test-stemcell)
# The output lives in STEMCELL_CACHE/<key>, where key = sha256 of this script, the agent, davcli, the monit tarball,
# the bootstrap and its unit, the buildkite-agent and actions-runner stand-ins and the apt sources: an unchanged input set is never rebuilt (CI reuses it across runs on one machine).
# Reproducible: SOURCE_DATE_EPOCH is pinned for mmdebstrap, mke2fs gets a fixed UUID/hash seed, tarballs are
# sorted with fixed owners and dates; what can still differ between two builds is the package versions the
# mirror serves on the day (recorded in packages.txt inside each stemcell).
# Needs root, mmdebstrap, qemu-img, gcc/make/flex/bison (installed when missing, with apt-get). ~5 min cold.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared=$(cd "$repo/.." && pwd)/shared/tools/bosh
agent=${BOSH_AGENT:-$shared/bosh-agent}
davcli=${BOSH_DAVCLI:-$shared/director/davcli}
monit_tgz=${MONIT_TARBALL:-$shared/monit-5.2.5.tar.gz}
cache=${STEMCELL_CACHE:-/var/cache/vmcpi/test-stemcell}
if [ -z "${APT_SOURCES:-}" ]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -s "$f" ] && { APT_SOURCES=$f; break; }
  done
fi
version=0.1
epoch=1700000000   # the pinned build date (2023-11-14), for reproducible file dates

log() { echo "test-stemcell: $*" >&2; }
die() { echo "test-stemcell: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot)"
[ -f "$agent" ] || die "no bosh-agent at $agent: set BOSH_AGENT to a bosh-agent binary (from a bosh-agent release or built from github.com/cloudfoundry/bosh-agent)"
[ -f "$davcli" ] || die "no davcli at $davcli: set BOSH_DAVCLI to a davcli binary (github.com/cloudfoundry/bosh-davcli; the agent runs it as bosh-blobstore-dav)"
[ -f "$monit_tgz" ] || die "no monit tarball at $monit_tgz: set MONIT_TARBALL to monit-5.2.5.tar.gz (bosh-linux-stemcell-builder's stemcell_builder/stages/bosh_monit/assets/)"
[ -n "${APT_SOURCES:-}" ] && [ -s "$APT_SOURCES" ] || die "no apt sources file found: set APT_SOURCES"

# one build at a time per cache (two test families may ask at once): the second waits, then finds it done
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9
bootstrap=$repo/examples/launcher/bootstrap.sh
bootstrap_unit=$repo/examples/launcher/agent-launcher-bootstrap.service
standin=$here/buildkite-agent-standin.sh
runner_standin=$here/actions-runner-standin.sh
key=$( { sha256sum "${BASH_SOURCE[0]}" "$agent" "$davcli" "$monit_tgz" "$bootstrap" "$bootstrap_unit" "$standin" "$runner_standin" | cut -d' ' -f1; cat "$APT_SOURCES"; } | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/done" ]; then
  log "up to date: $out"
  echo "$out"
  exit 0
fi

need=()
for c in mmdebstrap:mmdebstrap cpio:cpio qemu-img:qemu-utils gcc:gcc make:make flex:flex bison:bison sfdisk:fdisk mke2fs:e2fsprogs; do
  command -v "${c%%:*}" > /dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/test-stemcell.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

# --- 1. monit 5.2.5, built on this host (Debian 12: same glibc as the image) ------------------------------
log "building monit from $(basename "$monit_tgz")"
mkdir -p "$work/monit"
tar -xzf "$monit_tgz" -C "$work/monit" --strip-components=1
( cd "$work/monit" &&
  ./configure --prefix=/var/vcap/bosh --without-ssl --without-pam CFLAGS="-fcommon -O2" > "$work/monit.log" 2>&1 &&
  make -j"$(nproc)" >> "$work/monit.log" 2>&1 ) || { tail -n 30 "$work/monit.log" >&2; die "monit did not build"; }

# --- 2. the root file system ----------------------------------------------------------------------------
pkgs=systemd,systemd-sysv,systemd-resolved,udev,dbus,kmod,iproute2,iputils-arping,iputils-ping,parted,fdisk,e2fsprogs,eject,procps,busybox,linux-image-amd64,initramfs-tools,zstd
setup_hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo MODULES=list > "$1/etc/initramfs-tools/conf.d/vmcpi.conf"; echo COMPRESS=zstd >> "$1/etc/initramfs-tools/conf.d/vmcpi.conf"; printf "%s\n" virtio_pci virtio_scsi sd_mod ext4 > "$1/etc/initramfs-tools/modules"'
# debian_root LABEL PACKAGES KERNEL_DIR: a Debian root file system in an empty $root, its kernel and initrd
# in KERNEL_DIR. The Debian part is cached on its own as <cache>/LABEL-<key>.tar (keyed by the package list,
# the setup hook and the apt sources): changing the stemcell layout below does not download and unpack
# Debian again.
debian_root() {
  local label=$1 packages=$2 kdir=$3 tarfile kver
  tarfile=$cache/$label-$( { echo "$packages"; echo "$setup_hook"; cat "$APT_SOURCES"; } | sha256sum | cut -c1-16).tar
  if [ ! -s "$tarfile" ]; then
    log "mmdebstrap bookworm for $label (minbase + $packages)"
    SOURCE_DATE_EPOCH=$epoch mmdebstrap --mode=root --variant=minbase --quiet \
      --aptopt='APT::Install-Recommends "false"' \
      --include="$packages" --setup-hook="$setup_hook" \
      bookworm "$work/$label.tar" "$APT_SOURCES" >&2
    rm -f "$cache/$label"-*.tar
    mv "$work/$label.tar" "$tarfile"
  fi
  log "unpacking $(basename "$tarfile")"
  rm -rf "$root"
  mkdir -p "$root" "$kdir"
  tar -xf "$tarfile" -C "$root" --numeric-owner
  kver=$(ls "$root/lib/modules")
  cp "$root/boot/vmlinuz-$kver" "$kdir/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$kdir/initrd.img"
  # what the VMs never use: the kernel lives outside the image; drivers for real hardware
  rm -rf "$root/boot/"* "$root/lib/modules/$kver/kernel/"{sound,drivers/gpu,drivers/media,drivers/net/wireless,drivers/infiniband,drivers/staging,drivers/bluetooth,net/wireless,net/bluetooth,drivers/isdn}
  chroot "$root" depmod "$kver"
  rm -rf "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/locale/"* "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"*
}
# ca-certificates: on a director's VMs the agent runs update-ca-certificates at every update_settings (with the
# director's trusted_certs), and fails without it
debian_root base "$pkgs,ca-certificates" "$work"

# --- 2b. a small initramfs for the stemcells' direct kernel boot --------------------------------------------
# Debian's initramfs-tools image starts udev to find the root disk: under software emulation (TCG, 2 cores)
# that alone took 25-35 s of every boot, and a director's deploy boots a VM for every compilation, instance,
# recreate and cck. This one is busybox, the five modules the root needs (virtio_pci, virtio_scsi, sd_mod, ext4,
# crc32c) with what they depend on, and an /init that mounts the root named by root= (LABEL=, UUID= or a
# device; rw or ro as the command line says) through devtmpfs and switches to systemd, which starts the real
# udev. The kernel's command line stays as before (root=LABEL=rootfs console=ttyS0 rw).
small_initrd() { # OUT: written from $root
  local out=$1 ird=$work/initrd kver m
  kver=$(ls "$root/lib/modules")
  rm -rf "$ird"
  mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/root" "$ird/modules"
  install -m 0755 "$root/usr/bin/busybox" "$ird/bin/busybox"
  for a in sh cat echo findfs insmod mount umount sleep switch_root; do ln -s busybox "$ird/bin/$a"; done
  # busybox's shared libraries (and the loader), at the paths it was linked against
  for l in $(chroot "$root" ldd /usr/bin/busybox | grep -o '/[^ ]*'); do
    mkdir -p "$ird$(dirname "$l")"
    cp -L "$root$l" "$ird$l"
  done
  # the modules in load order (each after what it depends on)
  : > "$ird/modules/order"
  for m in $(chroot "$root" modprobe -a --show-depends -S "$kver" virtio_pci virtio_scsi sd_mod crc32c_generic ext4 \
    | awk '$1 == "insmod" { print $2 }'); do
    grep -qx "$(basename "$m")" "$ird/modules/order" && continue
    cp "$root$m" "$ird/modules/"
    basename "$m" >> "$ird/modules/order"
  done
  cat > "$ird/init" <<'INIT'
#!/bin/sh
# the test stemcell's initramfs (tools/test-stemcell/build.sh): mount the root, hand over to systemd
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  # a CPU-specific variant (crc32c-intel, *-pclmul) fails where the CPU lacks the instructions (e.g. under TCG):
  # the generic module it stands for is loaded too
  insmod "/modules/$m" 2> /dev/null || case "$m" in *intel* | *pclmul*) ;; *) echo "initramfs: insmod $m failed" ;; esac
done
root= mode=ro
for a in $(cat /proc/cmdline); do
  case "$a" in root=*) root=${a#root=} ;; rw) mode=rw ;; ro) mode=ro ;; esac
done
i=0
while :; do
  case "$root" in LABEL=* | UUID=*) dev=$(findfs "$root" 2> /dev/null) ;; *) dev=$root ;; esac
  [ -n "$dev" ] && [ -b "$dev" ] && break
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo "initramfs: no root device $root after 60 s"; exec sh; fi
  sleep 0.1
done
mount -t ext4 -o "$mode" "$dev" /root || { echo "initramfs: cannot mount $dev"; exec sh; }
mount -o move /dev /root/dev
umount /sys /proc
exec switch_root /root /sbin/init
INIT
  chmod 0755 "$ird/init"
  find "$ird" -exec touch -h -d "@$epoch" {} +
  (cd "$ird" && find . | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible) | gzip -n -9 > "$out"
  rm -rf "$ird"
}
small_initrd "$work/initrd.img"

# --- 3. the stemcell layout ------------------------------------------------------------------------------
log "stemcell layout, agent, monit"
# the VMs talk only to the director's NATS and blobstore, whose CA the agent gets in its settings: no public CA
# is trusted (update-ca-certificates -f, run by the agent, then has no certificate to copy one by one)
: > "$root/etc/ca-certificates.conf"
chroot "$root" update-ca-certificates -f > /dev/null
chroot "$root" sh -e -c '
  groupadd --system syslog
  groupadd admin; groupadd vcap; groupadd bosh_sshers; groupadd bosh_sudoers
  useradd -m -s /bin/bash -g vcap -G admin,vcap,bosh_sshers vcap
  passwd -l root >/dev/null; passwd -l vcap >/dev/null
  systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
'
b=$root/var/vcap/bosh
mkdir -p "$b/bin" "$b/etc" "$b/log" "$root/var/vcap/"{data,store,sys,jobs,packages} "$root/var/vcap/monit/job" \
  "$root/var/vcap/micro_bosh/data/cache"
install -m 0755 "$agent" "$b/bin/bosh-agent"
# a director's agents fetch packages and jobs from its dav blobstore by running bosh-blobstore-dav from PATH
install -m 0755 "$davcli" "$b/bin/bosh-blobstore-dav"
install -m 0755 "$work/monit/monit" "$b/bin/monit"
echo ubuntu > "$b/etc/operating_system"
cat > "$b/etc/monitrc" <<'MONITRC'
set daemon 10
set logfile /var/vcap/monit/monit.log
set httpd port 2822 and use address 127.0.0.1
  allow cleartext /var/vcap/monit/monit.user
include /var/vcap/monit/*.monitrc
include /var/vcap/monit/job/*.monitrc
MONITRC
chmod 0700 "$b/etc/monitrc"
touch "$root/var/vcap/monit/empty.monitrc"
cat > "$b/bin/restart_networking" <<'NET'
#!/bin/sh
# the agent runs this after writing /etc/systemd/network/*.network
exec systemctl restart systemd-networkd
NET
chmod 0755 "$b/bin/restart_networking"
# the agent runs this at every start (stemcells use it as a hook for image-specific set-up scripts)
cat > "$b/bin/bosh-agent-rc" <<'RC'
#!/bin/sh
# runs the image's agent start-up hooks, if any
for f in /var/vcap/bosh/etc/agent-rc.d/*; do
  [ -x "$f" ] && "$f"
done
exit 0
RC
# stemcells start rsyslog and auditd here; this image ships neither, so there is nothing to start
cat > "$b/bin/bosh-start-logging-and-auditing" <<'LOGGING'
#!/bin/sh
echo "bosh-start-logging-and-auditing: this test image has no rsyslog/auditd; logs go to the journal"
exit 0
LOGGING
chmod 0755 "$b/bin/bosh-agent-rc" "$b/bin/bosh-start-logging-and-auditing"
cat > "$root/etc/systemd/system/bosh-agent.service" <<'UNIT'
[Unit]
Description=BOSH agent
After=network.target

[Service]
WorkingDirectory=/var/vcap/bosh
ExecStart=/bin/sh -c 'PATH=/var/vcap/bosh/bin:$PATH exec /var/vcap/bosh/bin/bosh-agent -P "$(cat /var/vcap/bosh/etc/operating_system)" -C /var/vcap/bosh/agent.json'
Restart=always
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
cat > "$root/etc/systemd/system/monit.service" <<'UNIT'
[Unit]
Description=monit (started by the BOSH agent)
After=network.target
ConditionPathExists=/var/vcap/data/sys/run

[Service]
ExecStart=/bin/sh -c 'PATH=/var/vcap/bosh/bin:$PATH exec /var/vcap/bosh/bin/monit -I -c /var/vcap/bosh/etc/monitrc'
Restart=always
KillMode=process
UNIT
ln -sf /etc/systemd/system/bosh-agent.service "$root/etc/systemd/system/multi-user.target.wants/bosh-agent.service"
# boot time under software emulation: every unit is a process start or a mount, and these serve no test VM
# (kernel debug/tracing/config file systems, modules for device-mapper, DRM, fuse and loop devices, pstore,
# getty logins, apt and maintenance timers that would download from the internet)
for u in modprobe@configfs.service modprobe@dm_mod.service modprobe@drm.service modprobe@efi_pstore.service \
  modprobe@fuse.service modprobe@loop.service sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount proc-sys-fs-binfmt_misc.automount \
  systemd-binfmt.service systemd-pstore.service e2scrub_reap.service getty.target \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
# the journal on the serial console: a CI failure shows what the agent said
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' > "$root/etc/systemd/journald.conf.d/console.conf"
echo bosh-stemcell > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
echo 'LABEL=rootfs / ext4 defaults 0 1' > "$root/etc/fstab"
: > "$root/etc/machine-id"
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$work/packages.txt"

# --- 4. one raw disk per family (agent.json differs), then the two stemcell formats --------------------------
size_mib=3072
disk() { # FAMILY-AGENT-JSON OUT.raw
  cp "$1" "$b/agent.json"
  find "$root" -newermt "@$epoch" -exec touch -h -d "@$epoch" {} + 2>/dev/null || true
  truncate -s $(( (size_mib - 1) * 1024 * 1024 )) "$work/part.ext4"
  E2FSPROGS_FAKE_TIME=$epoch mke2fs -q -t ext4 -L rootfs -U 3a1c7d3e-0000-4000-8000-00000000b05b \
    -E hash_seed=3a1c7d3e-0000-4000-8000-00000000b05b,root_owner=0:0 -d "$root" "$work/part.ext4"
  truncate -s $(( size_mib * 1024 * 1024 )) "$2"
  echo 'label: dos
label-id: 0x0b05b0b0
start=2048, type=83, bootable' | sfdisk -q "$2"
  dd if="$work/part.ext4" of="$2" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$work/part.ext4"
}
tarball() { # OUT.tgz DIR FILES...
  local o=$1 d=$2; shift 2
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$d" -cf - "$@" | gzip -n -1 > "$o"
}
manifest() { # NAME INFRA FORMATS HYPERVISOR DISK_FORMAT SHA1 EXTRA
  cat <<MF
---
name: $1
version: '$version'
bosh_protocol: 1
api_version: 3
sha1: $6
operating_system: debian-bookworm
stemcell_formats: [$3]
cloud_properties:
  name: $1
  version: '$version'
  infrastructure: $2
  hypervisor: $4
  disk: $size_mib
  disk_format: $5
  container_format: bare
  os_type: linux
  os_distro: debian
  architecture: x86_64
$7
MF
}

mkdir -p "$work/os" "$work/vs" "$work/out"
cat > "$work/agent-openstack.json" <<'JSON'
{
  "Platform": {"Linux": {"CreatePartitionIfNoEphemeralDisk": true, "DevicePathResolutionType": "virtio", "ServiceManager": "systemd"}},
  "Infrastructure": {"Settings": {"Sources": [
    {"Type": "File", "SettingsPath": "/var/vcap/bosh/agent-bootstrap-env.json"},
    {"Type": "ConfigDrive", "DiskPaths": ["/dev/disk/by-label/CONFIG-2", "/dev/disk/by-label/config-2"],
     "MetaDataPath": "ec2/latest/meta-data.json", "UserDataPath": "ec2/latest/user-data"}
  ], "UseServerName": false, "UseRegistry": false}}
}
JSON
cat > "$work/agent-vsphere.json" <<'JSON'
{
  "Platform": {"Linux": {"DevicePathResolutionType": "scsi", "PartitionerType": "parted", "ServiceManager": "systemd"}},
  "Infrastructure": {"Settings": {"Sources": [{"Type": "CDROM", "FileName": "env"}], "UseRegistry": false}}
}
JSON

log "OpenStack family: qcow2 root.img"
disk "$work/agent-openstack.json" "$work/os.raw"
qemu-img convert -c -f raw -O qcow2 -o compat=0.10 "$work/os.raw" "$work/os/root.img"
rm -f "$work/os.raw"
tarball "$work/os/image" "$work/os" root.img
name=bosh-openstack-kvm-debian-bookworm-go_agent
sha=$(sha1sum "$work/os/image" | cut -d' ' -f1)
manifest $name openstack openstack-qcow2 kvm qcow2 "$sha" "  auto_disk_config: true" > "$work/os/stemcell.MF"
cp "$work/packages.txt" "$work/os/packages.txt"; : > "$work/os/dev_tools_file_list.txt"
tarball "$work/out/$name.tgz" "$work/os" stemcell.MF image packages.txt dev_tools_file_list.txt

log "vSphere family: OVF + stream-optimised VMDK"
disk "$work/agent-vsphere.json" "$work/vs.raw"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic,hwversion=13 "$work/vs.raw" "$work/vs/image-disk1.vmdk"
rm -f "$work/vs.raw"
vmdk_bytes=$(stat -c %s "$work/vs/image-disk1.vmdk")
cat > "$work/vs/image.ovf" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="image-disk1.vmdk" ovf:id="file1" ovf:size="$vmdk_bytes"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:capacity="$size_mib" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="image">
    <Info>A test stemcell</Info>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest"><Info>Debian 12</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>512MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI Controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>IDE Controller 0</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>CD-ROM 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType><rasd:ResourceType>15</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
OVF
( cd "$work/vs" && for f in image.ovf image-disk1.vmdk; do echo "SHA1($f)= $(sha1sum "$f" | cut -d' ' -f1)"; done > image.mf )
tarball "$work/vs/image" "$work/vs" image.ovf image.mf image-disk1.vmdk
name=bosh-vsphere-esxi-debian-bookworm-go_agent
sha=$(sha1sum "$work/vs/image" | cut -d' ' -f1)
manifest $name vsphere "vsphere-ovf, vsphere-ova" esxi ovf "$sha" "  root_device_name: /dev/sda1" > "$work/vs/stemcell.MF"
cp "$work/packages.txt" "$work/vs/packages.txt"; : > "$work/vs/dev_tools_file_list.txt"
tarball "$work/out/$name.tgz" "$work/vs" stemcell.MF image packages.txt dev_tools_file_list.txt

# --- 5. the agent-launcher guest: its own Debian part (the package list plus curl and jq), no BOSH agent ------
debian_root guestbase "$pkgs,curl,jq" "$work/out/launcher-guest"
mkdir -p "$work/guest"
chroot "$root" sh -e -c '
  passwd -l root >/dev/null
  systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
'
install -m 0755 "$bootstrap" "$root/usr/local/sbin/agent-launcher-bootstrap"
install -m 0644 "$bootstrap_unit" "$root/etc/systemd/system/agent-launcher-bootstrap.service"
ln -sf /etc/systemd/system/agent-launcher-bootstrap.service "$root/etc/systemd/system/multi-user.target.wants/agent-launcher-bootstrap.service"
install -m 0755 "$standin" "$root/usr/local/bin/buildkite-agent"
# the GitHub variant: a stand-in runner where the bootstrap looks for the actions runner, owned by the user the
# bootstrap runs it as
chroot "$root" useradd -m -s /bin/sh runner
install -d -m 0755 "$root/opt/actions-runner"
install -m 0755 "$runner_standin" "$root/opt/actions-runner/run.sh"
chroot "$root" chown -R runner:runner /opt/actions-runner
# DHCP on every NIC until the bootstrap applies a static IP (its /run/systemd/network/10-*.network wins)
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' > "$root/etc/systemd/network/99-dhcp.network"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' > "$root/etc/systemd/journald.conf.d/console.conf"
echo launcher-guest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
echo 'LABEL=rootfs / ext4 defaults 0 1' > "$root/etc/fstab"
: > "$root/etc/machine-id"
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$work/guest/packages.txt"
b=$root/var/vcap/bosh   # disk() writes agent.json here: the guest has no agent, the file is inert
mkdir -p "$b"
echo '{}' > "$work/agent-none.json"
log "launcher guest: qcow2 root.img"
disk "$work/agent-none.json" "$work/guest.raw"
rm -rf "$b"
qemu-img convert -c -f raw -O qcow2 -o compat=0.10 "$work/guest.raw" "$work/guest/root.img"
rm -f "$work/guest.raw"
tarball "$work/guest/image" "$work/guest" root.img
name=agent-launcher-guest-openstack-kvm-debian-bookworm
sha=$(sha1sum "$work/guest/image" | cut -d' ' -f1)
manifest $name openstack openstack-qcow2 kvm qcow2 "$sha" "  auto_disk_config: true" > "$work/guest/stemcell.MF"
: > "$work/guest/dev_tools_file_list.txt"
tarball "$work/out/launcher-guest/$name.tgz" "$work/guest" stemcell.MF image packages.txt dev_tools_file_list.txt
cp "$work/guest/packages.txt" "$work/out/launcher-guest/"

cp "$work/vmlinuz" "$work/initrd.img" "$work/packages.txt" "$work/out/"
chmod 0644 "$work/out/"* "$work/out/launcher-guest/"*
chmod 0755 "$work/out/launcher-guest"
mkdir -p "$cache"
rm -rf "$out"
mv "$work/out" "$out"
date -u +%FT%TZ > "$out/done"
# older builds (other inputs) are not kept: each is a quarter of a GB
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
log "done in $(( $(date +%s) - started )) s: $out ($(du -sh "$out" | cut -f1))"
ls -la "$out" >&2
echo "$out"
