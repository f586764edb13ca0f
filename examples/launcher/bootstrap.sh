#!/bin/sh
# agent-launcher in-guest bootstrap: run exactly one Buildkite job, then power the VM off.
#
# Install in the VM image as /usr/local/sbin/agent-launcher-bootstrap and start it once at boot
# (agent-launcher-bootstrap.service). Needs: sh, mount, curl, jq, buildkite-agent (v3.x, with
# `--acquire-job` and `file://` tokens), and poweroff. The image should not also run the BOSH agent.
#
# 1. Read the settings the CPI wrote for this VM (vmcpi: an ISO labelled ENV with /ENV, or a config drive
#    labelled config-2 with /ec2/latest/user-data). Its `env.agent_launcher` holds the job id (empty for a
#    warm VM), the agent tags, the agent endpoint, the launcher's assignment URL and this VM's secret.
# 2. Ask the launcher for the assignment (a warm VM waits here until it gets a job). The answer carries the
#    agent token, which is written to a root-only file and never put on a command line.
# 3. Run `buildkite-agent start --acquire-job`; the agent runs that one job and exits.
# 4. Power off. The launcher deletes the VM once the job is finished (and at its deadline in any case).
set -eu

# Overridable for other settings channels and for tests: a settings file to read instead of the medium.
RUN_DIR=${AGENT_LAUNCHER_RUN_DIR:-/run/agent-launcher}
SETTINGS_FILE=${AGENT_LAUNCHER_SETTINGS:-}
MNT=$RUN_DIR/settings
log() { echo "agent-launcher-bootstrap: $*" >&2; logger -t agent-launcher-bootstrap "$*" 2>/dev/null || true; }
finish() { log "powering off"; sync; poweroff -f 2>/dev/null || poweroff; }

mkdir -p "$MNT"
chmod 700 "$RUN_DIR"

settings=""
if [ -n "$SETTINGS_FILE" ]; then settings=$(cat "$SETTINGS_FILE"); fi
for label in ENV env config-2 CONFIG-2; do
    [ -n "$settings" ] && break
    dev=/dev/disk/by-label/$label
    [ -e "$dev" ] || continue
    mount -o ro "$dev" "$MNT" 2>/dev/null || continue
    for f in ENV env ec2/latest/user-data; do
        if [ -f "$MNT/$f" ]; then settings=$(cat "$MNT/$f"); break; fi
    done
    umount "$MNT" || true
    [ -n "$settings" ] && break
done
if [ -z "$settings" ]; then
    log "no settings medium found"; finish; exit 1
fi

cfg=$(printf '%s' "$settings" | jq -c '.env.agent_launcher // empty')
if [ -z "$cfg" ]; then
    log "the settings carry no env.agent_launcher"; finish; exit 1
fi
url=$(printf '%s' "$cfg" | jq -r .assignment_url)
deadline=$(printf '%s' "$cfg" | jq -r '.deadline // 0')
# the secret goes to curl through a file, not argv
umask 077
printf 'Authorization: Bearer %s\n' "$(printf '%s' "$cfg" | jq -r .secret)" > "$RUN_DIR/auth-header"

# dead-man's switch: the VM stops at its deadline even if the launcher is gone
now=$(date +%s)
watchdog=""
if [ "$deadline" -gt "$now" ]; then
    (
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep $((deadline - now)) & sp=$!
        wait "$sp" && { log "deadline reached"; finish; }
    ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
fi

# wait for the assignment (a warm VM may wait long; the launcher answers 204 until it has a job)
while :; do
    code=$(curl -sS -o "$RUN_DIR/assignment.json" -w '%{http_code}' -H @"$RUN_DIR/auth-header" "$url" || echo 000)
    case "$code" in
        200) break ;;
        204|000|5*) sleep 2 ;;
        *) log "the launcher refused the assignment request (HTTP $code)"; finish; exit 1 ;;
    esac
done

job=$(jq -r .job_id "$RUN_DIR/assignment.json")
tags=$(jq -r .agent_tags "$RUN_DIR/assignment.json")
name=$(jq -r .agent_name "$RUN_DIR/assignment.json")
endpoint=$(jq -r .endpoint "$RUN_DIR/assignment.json")
jq -r .token "$RUN_DIR/assignment.json" > "$RUN_DIR/token"
rm -f "$RUN_DIR/assignment.json" "$RUN_DIR/auth-header"

log "acquiring job $job as $name"
status=0
buildkite-agent start \
    --acquire-job "$job" \
    --tags "$tags" \
    --name "$name" \
    --endpoint "$endpoint" \
    --token "file://$RUN_DIR/token" \
    --disconnect-after-idle-timeout 60 || status=$?
# 27: the job was taken elsewhere or cancelled; 28: still waiting on a dependency. Either way this VM is done.
log "buildkite-agent exited with $status"
rm -f "$RUN_DIR/token"
[ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
finish
