#!/bin/sh
# agent-launcher in-guest bootstrap: run exactly one CI job — a Buildkite job, or a GitHub Actions job through a
# just-in-time runner — then power the VM off.
#
# Install in the VM image as /usr/local/sbin/agent-launcher-bootstrap and start it once at boot
# (agent-launcher-bootstrap.service). Needs: sh, mount, curl, jq, poweroff, and the agent of the CI system:
#   Buildkite: buildkite-agent (v3.x, with `--acquire-job` and `file://` tokens);
#   GitHub Actions: the actions runner unpacked in /opt/actions-runner (AGENT_LAUNCHER_RUNNER_DIR), owned by
#   the user `runner` (AGENT_LAUNCHER_RUNNER_USER; runuser from util-linux starts it), NOT configured: the
#   launcher hands each VM a just-in-time config for one runner.
# The image should not also run the BOSH agent.
#
# 1. Read the settings the CPI wrote for this VM (vmcpi: an ISO labelled ENV with /env, or a config drive
#    labelled config-2 with /ec2/latest/user-data; its device may still be probing when this starts, so it is
#    looked for up to AGENT_LAUNCHER_MEDIUM_WAIT seconds, 90 by default). Its `env.agent_launcher` holds the job id (empty for a
#    warm VM), the agent tags, the launcher's assignment URL and this VM's secret (and, for Buildkite, the
#    agent endpoint). A network with a static `ip` (a pool with `static_ips`) is applied to the NIC: nothing
#    else in the image reads the settings' networks when no BOSH agent runs.
# 2. Ask the launcher for the assignment (a warm VM waits here until it gets a job; so does a VM whose runner
#    config the launcher has not made yet). The answer carries the secret the agent needs — Buildkite's agent
#    token, or GitHub's JIT runner config (`jitconfig`) — which goes to a root-only file, never a command line.
# 3. Buildkite: `buildkite-agent start --acquire-job`: the agent runs that one job and exits.
#    GitHub: `run.sh` as the runner user with the JIT config in ACTIONS_RUNNER_INPUT_JITCONFIG (the runner's
#    `--jitconfig`, kept off the command line, where every user could read it): the runner registers, takes
#    one queued job its labels fit — not necessarily the one this VM was made for: GitHub has no reservations
#    — and exits; GitHub removes the runner.
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
read_medium() {
    for label in ENV env config-2 CONFIG-2; do
        dev=/dev/disk/by-label/$label
        [ -e "$dev" ] || continue
        mount -o ro "$dev" "$MNT" 2>/dev/null || continue
        for f in ENV env ec2/latest/user-data; do
            if [ -f "$MNT/$f" ]; then settings=$(cat "$MNT/$f"); break; fi
        done
        umount "$MNT" || true
        [ -n "$settings" ] && return 0
    done
    return 1
}
if [ -n "$SETTINGS_FILE" ]; then
    settings=$(cat "$SETTINGS_FILE")
else
    # the medium's device (a CD-ROM, or a small disk) may still be probing when the network is up, which is
    # when this runs (a slow or busy host): wait for udev, then look again each second for a while
    udevadm settle --timeout=30 2>/dev/null || true
    waited=0
    until read_medium; do
        if [ "$waited" -ge "${AGENT_LAUNCHER_MEDIUM_WAIT:-90}" ]; then break; fi
        sleep 1; waited=$((waited + 1))
    done
    [ "$waited" -gt 0 ] && log "settings medium found after waiting ${waited} s for its device"
fi
if [ -z "$settings" ]; then
    log "no settings medium found"; finish; exit 1
fi

