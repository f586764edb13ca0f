#!/usr/bin/env bash
# Builds the vmcpi BOSH release tarball from this repository, leaving the checkout as it was.
#
#   release/build.sh [--tarball OUT.tgz] [--version V] [--binary OS-ARCH=PATH]... [--launcher-binary PATH] [--no-build]
#
# 1. the Linux x86_64 binary: `--binary linux-amd64=PATH` (built or downloaded elsewhere; no Rust
#    needed here), else a static build: `cargo build --release --locked --target x86_64-unknown-linux-gnu`
#    with crt-static and OPENSSL_STATIC=1 (target/x86_64-unknown-linux-gnu/release/vmcpi; needs libssl-dev)
# 2. a scratch copy of the release (config/, jobs/, packages/) gets the binaries as blobs
#    vmcpi/vmcpi-<os>-<arch> (`bosh add-blob`), so the tracked config/blobs.yml is never touched
# 3. bosh create-release --force --tarball OUT (default: dev_releases/vmcpi.tgz) in that copy. The
#    release records this checkout's commit, with a `+` only when the checkout itself has changes.
#    Dev versions count up in dev_releases/ and .dev_builds/ (both git-ignored).
#
# --binary PLATFORM=PATH, for linux-amd64, linux-arm64, darwin-amd64 or darwin-arm64, adds a binary
# built elsewhere (e.g. on a Mac with `cargo build --release --locked`, or downloaded), so that
# bosh create-env also works on that platform. Each file is checked to be an executable for its
# platform. --launcher-binary PATH gives the Linux x86_64 agent-launcher for the agent_launcher job and
# package (built with cargo otherwise, statically like vmcpi); a release built from given binaries
# without it leaves that job and package out (and says so). --no-build uses the existing static build
# (target/x86_64-unknown-linux-gnu/release/vmcpi). Needs the bosh CLI (v7) on PATH (or
# BOSH=/path/to/bosh); cargo only when no linux-amd64 binary is given.
set -euo pipefail

caller=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# relative paths in arguments are the caller's
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$caller/$1" ;; esac; }

bosh=${BOSH:-bosh}
tarball="$root/dev_releases/vmcpi.tgz"
version=""
build=1
extra=()
launcher=""


usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "build.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tarball | --version | --binary | --launcher-binary) [ $# -ge 2 ] || die "$1 needs a value" ;;
  esac
  case "$1" in
    --tarball) tarball=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --binary) extra+=("$2"); shift 2 ;;
    --launcher-binary) launcher=$(absolute "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

tarball=$(absolute "$tarball")
# the target of the release's own (static) build
static_target=x86_64-unknown-linux-gnu

# magic PLATFORM FILE: fails unless FILE is a 64-bit executable for PLATFORM (ELF or Mach-O header)
magic() {
  local head
  head=$(od -An -tx1 -N20 -v "$2" | tr -d ' \n')
  case "$1" in
    linux-amd64) [[ $head == 7f454c4602* && ${head:36:4} == 3e00 ]] ;;
    linux-arm64) [[ $head == 7f454c4602* && ${head:36:4} == b700 ]] ;;
    darwin-amd64) [[ $head == cffaedfe07000001* ]] ;;
    darwin-arm64) [[ $head == cffaedfe0c000001* ]] ;;
    *) false ;;
  esac
}

# the binaries by platform, in given_linux_amd64 etc. (no associative arrays: macOS has bash 3.2)
given() { local v="given_${1//-/_}"; printf '%s' "${!v:-}"; }
set_given() { printf -v "given_${1//-/_}" '%s' "$2"; }
unset given_linux_amd64 given_linux_arm64 given_darwin_amd64 given_darwin_arm64
for spec in ${extra[@]+"${extra[@]}"}; do
  platform=${spec%%=*}
  path=${spec#*=}
  [ "$platform" != "$spec" ] && [ -n "$path" ] || die "--binary $spec: expected PLATFORM=PATH, e.g. linux-amd64=/tmp/vmcpi"
  case "$platform" in
    linux-amd64 | linux-arm64 | darwin-amd64 | darwin-arm64) ;;
    *) die "--binary $spec: the platform must be linux-amd64, linux-arm64, darwin-amd64 or darwin-arm64" ;;
  esac
  [ -z "$(given "$platform")" ] || die "--binary $platform is given twice"
  path=$(absolute "$path")
  [ -f "$path" ] || die "--binary $spec: no such file"
  magic "$platform" "$path" || die "--binary $spec: $path is not a 64-bit $platform executable"
  set_given "$platform" "$path"
done

if ! command -v "$bosh" > /dev/null; then
  echo "build.sh: the bosh CLI (v7) is needed: https://bosh.io/docs/cli-v2-install/ (or set BOSH=/path/to/bosh)" >&2
  exit 1
fi

if [ -n "$(given linux-amd64)" ]; then
  binary=$(given linux-amd64)
  [ "$build" = 1 ] && echo "build.sh: using the given linux-amd64 binary; not building"
