#!/bin/sh
# A plain-text status page (busybox httpd CGI): what the job sees, one key=value per line.
echo "Content-Type: text/plain"
echo
echo "job=running"
echo "hostname=$(hostname)"
echo "package=$(cat /var/vcap/packages/statuspage/compiled 2>/dev/null)"
if mountpoint -q /var/vcap/store; then echo "store=mounted"; else echo "store=not-mounted"; fi
dev=$(awk '$2 == "/var/vcap/store" { print $1 }' /proc/mounts)
echo "store_device=$dev"
echo "store_size_mib=$(df -Pm /var/vcap/store | awk 'NR == 2 { print $2 }')"
if [ -n "$dev" ]; then
  parent=/dev/$(basename "$(readlink -f "/sys/class/block/$(basename "$dev")/..")")
  for l in /dev/disk/by-id/*; do
    [ "$(readlink -f "$l")" = "$parent" ] && echo "store_disk_id=$(basename "$l")"
  done
fi
echo "marker=$(cat /var/vcap/store/status/marker 2>/dev/null)"
for i in /sys/class/net/*; do
  n=$(basename "$i")
  [ "$n" = lo ] && continue
  echo "nic=$n mac=$(cat "$i/address") addr=$(ip -o -4 addr show dev "$n" | awk '{ print $4 }' | head -n 1)"
done
echo "default_route=$(ip -4 route show default | awk '{ print $3 }' | head -n 1)"
