#!/bin/sh
# A stand-in for `buildkite-agent start --acquire-job JOB` in the launcher guest test image (NOT a Buildkite
# agent): it speaks the part of the agent API one acquired job needs, to the endpoint it is given —
#   PUT /jobs/JOB/acquire, PUT /jobs/JOB/start, POST /jobs/JOB/chunks, PUT /jobs/JOB/finish
# with `Authorization: Token <token>` (read from the file:// token, passed to curl through a root-only header
# file, never on a command line). The "job" it runs reports what the test checks: the agent name, the host
# name and `ip -4 -o addr` (the static IP the bootstrap applied). Exit 27 when the job cannot be acquired,
# as the real agent does.
set -eu
[ "${1:-}" = start ] || { echo "buildkite-agent (stand-in): only 'start --acquire-job' is supported" >&2; exit 2; }
shift
job="" tags="" name="" endpoint="" token=""
while [ $# -gt 0 ]; do
    case "$1" in
        --acquire-job) job=$2; shift 2 ;;
        --tags) tags=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --endpoint) endpoint=${2%/}; shift 2 ;;
        --token) token=$2; shift 2 ;;
        --disconnect-after-idle-timeout) shift 2 ;;
        *) echo "buildkite-agent (stand-in): unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$job" ] && [ -n "$endpoint" ] && [ -n "$token" ] || { echo "buildkite-agent (stand-in): missing options" >&2; exit 2; }
umask 077
hdr=$(mktemp)
trap 'rm -f "$hdr"' EXIT
case "$token" in
    file://*) printf 'Authorization: Token %s\n' "$(cat "${token#file://}")" > "$hdr" ;;
    *) printf 'Authorization: Token %s\n' "$token" > "$hdr" ;;
esac
api() { # METHOD PATH [JSON] -> HTTP code on stdout
    d=${3:-}; [ -n "$d" ] || d='{}'
    curl -sS -o /dev/null -w '%{http_code}' -X "$1" -H @"$hdr" -H 'Content-Type: application/json' \
        --data "$d" "$endpoint/jobs/$job/$2" || echo 000
}
say() { echo "buildkite-agent (stand-in): $*" >&2; }
code=$(api PUT acquire "$(jq -cn --arg n "$name" --arg t "$tags" '{agent_name: $n, tags: $t}')")
[ "$code" = 200 ] || { say "acquire of job $job refused (HTTP $code)"; exit 27; }
say "acquired job $job"
[ "$(api PUT start)" = 200 ] || { say "start refused"; exit 1; }
status=0
output=$({ echo "agent $name on $(hostname)"; ip -4 -o addr show; } 2>&1) || status=$?
[ "$(api POST chunks "$(jq -cn --arg o "$output" '{content: $o}')")" = 200 ] || { say "log upload refused"; exit 1; }
[ "$(api PUT finish "{\"exit_status\": $status}")" = 200 ] || { say "finish refused"; exit 1; }
say "job $job finished with exit status $status"
