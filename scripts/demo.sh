#!/usr/bin/env bash
# Background Switchboard processes for `make demo` / `make demo-stop`.
#
# Usage: scripts/demo.sh start|traffic|outage|stop|status
#
#   start   start `switchboard ingress` and `switchboard worker` in the background (the
#           stack must be up and migrated; `make demo` does that first), wait until the
#           ingress answers /healthz and the worker's web port accepts connections
#   traffic seed tenants, simulate a busy day through the ingress, verify-run it against
#           MySQL and the analyst API, print a dashboard and where to look next
#   outage  a busy day that loses 15% of its webhooks upstream (an outage at the
#           providers' side): verify-run shows the damage, `switchboard backfill` heals it
#           from fake Retell and Cal.com APIs serving what really happened, verify-run
#           finds no difference, a second backfill writes nothing (docs/backfill.md)
#   stop    SIGTERM both (SIGKILL after DEMO_STOP_TIMEOUT seconds), remove the pid files
#   status  print whether each is running
#
# Logs: var/log/{ingress,worker}.log   pid files: var/run/{ingress,worker}.pid
# Secrets: provider secrets, the Cal.com API key and the analyst token come from the
# environment; those not set there are generated at random once and kept in var/demo.env
# (mode 600), so `start`, `traffic` and `outage` agree. Nothing prints a secret or passes one
# on a command line (ps shows those): the commands read them from the environment, and the
# messages name the file (`. var/demo.env` to use them in a shell). DEMO_VAR_DIR moves var/.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

VAR_DIR=${DEMO_VAR_DIR:-$REPO/var}
LOG_DIR=$VAR_DIR/log
RUN_DIR=$VAR_DIR/run
SECRETS=$VAR_DIR/demo.env
BIN=${DEMO_SWITCHBOARD:-$REPO/.venv/bin/switchboard}
PY=$REPO/.venv/bin/python
DEMO_START_TIMEOUT=${DEMO_START_TIMEOUT:-120}
DEMO_STOP_TIMEOUT=${DEMO_STOP_TIMEOUT:-30}

# The secrets the environment does not set: generated once (never a well-known value),
# kept in $SECRETS readable by this user only, exported for the commands below.
demo_secrets() {
    local name value
    mkdir -p "$VAR_DIR"
    (
        umask 077
        touch "$SECRETS"
    )
    chmod 600 "$SECRETS"
    for name in RETELL_API_KEY CALCOM_WEBHOOK_SECRET SWITCHBOARD_ANALYST_TOKENS CALCOM_API_KEY; do
        [[ -n ${!name:-} ]] && continue
        value=$(sed -n "s/^export $name=//p" "$SECRETS" | tail -n 1)
        if [[ -z $value ]]; then
            value=demo-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
            printf 'export %s=%s\n' "$name" "$value" >>"$SECRETS"
        fi
        export "$name=$value"
    done
}
demo_secrets
export SWITCHBOARD_ROUTING_REFRESH_S=${SWITCHBOARD_ROUTING_REFRESH_S:-2}
FAKE_RETELL_PORT=${DEMO_FAKE_RETELL_PORT:-8091}
FAKE_CALCOM_PORT=${DEMO_FAKE_CALCOM_PORT:-8092}
INGRESS_HOST=${SWITCHBOARD_INGRESS_HOST:-127.0.0.1}
INGRESS_PORT=${SWITCHBOARD_INGRESS_PORT:-8080}
WORKER_HOST=${SWITCHBOARD_WORKER_HOST:-127.0.0.1}
WORKER_PORT=${SWITCHBOARD_WORKER_PORT:-6066}

PROCS=(worker ingress)

say() { printf '[demo] %s\n' "$*"; }
die() {
    printf '[demo] ERROR: %s\n' "$*" >&2
    exit 1
}

pid_of() {
    local f=$RUN_DIR/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

http_ok() {
    "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

ready() {
    case $1 in
    ingress) http_ok "http://$INGRESS_HOST:$INGRESS_PORT/healthz" ;;
    worker) port_open "$WORKER_HOST" "$WORKER_PORT" ;;
    esac
}

start_one() {
    local name=$1 pid log=$LOG_DIR/$1.log
    if pid=$(pid_of "$name"); then
        say "$name already running (pid $pid)"
        return 0
    fi
    say "starting switchboard $name, log $log"
    # setsid: its own session, so a Ctrl-C in this terminal or the end of `make` does
    # not reach it; stop it with scripts/demo.sh stop.
    setsid "$BIN" "$name" </dev/null >>"$log" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
}

