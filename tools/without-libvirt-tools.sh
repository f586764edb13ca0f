#!/usr/bin/env bash
# tools/without-libvirt-tools.sh LOG COMMAND [ARG]... — runs COMMAND, and everything it starts (the bosh CLI
# and the CPI it runs, or a director's CPI wrapper), in a private mount namespace in which virsh, qemu-img,
# qemu-nbd, xorriso, ssh and nc are tripwires: each records its command line in LOG and exits 127, as a
# missing program would. The tests run `bosh create-env` and the director's CPI calls this way: the libvirt
# CPI needs none of these programs, and a call that runs one fails and is named in LOG. The host outside
# the namespace is not changed. Needs root (unshare, mount: util-linux).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: without-libvirt-tools.sh LOG COMMAND [ARG]..." >&2; exit 2; }
log=$(realpath -m "$1"); shift
touch "$log"
wire=$log.tripwire
# single quotes around the log's path: it is ours, and holds none
printf '#!/bin/sh\necho "$0 $*" >> '\''%s'\''\nexit 127\n' "$log" > "$wire"
chmod 755 "$wire"
exec unshare --mount --propagation private -- /bin/bash -c '
  set -euo pipefail
  wire=$1; shift
  seen=" "
  for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    for t in virsh qemu-img qemu-nbd xorriso ssh nc; do
      [ -f "$d/$t" ] || continue
      real=$(readlink -f "$d/$t")
      case "$seen" in *" $real "*) continue ;; esac
      mount --bind "$wire" "$real"
      seen="$seen$real "
    done
  done
  exec "$@"' without-libvirt-tools "$wire" "$@"