# a static IP (the pool has an IP range): the first network with an `ip` (type manual) is applied to the NIC
# with its MAC (or the first NIC), through systemd-networkd when it runs, else with `ip`
prefix_of() { # NETMASK (a.b.c.d or a prefix length) -> prefix length
    case "$1" in *.*) ;; *) echo "$1"; return ;; esac
    n=0
    for o in $(echo "$1" | tr . ' '); do
        case "$o" in 255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;; 248) n=$((n + 5)) ;;
            240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;; 192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;; esac
    done
    echo "$n"
}
net=$(printf '%s' "$settings" | jq -c '[(.networks // {}) | to_entries[] | .value | select((.ip // "") != "" and (.type // "manual") == "manual")][0] // empty')
if [ -n "$net" ]; then
    ip=$(printf '%s' "$net" | jq -r .ip)
    prefix=$(prefix_of "$(printf '%s' "$net" | jq -r '.netmask // "24"')")
    gw=$(printf '%s' "$net" | jq -r '.gateway // ""')
    mac=$(printf '%s' "$net" | jq -r '.mac // ""' | tr 'A-F' 'a-f')
    dev=""
    for d in /sys/class/net/*; do
        [ "${d##*/}" = lo ] && continue
        if [ -n "$mac" ] && [ "$(cat "$d/address")" = "$mac" ]; then dev=${d##*/}; break; fi
        [ -z "$dev" ] && dev=${d##*/}
    done
    log "applying static IP $ip/$prefix (gateway ${gw:-none}) on $dev"
    if command -v networkctl >/dev/null && systemctl is-active -q systemd-networkd 2>/dev/null; then
        mkdir -p /run/systemd/network
        {
            printf '[Match]\nName=%s\n\n[Network]\nAddress=%s/%s\n' "$dev" "$ip" "$prefix"
            [ -n "$gw" ] && printf 'Gateway=%s\n' "$gw"
            printf '%s' "$net" | jq -r '(.dns // [])[] | "DNS=" + .'
        } > /run/systemd/network/10-agent-launcher.network
        networkctl reload && networkctl reconfigure "$dev"
    else
        ip addr flush dev "$dev"
        ip link set "$dev" up
        ip addr add "$ip/$prefix" dev "$dev"
        [ -n "$gw" ] && ip route replace default via "$gw" dev "$dev"
    fi
    i=0
    until ip -4 -o addr show dev "$dev" | grep -q " $ip/$prefix "; do
        i=$((i + 1))
        if [ "$i" -gt 30 ]; then log "the static IP $ip did not come up on $dev"; finish; exit 1; fi
        sleep 1
    done
    # the default route (networkd adds it a moment after the address)
    i=0
    while [ -n "$gw" ] && ! ip -4 route show default | grep -q "via $gw"; do
        i=$((i + 1)); [ "$i" -gt 10 ] && break; sleep 1
    done
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
name=$(jq -r .agent_name "$RUN_DIR/assignment.json")

if [ "$(jq -r '.source // "buildkite"' "$RUN_DIR/assignment.json")" = github ]; then
    # GitHub Actions: one just-in-time runner
    runner_dir=${AGENT_LAUNCHER_RUNNER_DIR:-/opt/actions-runner}
    runner_user=${AGENT_LAUNCHER_RUNNER_USER:-runner}
    runner=$(jq -r '.runner_name // ""' "$RUN_DIR/assignment.json")
    jq -r '.jitconfig // ""' "$RUN_DIR/assignment.json" > "$RUN_DIR/jitconfig"
    rm -f "$RUN_DIR/assignment.json" "$RUN_DIR/auth-header"
    if [ ! -s "$RUN_DIR/jitconfig" ]; then
        log "the assignment has no runner config (its runner already ran: this VM has nothing to do)"
        rm -f "$RUN_DIR/jitconfig"; [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null; finish; exit 0
    fi
    log "starting runner $runner for job $job (or another queued job its labels fit)"
    status=0
    if id -u "$runner_user" >/dev/null 2>&1; then
        (
            cd "$runner_dir"
            ACTIONS_RUNNER_INPUT_JITCONFIG=$(cat "$RUN_DIR/jitconfig")
            export ACTIONS_RUNNER_INPUT_JITCONFIG
            rm -f "$RUN_DIR/jitconfig"
            exec runuser -u "$runner_user" -- ./run.sh
        ) || status=$?
    else
        log "no user $runner_user: running the runner as root (RUNNER_ALLOW_RUNASROOT)"
        (
            cd "$runner_dir"
            ACTIONS_RUNNER_INPUT_JITCONFIG=$(cat "$RUN_DIR/jitconfig")
            export ACTIONS_RUNNER_INPUT_JITCONFIG RUNNER_ALLOW_RUNASROOT=1
            rm -f "$RUN_DIR/jitconfig"
            exec ./run.sh
        ) || status=$?
    fi
    log "the runner exited with $status"
    rm -f "$RUN_DIR/jitconfig"
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    finish
    exit 0
fi

tags=$(jq -r .agent_tags "$RUN_DIR/assignment.json")
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