wait_one() {
    local name=$1 pid deadline
    pid=$(cat "$RUN_DIR/$name.pid")
    deadline=$(($(date +%s) + DEMO_START_TIMEOUT))
    until ready "$name"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            rm -f "$RUN_DIR/$name.pid"
            die "switchboard $name exited during startup (log: $LOG_DIR/$name.log)"
        fi
        if (($(date +%s) >= deadline)); then
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            die "switchboard $name not ready within ${DEMO_START_TIMEOUT}s (pid $pid; log: $LOG_DIR/$name.log)"
        fi
        sleep 0.5
    done
    say "$name ready (pid $pid)"
}

stop_one() {
    local name=$1 pid deadline
    if ! pid=$(pid_of "$name"); then
        rm -f "$RUN_DIR/$name.pid"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(date +%s) + DEMO_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if (($(date +%s) >= deadline)); then
            say "$name did not stop within ${DEMO_STOP_TIMEOUT}s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.3
    done
    rm -f "$RUN_DIR/$name.pid"
}

cmd_start() {
    [[ -x $BIN ]] || die "$BIN missing (run: make venv)"
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    local name
    # If one of them fails to come up, do not leave the other running half a demo.
    trap 'if [[ $? -ne 0 ]]; then say "start failed; stopping the demo processes"; cmd_stop; fi' EXIT
    for name in "${PROCS[@]}"; do start_one "$name"; done
    for name in "${PROCS[@]}"; do wait_one "$name"; done
    trap - EXIT
    cat <<EOF

Switchboard demo is running.
  ingress   http://$INGRESS_HOST:$INGRESS_PORT   (POST /webhooks/retell, /webhooks/calcom; GET /healthz /readyz /metrics)
  worker    http://$WORKER_HOST:$WORKER_PORT   (analyst API; Authorization: Bearer \$SWITCHBOARD_ANALYST_TOKENS)
  kafka     127.0.0.1:9092      mariadb 127.0.0.1:3306/switchboard
  logs      $LOG_DIR/{ingress,worker}.log
  pids      $RUN_DIR/{ingress,worker}.pid
  secrets   the environment's, the rest in $SECRETS (mode 600; \`. $SECRETS\` in a shell)
  stop      make demo-stop   (processes and the stack)  or  scripts/demo.sh stop  (processes only)
EOF
}

