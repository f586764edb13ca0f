#!/usr/bin/env bash
# tools/test-release.sh — build the one-job test release `vmcpi-e2e` (examples/create-env/release: a `status`
# job whose `statuspage` package the agent compiles, on the VM for create-env and on a compilation VM for a
# director) into a tarball, from a scratch copy: the checkout is not changed.
#
#   tools/test-release.sh OUT.tgz        (BOSH_CLI: the bosh CLI, default ../shared/tools/bosh/bosh;
#                                          SCRATCH: where to copy the release, default a new temporary directory)
#
# Used by tools/create-env.sh and tests/director_e2e.rs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: tools/test-release.sh OUT.tgz}
case "$out" in /*) ;; *) out=$PWD/$out ;; esac
BOSH_CLI=${BOSH_CLI:-$(cd "$HERE/.." && pwd)/shared/tools/bosh/bosh}
[ -x "$BOSH_CLI" ] || { echo "test-release.sh: no bosh CLI at $BOSH_CLI: set BOSH_CLI" >&2; exit 1; }
scratch=${SCRATCH:-}
if [ -z "$scratch" ]; then
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/vmcpi-test-release.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
fi
rm -rf "$scratch/release" && mkdir -p "$scratch/home" && cp -a "$HERE/examples/create-env/release" "$scratch/release"
(cd "$scratch/release" && HOME=$scratch/home "$BOSH_CLI" create-release --force --name vmcpi-e2e --version 1 --tarball "$out" > "$scratch/create-release.log" 2>&1) \
  || { cat "$scratch/create-release.log" >&2; exit 1; }
echo "$out"
