#!/usr/bin/env bash
# tiny-guest/build.sh OUTDIR — build a tiny bootable Linux guest for CPI tests and the demo, from
# Debian packages: OUTDIR/vmlinuz (Debian's kernel) + OUTDIR/initrd.img (busybox-static
# plus the few kernel modules it needs). Boot it by direct kernel boot with
# console=ttyS0; its /init loads virtio/SCSI/ATA/AHCI/iso9660 modules, then prints to
# the serial console, between marker lines:
#   TINY-GUEST: block <name> <sectors> scsi=<H:C:T:L> serial=<s>   one line per block device
#   TINY-GUEST: user-data <dev> BEGIN / ... / END   ec2/latest/user-data of a config drive
#   TINY-GUEST: env <dev> BEGIN / ... / END the ENV (or env) file of each iso9660 device
#   TINY-GUEST: medium <dev> label=<label> files=<./path ...>   each iso9660 device: label, file names
#   TINY-GUEST: done                         then it powers off (ACPI)
# Packages are fetched with `apt-get download` and unpacked with dpkg-deb -x: nothing
# is installed, /boot is not touched. Needs apt-get, dpkg-deb, gzip (host has no cpio:
# the unpacked busybox builds the archive).
# Env: TINY_GUEST_FLAVOR  kernel flavour: amd64 (default; has AHCI for q35 SATA
#                         CD-ROMs) or cloud-amd64 (smaller, no AHCI/SATA)
# Idempotent: skips the build when both outputs exist and are newer than this script.
set -euo pipefail

OUT=${1:?usage: tiny-guest/build.sh OUTDIR}
FLAVOR=${TINY_GUEST_FLAVOR:-amd64}
log() { echo "tiny-guest: $*" >&2; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "$OUT/vmlinuz" -nt "$0" ] && [ "$OUT/initrd.img" -nt "$0" ]; then
  log "up to date: $OUT/vmlinuz $OUT/initrd.img"; exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# --- 1. fetch + unpack the kernel and busybox-static (no install) ------------------
# the metapackage linux-image-$FLAVOR depends on the versioned image package
kpkg=$(apt-cache depends "linux-image-$FLAVOR" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ]; then
  log "apt-get update (no candidate for linux-image-$FLAVOR)"; apt-get update -qq >&2
  kpkg=$(apt-cache depends "linux-image-$FLAVOR" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
log "downloading $kpkg busybox-static"
# (as root into a mktemp dir apt warns "Download is performed unsandboxed": harmless)
apt-get download -q "$kpkg" busybox-static >&2
dpkg-deb -x ./linux-image-*.deb k
dpkg-deb -x ./busybox-static_*.deb bb
KVER=$(ls k/lib/modules)
BB=$WORK/bb/bin/busybox
cp k/boot/vmlinuz-"$KVER" "$OUT/vmlinuz.tmp"

# --- 2. stage the initramfs ---------------------------------------------------------
S=$WORK/stage
mkdir -p "$S"/{bin,dev,proc,sys,mnt,lib/modules/"$KVER"}
cp "$BB" "$S/bin/busybox"
# modules the guest may need for disks and CD-ROMs on QEMU's pc/q35 machines
# (and VMware's pvscsi / LSI): dependencies are added from modules.dep below
WANT="virtio_pci virtio_blk virtio_scsi sd_mod sr_mod ata_piix ata_generic ahci vmw_pvscsi mptspi isofs"
"$BB" depmod -b "$WORK/k" "$KVER"
DEP=$WORK/k/lib/modules/$KVER/modules.dep
declare -A have=()
add() { # add MODULE-PATH (relative, from modules.dep) and its dependencies
  local p=$1 line d
  [ -n "${have[$p]:-}" ] && return 0
  have[$p]=1
  line=$(grep -m1 "^$p:" "$DEP" | cut -d: -f2-)
  for d in $line; do add "$d"; done
}
for m in $WANT; do
  p=$(grep -m1 -E "/${m//_/[_-]}\.ko:" "$DEP" | cut -d: -f1 || true)
  if [ -z "$p" ]; then log "module $m not in $kpkg (built in or absent): skipped"; continue; fi
  add "$p"
done
for p in "${!have[@]}"; do
  mkdir -p "$S/lib/modules/$KVER/$(dirname "$p")"
  cp "$WORK/k/lib/modules/$KVER/$p" "$S/lib/modules/$KVER/$p"
done
"$BB" depmod -b "$S" "$KVER"
echo "$WANT" >"$S/etc.modules"

cat >"$S/init" <<'EOF'
#!/bin/busybox sh
# tiny-guest /init: report block devices and the CD-ROM's ENV file, then power off
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /etc.modules); do modprobe -q "$m" 2>/dev/null; done
# let the SCSI/ATA scans finish (devices appear asynchronously)
i=0; while [ $i -lt 30 ]; do
  n=$(ls /sys/block | grep -vE '^(loop|ram)' | wc -l); [ "$n" -gt 0 ] && [ "$i" -ge 5 ] && break
  sleep 0.1; i=$((i+1)); done
echo "TINY-GUEST: start $(uname -r) uptime $(cut -d' ' -f1 /proc/uptime)s"
for b in /sys/block/*; do
  d=${b##*/}; case $d in loop*|ram*) continue;; esac
  # SCSI address host:channel:target:lun and the disk serial (VPD page 0x80), when the device has them
  addr=-; serial=-
  if [ -e "$b/device" ]; then addr=$(basename "$(readlink -f "$b/device")"); fi
  if [ -r "$b/device/vpd_pg80" ]; then serial=$(tail -c +5 "$b/device/vpd_pg80" | tr -d '\000 '); fi
  echo "TINY-GUEST: block $d $(cat "$b/size") scsi=$addr serial=$serial"
done
for b in /sys/block/*; do
  d=${b##*/}; case $d in loop*|ram*) continue;; esac
  if mount -t iso9660 -o ro "/dev/$d" /mnt 2>/dev/null; then
    # the label (volume id of the primary volume descriptor, sector 16; busybox-static has no blkid) and
    # every file name as the kernel shows them
    label=$(dd if="/dev/$d" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=32 2>/dev/null | sed 's/ *$//')
    echo "TINY-GUEST: medium $d label=$label files=$(cd /mnt && find . -type f | sort | tr '\n' ' ')"
    for f in ENV env; do
      if [ -f "/mnt/$f" ]; then echo "TINY-GUEST: env $d BEGIN"; cat "/mnt/$f"; echo; echo "TINY-GUEST: env $d END"; break; fi
    done
    # OpenStack config drive (label config-2): the agent reads ec2/latest/user-data
    if [ -f /mnt/ec2/latest/user-data ]; then
      echo "TINY-GUEST: user-data $d BEGIN"; cat /mnt/ec2/latest/user-data; echo; echo "TINY-GUEST: user-data $d END"
    fi
    umount /mnt
  fi
done
echo "TINY-GUEST: done uptime $(cut -d' ' -f1 /proc/uptime)s"
sync; poweroff -f
EOF
chmod 755 "$S/init"

# --- 3. pack (newc cpio, gzip) --------------------------------------------------------
(cd "$S" && find . | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 >"$OUT/initrd.img.tmp"
mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv -f "$OUT/initrd.img.tmp" "$OUT/initrd.img"
log "built $OUT/vmlinuz ($kpkg) and $OUT/initrd.img ($(du -k "$OUT/initrd.img" | cut -f1) KiB, ${#have[@]} modules)"