# A busy day through the running demo: tenants, signed traffic, the check, a dashboard.
cmd_traffic() {
    local seed=${DEMO_SEED:-$(date +%s)} calls=${DEMO_CALLS:-400} rate=${DEMO_RATE:-60}
    local expected=$VAR_DIR/expected-$seed.json api=http://$WORKER_HOST:$WORKER_PORT
    say "seeding ${DEMO_COMPANIES:-5} companies with their branches (tenants seed --seed 1)"
    "$BIN" tenants seed --companies "${DEMO_COMPANIES:-5}" --seed 1 --output "$VAR_DIR/tenants.json"
    # The demo's ingress reloads its routing cache every 2 s: new branches route at once.
    sleep 3
    say "simulating $calls calls and their bookings at $rate deliveries/s (seed $seed, 3% bad traffic)"
    "$BIN" simulate --url "http://$INGRESS_HOST:$INGRESS_PORT" --seed "$seed" --calls "$calls" \
        --rate "$rate" --bad-share 0.03 \
        --expected "$expected"
    say "verifying MySQL and the analyst API against $expected"
    # No --token: the commands take the first plain token of SWITCHBOARD_ANALYST_TOKENS.
    "$BIN" verify-run "$expected" --api-url "$api" --timeout 180
    local company
    company=$("$PY" -c '
import json, os, sys
from sqlalchemy import create_engine, text
names = [c["name"] for c in json.load(open(sys.argv[1]))["companies"]]
url = os.environ.get("SWITCHBOARD_DATABASE_URL", "mysql+pymysql://switchboard:switchboard@127.0.0.1:3306/switchboard")
with create_engine(url).connect() as conn:
    print(conn.execute(text("SELECT id FROM companies WHERE name = :n"), {"n": names[0]}).scalar())
' "$VAR_DIR/tenants.json")
    say "dashboard of company $company"
    "$BIN" dashboard "$company" --worker-url "$api"
    echo
    echo "Where to look next (the token and secrets: . $SECRETS):"
    echo "  analyst API   curl -H \"Authorization: Bearer \$SWITCHBOARD_ANALYST_TOKENS\" $api/api/v1/companies/$company/summary"
    echo "                curl -H \"Authorization: Bearer \$SWITCHBOARD_ANALYST_TOKENS\" '$api/api/v1/companies/$company/series?granularity=hour'"
    echo "  metrics       curl http://$INGRESS_HOST:$INGRESS_PORT/metrics ; curl $api/metrics"
    echo "  one event     $BIN events show retell <event_id>   (SELECT event_id FROM webhook_events LIMIT 5)"
    echo "  dead letters  $BIN dlq list"
    echo "  recount       $BIN reconcile --all"
    echo "  more traffic  scripts/demo.sh traffic        stop: make demo-stop"
    echo
    # Last, so it is what a demo ends with: the link carries no token (the page asks for
    # it and keeps it in the browser tab's session storage).
    echo "Dashboard page (sign in with the analyst token: SWITCHBOARD_ANALYST_TOKENS in $SECRETS, or your environment's):"
    echo "  http://$WORKER_HOST:$WORKER_PORT/dashboard?company=$company"
}

# An outage upstream, healed: lost webhooks rebuilt from the providers' (fake) APIs.
cmd_outage() {
    local seed=${DEMO_SEED:-$(date +%s)} calls=${DEMO_OUTAGE_CALLS:-200} rate=${DEMO_RATE:-60}
    local delivered=$VAR_DIR/outage-$seed-delivered.json healed=$VAR_DIR/outage-$seed-healed.json
    local state=$VAR_DIR/outage-$seed-providers.json api=http://$WORKER_HOST:$WORKER_PORT
    local since
    since=$(date -u -d '8 hours ago' +%Y-%m-%dT%H:%M:%SZ)
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    "$BIN" tenants seed --companies "${DEMO_COMPANIES:-5}" --seed 1 --output "$VAR_DIR/tenants.json"
    sleep 3
    say "simulating $calls calls (seed $seed); 15% of the webhooks are lost upstream and never arrive"
    "$BIN" simulate --url "http://$INGRESS_HOST:$INGRESS_PORT" --seed "$seed" --calls "$calls" \
        --rate "$rate" --drop-share 0.15 \
        --expected "$delivered" --provider-state "$state" --expected-after-backfill "$healed"
    say "everything that arrived is applied:"
    "$BIN" verify-run "$delivered" --timeout 180
    say "but compared with what really happened, rows and dashboard counters are missing:"
    "$BIN" verify-run "$healed" --timeout 0 | tail -n 6 || true
    say "the providers' APIs know what happened: fake Retell and Cal.com APIs serve it"
    stop_one fake-providers
    setsid "$BIN" fake-providers "$state" --retell-port "$FAKE_RETELL_PORT" \
        --calcom-port "$FAKE_CALCOM_PORT" </dev/null >>"$LOG_DIR/fake-providers.log" 2>&1 &
    echo $! >"$RUN_DIR/fake-providers.pid"
    local deadline=$(($(date +%s) + DEMO_START_TIMEOUT))
    until port_open 127.0.0.1 "$FAKE_CALCOM_PORT" && port_open 127.0.0.1 "$FAKE_RETELL_PORT"; do
        (($(date +%s) < deadline)) || die "fake provider APIs did not start (log: $LOG_DIR/fake-providers.log)"
        sleep 0.3
    done
    export RETELL_API_URL=http://127.0.0.1:$FAKE_RETELL_PORT CALCOM_API_URL=http://127.0.0.1:$FAKE_CALCOM_PORT
    say "switchboard backfill --provider retell --provider calcom --since $since"
    "$BIN" backfill --provider retell --provider calcom --since "$since"
    say "healed: MySQL and the analyst API match what really happened"
    "$BIN" verify-run "$healed" --api-url "$api" --timeout 180
    say "a second backfill over the same window finds nothing missing and writes nothing"
    "$BIN" backfill --provider retell --provider calcom --since "$since" | grep -E '^backfill|wrote'
    stop_one fake-providers
    echo
    echo "Lost webhooks: docs/backfill.md; what to do when it happens: docs/runbook.md, \"Webhooks lost upstream\"."
}

cmd_stop() {
    local name
    stop_one fake-providers
    # The ingress first, so nothing new arrives while the worker drains.
    for name in ingress worker; do stop_one "$name"; done
    say "demo processes stopped"
}

cmd_status() {
    local name pid rc=0
    for name in "${PROCS[@]}"; do
        if pid=$(pid_of "$name"); then
            echo "$name  running (pid $pid), log $LOG_DIR/$name.log"
        else
            echo "$name  not running"
            rc=1
        fi
    done
    return $rc
}

case ${1:-} in
start) cmd_start ;;
traffic) cmd_traffic ;;
outage) cmd_outage ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
