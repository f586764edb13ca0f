#!/bin/sh
# A stand-in for the GitHub Actions runner's `run.sh --jitconfig CONFIG` in the launcher guest test image.
# It is NOT the GitHub Actions runner, and it does not speak GitHub's runner protocol (the runner's session with
# the Actions service is not public). It speaks the small protocol of the tests' fake GitHub
# (tests/launcher/fake_gh.rs) in its place, with the JIT config that fake hands out (base64 JSON naming the
# fake's URL, the runner's id and name, and a secret for this runner):
#   POST /_fake/runner/session   the runner comes online
#   POST /_fake/runner/acquire   until the fake assigns it a queued job whose labels are all the runner's
#                                (404: the registration was deleted: exit 1, as a real runner stops then)
#   POST /_fake/runner/complete  the job's conclusion and its output; the fake then removes the runner, as
#                                GitHub removes an ephemeral runner after its job
# What is real: it is started by examples/launcher/bootstrap.sh exactly as the real runner is — as the
# `runner` user, in /opt/actions-runner, with the JIT config in ACTIONS_RUNNER_INPUT_JITCONFIG (the runner
# reads `--jitconfig` from there too), never on a command line — and it runs one job and exits.
# The "job" reports what the test checks: the runner's name, the user it runs as, the host name and
# `ip -4 -o addr`.
set -eu
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
if [ "${1:-}" = --jitconfig ]; then cfg=${2:-}; fi
[ -n "$cfg" ] || { echo "run.sh (stand-in): no JIT config (--jitconfig or ACTIONS_RUNNER_INPUT_JITCONFIG)" >&2; exit 2; }
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s' "$cfg" | base64 -d > "$tmp/config.json" 2>/dev/null || { echo "run.sh (stand-in): the JIT config is not base64" >&2; exit 2; }
unset cfg ACTIONS_RUNNER_INPUT_JITCONFIG
url=$(jq -r .fake_github "$tmp/config.json")
name=$(jq -r .runner_name "$tmp/config.json")
say() { echo "run.sh (stand-in): $*" >&2; }
api() { # OPERATION [JSON file] -> HTTP code on stdout, answer in $tmp/answer.json
    curl -sS -o "$tmp/answer.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data @"${2:-$tmp/config.json}" "$url/_fake/runner/$1" || echo 000
}
[ "$(api session)" = 200 ] || { say "the runner $name could not come online"; exit 1; }
say "runner $name online; waiting for a job"
while :; do
    code=$(api acquire)
    case "$code" in
        200) break ;;
        404) say "the registration of $name was removed"; exit 1 ;;
        *) sleep 1 ;;
    esac
done
job=$(jq -r .job_id "$tmp/answer.json")
say "runner $name runs job $job"
status=0
output=$({ echo "runner $name as $(id -un) on $(hostname)"; ip -4 -o addr show; } 2>&1) || status=$?
conclusion=success
[ "$status" = 0 ] || conclusion=failure
jq --arg c "$conclusion" --arg o "$output" '. + {conclusion: $c, log: $o}' "$tmp/config.json" > "$tmp/complete.json"
[ "$(api complete "$tmp/complete.json")" = 200 ] || { say "completing job $job was refused"; exit 1; }
say "job $job $conclusion"