else
  if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "build.sh: the release's main binary, vmcpi-linux-amd64, is built on Linux x86_64; here, give it" >&2
    echo "build.sh: with --binary linux-amd64=PATH (see docs/bosh.md, \"Building a release from binaries\")" >&2
    exit 1
  fi
  if [ "$build" = 1 ]; then
    if ! command -v cargo > /dev/null; then
      echo "build.sh: cargo is not on PATH: install Rust (https://rustup.rs), or build the release from a" >&2
      echo "build.sh: binary built elsewhere: --binary linux-amd64=PATH (see docs/bosh.md)" >&2
      exit 1
    fi
    # statically linked (glibc's static libc, Debian's libssl.a/libcrypto.a from libssl-dev, libssh2 and
    # zlib from their -sys crates' bundled sources): runs on any x86_64 Linux whatever its glibc or OpenSSL,
    # and starts faster: no dynamic loader, and not position-independent, so there are no relocations to
    # apply at start (a static PIE has ~28,000). --target keeps build scripts and proc macros (which run
    # here) dynamic and puts this build in target/$static_target/, apart from the debug builds of `cargo test`.
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" OPENSSL_STATIC=1 \
      cargo build --release --locked --target "$static_target" --bin vmcpi --bin agent-launcher
  fi
  if [ -z "$launcher" ] && [ -x "$root/target/$static_target/release/agent-launcher" ]; then
    launcher="$root/target/$static_target/release/agent-launcher"
  fi
  binary="$root/target/$static_target/release/vmcpi"
  [ -x "$binary" ] || { echo "build.sh: $binary is missing (run without --no-build, or give --binary linux-amd64=PATH)" >&2; exit 1; }
  magic linux-amd64 "$binary" || { echo "build.sh: $binary is not a Linux x86_64 executable" >&2; exit 1; }
fi
set_given linux-amd64 "$binary"

# Say what the binary needs: nothing when statically linked (our own build); a given binary may link glibc
# dynamically (Ubuntu Jammy stemcells have glibc 2.35, Noble 2.39).
if command -v objdump > /dev/null; then
  if ! objdump -p "$binary" 2>/dev/null | grep -q 'NEEDED'; then
    echo "build.sh: $binary is statically linked"
  else
    need=$(objdump -T "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -1 || true)
    echo "build.sh: $binary is dynamically linked and needs ${need:-an unknown glibc version}"
  fi
fi

# The scratch copy: the release's own files as they are in the checkout (changes included), with
# empty blobs. dev_releases/ is the checkout's (git-ignored), so dev versions count up. .dev_builds/
# stays in the scratch copy: its index names artifacts that the CLI keeps in ~/.bosh/cache, so an index
# kept across builds breaks the next build under another HOME (or after that cache was cleared) with
# "Cannot find blob named …".
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vmcpi-release.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
for dir in config jobs packages .final_builds releases; do
  [ -e "$root/$dir" ] && cp -R "$root/$dir" "$scratch/$dir"
done
for file in LICENSE NOTICE; do
  [ -f "$root/$file" ] && cp "$root/$file" "$scratch/$file"
done
printf -- '--- {}\n' > "$scratch/config/blobs.yml"
rm -rf "$scratch/blobs"
mkdir -p "$scratch/src" "$root/dev_releases"
ln -s "$root/dev_releases" "$scratch/dev_releases"

if [ -n "$launcher" ]; then
  [ -f "$launcher" ] || die "--launcher-binary $launcher: no such file"
  magic linux-amd64 "$launcher" || die "--launcher-binary $launcher is not a Linux x86_64 executable"
  "$bosh" add-blob --dir="$scratch" "$launcher" "agent-launcher/agent-launcher-linux-amd64" > /dev/null
  echo "build.sh: blob agent-launcher/agent-launcher-linux-amd64 <- $launcher"
else
  rm -rf "$scratch/jobs/agent_launcher" "$scratch/packages/agent_launcher"
  echo "build.sh: no agent-launcher binary (--launcher-binary PATH): the release has no agent_launcher job"
fi

for platform in linux-amd64 linux-arm64 darwin-amd64 darwin-arm64; do
  [ -n "$(given "$platform")" ] || continue
  "$bosh" add-blob --dir="$scratch" "$(given "$platform")" "vmcpi/vmcpi-$platform" > /dev/null
  echo "build.sh: blob vmcpi/vmcpi-$platform <- $(given "$platform")"
done

# bosh create-release asks git (`git rev-parse --short HEAD`, `git status --short`) in --dir for the
# commit and whether it has changes: point it at this checkout, not at the scratch copy.
if git -C "$root" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  GIT_DIR=$(git -C "$root" rev-parse --absolute-git-dir)
  GIT_WORK_TREE=$root
  export GIT_DIR GIT_WORK_TREE
fi

mkdir -p "$(dirname "$tarball")"
args=(create-release --dir="$scratch" --force --tarball="$tarball")
[ -n "$version" ] && args+=(--version="$version")
"$bosh" "${args[@]}"
echo "build.sh: wrote $tarball"
