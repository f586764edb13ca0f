#!/usr/bin/env bash
# Builds the vmcpi BOSH release tarball from this repository.
#
#   release/build.sh [--tarball OUT.tgz] [--version V] [--binary OS-ARCH=PATH]... [--no-build]
#
# 1. cargo build --release --locked (Linux x86_64 binary, target/release/vmcpi)
# 2. bosh add-blob: the binary becomes blob vmcpi/vmcpi-linux-amd64 (blobs/ is git-ignored;
#    config/blobs.yml records it, so a build leaves config/blobs.yml modified, as add-blob does)
# 3. bosh create-release --force --tarball OUT (default: dev_releases/vmcpi.tgz)
#
# --binary darwin-arm64=PATH (or darwin-amd64, linux-arm64) adds a binary built elsewhere, e.g. on
# a Mac with `cargo build --release --locked`, so that bosh create-env also works on that platform.
# --no-build uses the existing target/release/vmcpi. Needs cargo and the bosh CLI (v7) on PATH
# (or BOSH=/path/to/bosh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bosh=${BOSH:-bosh}
tarball="$root/dev_releases/vmcpi.tgz"
version=""
build=1
extra=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tarball) tarball=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --binary) extra+=("$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$tarball" in /*) ;; *) tarball="$PWD/$tarball" ;; esac
for spec in ${extra[@]+"${extra[@]}"}; do
  case "${spec%%=*}" in
    darwin-amd64 | darwin-arm64 | linux-arm64) ;;
    *) echo "build.sh: --binary $spec: the platform must be darwin-amd64, darwin-arm64 or linux-arm64" >&2; exit 2 ;;
  esac
  [ -f "${spec#*=}" ] || { echo "build.sh: --binary $spec: no such file" >&2; exit 2; }
done

if ! command -v "$bosh" > /dev/null; then
  echo "build.sh: the bosh CLI (v7) is needed: https://bosh.io/docs/cli-v2-install/ (or set BOSH=/path/to/bosh)" >&2
  exit 1
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "build.sh: the release's main binary, vmcpi-linux-amd64, must be built on Linux x86_64; on a Mac," >&2
  echo "build.sh: build vmcpi there and pass it to build.sh on a Linux machine with --binary (see docs/bosh.md)" >&2
  exit 1
fi

if [ "$build" = 1 ]; then
  cargo build --release --locked --bin vmcpi
fi
binary="$root/target/release/vmcpi"
[ -x "$binary" ] || { echo "build.sh: $binary is missing (run without --no-build)" >&2; exit 1; }

# The binary links glibc and libssl3 dynamically: say which glibc it needs, for the docs' promise
# (Ubuntu Jammy stemcells have glibc 2.35, Noble 2.39).
if command -v objdump > /dev/null; then
  need=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -1 || true)
  echo "build.sh: $binary needs ${need:-an unknown glibc version}"
fi

add_blob() { # PATH NAME
  "$bosh" add-blob --dir="$root" "$1" "vmcpi/$2" > /dev/null
  echo "build.sh: blob vmcpi/$2 <- $1"
}

# Start from a clean set of vmcpi blobs, so a binary left over from an earlier build with
# --binary is not shipped by accident.
for old in $(grep -o '^vmcpi/[^:]*' config/blobs.yml || true); do
  "$bosh" remove-blob --dir="$root" "$old" > /dev/null
done

add_blob "$binary" vmcpi-linux-amd64
for spec in ${extra[@]+"${extra[@]}"}; do
  add_blob "${spec#*=}" "vmcpi-${spec%%=*}"
done

mkdir -p "$(dirname "$tarball")"
args=(create-release --dir="$root" --force --tarball="$tarball")
[ -n "$version" ] && args+=(--version="$version")
"$bosh" "${args[@]}"
echo "build.sh: wrote $tarball"
