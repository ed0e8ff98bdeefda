#!/usr/bin/env bash
# Local service stack for Switchboard: Apache Kafka 3.9.1 (KRaft, broker+controller in one
# JVM, jars from Maven Central) and MariaDB (Debian package). No Docker anywhere.
#
# Usage: scripts/stack.sh COMMAND
#
#   up              install what is missing, start MariaDB and Kafka, wait until both answer
#   down            stop Kafka (TERM, then KILL) and MariaDB (mariadb-admin shutdown)
#   wipe            down, delete Kafka data and ./var, drop+recreate the databases; leaves
#                   everything stopped (run `up` afterwards)
#   status [kafka|mariadb]
#                   print whether each service answers; exit 0 only if all asked are up
#   kafka-start | kafka-stop | kafka-kill       one service, for fault tests; each waits
#   mariadb-start | mariadb-stop | mariadb-kill (kill = SIGKILL, no clean shutdown)
#   kafka-instance NAME up|start|stop|kill|status --port P --controller-port C [--dir D]
#                   an extra single-node Kafka of its own (name, ports, data under D,
#                   default $STACK_DIR/instances/NAME), for tests that stop or kill a
#                   broker without touching the shared one; no root needed
#   kafka-topics ARGS...   org.apache.kafka.tools.TopicCommand against the local broker
#   kafka-groups ARGS...   ConsumerGroupCommand against the local broker (e.g. --list)
#   env             print the SWITCHBOARD_* variables that point at this stack
#   kafka-cluster NAME up|down|kill|status|kill-broker N|stop-broker N|start-broker N
#                   [--base-port P] [--dir D]
#                   a three-node KRaft cluster of its own (replication 3,
#                   min.insync.replicas 2; node N on P+2(N-1), its controller on the
#                   next port; default P 29092, D $STACK_DIR/instances/NAME)
#   mariadb-instance NAME up|start|stop|kill|status|sql --port P [--dir D] [--tls T] [SQL]
#                   an extra MariaDB server of its own (port, socket and data under D,
#                   default $STACK_DIR/instances/NAME) with the switchboard user, for
#                   fault tests that stop it, make it read-only or revoke grants; `sql`
#                   runs SQL as its root, over its socket
#
# Every command is idempotent and meant to run as root (apt, /run/mysqld, /var/lib/mysql).
# Mutating commands take a lock on $STACK_DIR/.lock so concurrent callers queue up.
# Ports, directories and environment overrides are described in docs/stack.md.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

STACK_DIR=${STACK_DIR:-$REPO/.stack}
KAFKA_CONF_DIR=$REPO/docker/kafka
KAFKA_LIB_DIR=${KAFKA_LIB_DIR:-$KAFKA_CONF_DIR/lib}
KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-60}
KAFKA_NUM_PARTITIONS=${KAFKA_NUM_PARTITIONS:-12}
# __consumer_offsets partitions: a private test broker creates them in a moment with a few.
KAFKA_OFFSETS_PARTITIONS=${KAFKA_OFFSETS_PARTITIONS:-50}
# Optional client listener with TLS and SASL (SCRAM-SHA-512 and PLAIN), for private brokers
# that tests start on other ports (docs/stack.md, "A private broker with TLS and SASL"):
# KAFKA_SASL_SSL_PORT, KAFKA_SSL_KEYSTORE_PEM (private key + certificate chain, PEM),
# KAFKA_SASL_USERS ("name:password name2:password2").
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-}
KAFKA_SSL_KEYSTORE_PEM=${KAFKA_SSL_KEYSTORE_PEM:-}
KAFKA_SASL_USERS=${KAFKA_SASL_USERS:-}
KAFKA_MAVEN_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies

MARIADB_HOST=127.0.0.1
MARIADB_PORT=3306
MARIADB_DATADIR=/var/lib/mysql
MARIADB_RUN_DIR=/run/mysqld
MARIADB_SOCKET=$MARIADB_RUN_DIR/mysqld.sock
MARIADB_PIDFILE=$MARIADB_RUN_DIR/mysqld.pid
MARIADB_LOG_DIR=/var/log/mysql
MARIADB_ERROR_LOG=$MARIADB_LOG_DIR/error.log
MARIADB_CNF=/etc/mysql/mariadb.conf.d/99-switchboard.cnf
MARIADB_START_TIMEOUT=${MARIADB_START_TIMEOUT:-120}
MARIADB_STOP_TIMEOUT=${MARIADB_STOP_TIMEOUT:-120}

# The application's database and user (the README's configuration table default SWITCHBOARD_DATABASE_URL).
DB_NAME=switchboard
DB_USER=switchboard
DB_PASSWORD=switchboard

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------- helpers

say() { printf '[stack] %s\n' "$*"; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}

# now: seconds since the epoch (for timeouts)
now() { date +%s; }

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# port_open HOST PORT: something accepts TCP connections there.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# who_listens PORT: one line naming the process on a local TCP port, for error messages.
who_listens() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1; }

log_tail() {
    local file=$1 lines=${2:-40}
    if [[ -s $file ]]; then
        printf '[stack] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf '[stack] ---- end of %s ----\n' "$file" >&2
    else
        printf '[stack] (%s is empty or missing)\n' "$file" >&2
    fi
}

APT_UPDATED=0
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "installing $* needs root (apt-get)"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        APT_UPDATED=1
    fi
    say "apt-get install -y $*"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null
}

# The lock is fd 9; daemons are started with 9>&- so they never inherit it.
take_lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    if ! flock -n 9; then
        say "waiting for another scripts/stack.sh holding $STACK_DIR/.lock"
        flock -w 900 9 || die "timed out waiting for $STACK_DIR/.lock"
    fi
}

# ---------------------------------------------------------------------------- Kafka

# Java and Maven come with the machine image; install them if a fresh machine lacks them.
# (Called before any $(...) capture, so apt output never ends up in a variable.)
ensure_java_maven() {
    local pkgs=()
    command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
    if [[ ${#pkgs[@]} -gt 0 ]]; then
        apt_install "${pkgs[@]}"
    fi
}

java_bin() {
    command -v java >/dev/null 2>&1 || die "java not found (run: scripts/stack.sh up)"
    readlink -f "$(command -v java)"
}

kafka_jars_cached() {
    local want
    want=$(sha256sum "$KAFKA_CONF_DIR/pom.xml" | cut -d' ' -f1)
    [[ -f $KAFKA_LIB_DIR/.pom.sha256 && $(cat "$KAFKA_LIB_DIR/.pom.sha256") == "$want" ]] &&
        compgen -G "$KAFKA_LIB_DIR/kafka_2.13-*.jar" >/dev/null
}

# Downloads the broker jars with Maven into $KAFKA_LIB_DIR, unless the cache there was
# made from the current pom.xml. Fills a temporary directory and renames it, so an
# interrupted download never looks like a complete cache.
kafka_fetch_jars() {
    if kafka_jars_cached; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found"
    if [[ -d $KAFKA_LIB_DIR && ! -f $KAFKA_LIB_DIR/.pom.sha256 ]] &&
        [[ -n $(ls -A "$KAFKA_LIB_DIR") ]]; then
        die "$KAFKA_LIB_DIR holds files this script did not put there; empty it or point KAFKA_LIB_DIR elsewhere"
    fi
    mkdir -p "$(dirname "$KAFKA_LIB_DIR")"
    local tmp sha
    tmp=$(mktemp -d "${KAFKA_LIB_DIR%/}.tmp.XXXXXX")
    say "fetching Kafka jars from Maven Central into $KAFKA_LIB_DIR"
    if ! mvn -B -q -f "$KAFKA_CONF_DIR/pom.xml" "$KAFKA_MAVEN_PLUGIN" \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        log_tail "$tmp.log" 60
        rm -rf "$tmp" "$tmp.log"
        die "mvn could not fetch the Kafka jars (see above)"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "mvn ran but no kafka_2.13 jar appeared in $tmp"
    sha=$(sha256sum "$KAFKA_CONF_DIR/pom.xml" | cut -d' ' -f1)
    echo "$sha" >"$tmp/.pom.sha256"
    rm -rf "$KAFKA_LIB_DIR" "$tmp.log"
    mv "$tmp" "$KAFKA_LIB_DIR"
    say "cached $(ls "$KAFKA_LIB_DIR" | wc -l) jars in $KAFKA_LIB_DIR"
}

# kafka_cli CLASS ARGS...: run a Kafka command-line class with the cached jars
# (KAFKA_CLI_TIMEOUT seconds at most; 0, the default, means no limit).
kafka_cli() {
    local java
    java=$(java_bin)
    timeout "${KAFKA_CLI_TIMEOUT:-0}" "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j.configuration="file:$KAFKA_CONF_DIR/tools-log4j.properties" \
        -cp "$KAFKA_LIB_DIR/*" "$@"
}

# Where the node directories and the cluster id live: the shared stack's, or an extra
# instance's (cmd_kafka_instance points it elsewhere).
KAFKA_NODES_DIR=$STACK_DIR/kafka

kafka_cluster_id() {
    local f=$KAFKA_NODES_DIR/cluster.id
    if [[ ! -s $f ]]; then
        mkdir -p "$KAFKA_NODES_DIR"
        # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding (22 chars). Like
        # Kafka's own Uuid.randomUuid, draw again when it begins with "-": one id in 64 would,
        # and tools that take it as a separate argument read it as an option.
        local id=-
        while [[ $id == -* ]]; do
            id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        done
        printf '%s' "$id" >"$f"
    fi
    cat "$f"
}

kafka_node_dir() { echo "$KAFKA_NODES_DIR/node$1"; }

# kafka_write_node_config NODE_ID BROKER_PORT CONTROLLER_PORT NODE_DIR VOTERS
# Writes NODE_DIR/server.properties for one KRaft combined node. VOTERS is the
# controller.quorum.voters value ("1@127.0.0.1:9093", or three entries for a
# three-node cluster together with RF 3 / min ISR 2 settings passed by the caller).
kafka_write_node_config() {
    local id=$1 port=$2 cport=$3 dir=$4 voters=$5
    local rf=${KAFKA_REPLICATION_FACTOR:-1} min_isr=${KAFKA_MIN_INSYNC_REPLICAS:-1}
    mkdir -p "$dir/data"
    cat >"$dir/server.properties.tmp" <<EOF
# Generated by scripts/stack.sh (kafka_write_node_config); edits are overwritten on start.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$KAFKA_HOST:$port,CONTROLLER://$KAFKA_HOST:$cport
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
EOF
    if [[ -n $KAFKA_SASL_SSL_PORT ]]; then
        kafka_sasl_ssl_config "$port" "$cport" >>"$dir/server.properties.tmp"
    fi
    cat >>"$dir/server.properties.tmp" <<EOF

# Topics are created explicitly by \`switchboard topics\` (docs/architecture.md); a typo must not
# silently create a topic.
auto.create.topics.enable=false
num.partitions=$KAFKA_NUM_PARTITIONS
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=$KAFKA_OFFSETS_PARTITIONS
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
unclean.leader.election.enable=false
delete.topic.enable=true

# Tests start and stop consumer groups all the time; do not wait 3 s for more members.
group.initial.rebalance.delay.ms=0

# A broker killed with SIGKILL stays registered until its session times out, and its
# restart waits for that (default 9 s). Fault tests kill and restart brokers.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000

# Small machine (2 cores).
num.network.threads=3
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
    mv "$dir/server.properties.tmp" "$dir/server.properties"
}

# The SASL_SSL listener (KAFKA_SASL_SSL_PORT): later keys override the PLAINTEXT-only ones
# above. Brokers talk to each other on PLAINTEXT; clients on SASL_SSL log in with SCRAM
# (credentials stored in the cluster metadata at format time) or PLAIN (from the JAAS line).
kafka_sasl_ssl_config() {
    local port=$1 cport=$2 user name password plain_users=""
    [[ -s $KAFKA_SSL_KEYSTORE_PEM ]] || die "KAFKA_SSL_KEYSTORE_PEM must name a PEM file (key + certificate chain)"
    [[ -n $KAFKA_SASL_USERS ]] || die "KAFKA_SASL_USERS must list name:password pairs"
    for user in $KAFKA_SASL_USERS; do
        name=${user%%:*} password=${user#*:}
        plain_users+=" user_$name=\"$password\""
    done
    cat <<EOF

# SASL_SSL client listener (scripts/stack.sh kafka_sasl_ssl_config)
listeners=PLAINTEXT://$KAFKA_HOST:$port,CONTROLLER://$KAFKA_HOST:$cport,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$port,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_SSL_KEYSTORE_PEM
listener.name.sasl_ssl.ssl.client.auth=none
EOF
}

# --add-scram arguments for the storage format (NUL-separated): one SCRAM-SHA-512
# credential per user of KAFKA_SASL_USERS.
kafka_scram_args() {
    local user
    [[ -n $KAFKA_SASL_SSL_PORT ]] || return 0
    for user in $KAFKA_SASL_USERS; do
        printf -- '--add-scram\0SCRAM-SHA-512=[name=%s,password=%s]\0' "${user%%:*}" "${user#*:}"
    done
}

kafka_node_pid() {
    local pidf pid
    pidf=$(kafka_node_dir "$1")/kafka.pid
    [[ -f $pidf ]] || return 1
    pid=$(cat "$pidf")
    if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'; then
        echo "$pid"
        return 0
    fi
    return 1
}

kafka_node_start() {
    local id=$1 port=$2 cport=$3 voters=$4
    local dir pid java cid log p who
    dir=$(kafka_node_dir "$id")
    log=$dir/kafka.log
    if pid=$(kafka_node_pid "$id"); then
        if port_open "$KAFKA_HOST" "$port"; then
            say "kafka node $id already running (pid $pid) on $KAFKA_HOST:$port"
            return 0
        fi
        say "kafka node $id is starting (pid $pid); waiting"
    else
        rm -f "$dir/kafka.pid"
        for p in "$port" "$cport"; do
            if port_open "$KAFKA_HOST" "$p"; then
                who=$(who_listens "$p")
                die "port $KAFKA_HOST:$p is taken by ${who:-another process} — not this stack's Kafka (STACK_DIR=$STACK_DIR). Stop it or set KAFKA_PORT/KAFKA_CONTROLLER_PORT."
            fi
        done
        ensure_java_maven
        kafka_fetch_jars
        java=$(java_bin)
        kafka_write_node_config "$id" "$port" "$cport" "$dir" "$voters"
        if [[ ! -f $dir/data/meta.properties ]]; then
            cid=$(kafka_cluster_id)
            say "formatting KRaft storage for node $id (cluster id $cid)"
            local -a scram=()
            mapfile -d '' scram < <(kafka_scram_args)
            kafka_cli kafka.tools.StorageTool format --cluster-id="$cid" -c "$dir/server.properties" \
                --ignore-formatted "${scram[@]}" >"$dir/format.log" 2>&1 ||
                { log_tail "$dir/format.log"; die "kafka storage format failed"; }
        fi
        [[ -f $log ]] && mv -f "$log" "$log.1"
        local -a heap extra
        read -r -a heap <<<"$KAFKA_HEAP_OPTS"
        read -r -a extra <<<"$KAFKA_JVM_OPTS"
        say "starting kafka node $id on $KAFKA_HOST:$port (controller $cport), log $log"
        start-stop-daemon --start --background --make-pidfile --pidfile "$dir/kafka.pid" \
            --output "$log" --chdir "$dir" --exec "$java" -- \
            "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExitOnOutOfMemoryError \
            -Djava.awt.headless=true "${extra[@]}" \
            -Dlog4j.configuration="file:$KAFKA_CONF_DIR/log4j.properties" \
            -cp "$KAFKA_LIB_DIR/*" kafka.Kafka "$dir/server.properties" 9>&-
        sleep 0.5
        pid=$(cat "$dir/kafka.pid" 2>/dev/null || true)
    fi
    local deadline=$(($(now) + KAFKA_START_TIMEOUT))
    while :; do
        if ! pid_alive "$pid"; then
            log_tail "$log" 60
            die "kafka node $id exited during startup (log: $log)"
        fi
        if grep -q 'Kafka Server started' "$log" 2>/dev/null && port_open "$KAFKA_HOST" "$port"; then
            break
        fi
        if (($(now) >= deadline)); then
            log_tail "$log" 60
            die "kafka node $id did not report 'Kafka Server started' within ${KAFKA_START_TIMEOUT}s (pid $pid still running; log: $log)"
        fi
        sleep 0.5
    done
    say "kafka node $id up (pid $pid) on $KAFKA_HOST:$port"
}

# kafka_node_stop NODE_ID [TERM|KILL]
kafka_node_stop() {
    local id=$1 sig=${2:-TERM} dir pid
    dir=$(kafka_node_dir "$id")
    if ! pid=$(kafka_node_pid "$id"); then
        rm -f "$dir/kafka.pid"
        say "kafka node $id not running"
        return 0
    fi
    say "stopping kafka node $id (pid $pid, SIG$sig)"
    kill -"$sig" "$pid" 2>/dev/null || true
    local deadline=$(($(now) + KAFKA_STOP_TIMEOUT))
    while pid_alive "$pid"; do
        if (($(now) >= deadline)); then
            warn "kafka node $id still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$(($(now) + 30))
        fi
        sleep 0.3
    done
    rm -f "$dir/kafka.pid"
    say "kafka node $id stopped"
}

# Single node today. A three-node cluster (broker-failure tests) would loop over
# ids 1..3 with ports 9092/9094/9096, controllers 9093/9095/9097, voters listing all
# three, and KAFKA_REPLICATION_FACTOR=3 KAFKA_MIN_INSYNC_REPLICAS=2.
kafka_voters() { echo "1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"; }
kafka_up() { kafka_node_start 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$(kafka_voters)"; }
kafka_down() { kafka_node_stop 1 "${1:-TERM}"; }

kafka_status() {
    local pid topics
    if ! pid=$(kafka_node_pid 1); then
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            echo "kafka    $KAFKA_HOST:$KAFKA_PORT  something listens, but not this stack's Kafka ($(who_listens "$KAFKA_PORT"))"
        else
            echo "kafka    $KAFKA_HOST:$KAFKA_PORT  down"
        fi
        return 1
    fi
    if ! port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        echo "kafka    $KAFKA_HOST:$KAFKA_PORT  process running (pid $pid) but not listening"
        return 1
    fi
    if topics=$(KAFKA_CLI_TIMEOUT=60 kafka_cli org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --list 2>/dev/null); then
        echo "kafka    $KAFKA_HOST:$KAFKA_PORT  up (pid $pid, $(grep -c . <<<"$topics" || true) topics), log $(kafka_node_dir 1)/kafka.log"
        return 0
    fi
    echo "kafka    $KAFKA_HOST:$KAFKA_PORT  listening (pid $pid) but metadata request failed"
    return 1
}

# kafka-instance NAME ACTION --port P --controller-port C [--dir D]: one more single-node
# broker with its own ports and data, sharing only the cached jars. Its lock is its own, so
# it never queues behind (or blocks) the shared stack's commands.
cmd_kafka_instance() {
    local name=${1:-} action=${2:-} port="" cport="" dir=""
    [[ -n $name && -n $action ]] || die "usage: kafka-instance NAME up|start|stop|kill|status --port P --controller-port C [--dir D]"
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "kafka-instance: bad name '$name'"
    shift 2
    while [[ $# -gt 0 ]]; do
        case $1 in
        --port) port=${2:-}; shift 2 ;;
        --controller-port) cport=${2:-}; shift 2 ;;
        --dir) dir=${2:-}; shift 2 ;;
        *) die "kafka-instance: unknown option $1" ;;
        esac
    done
    [[ $port =~ ^[0-9]+$ && $cport =~ ^[0-9]+$ ]] || die "kafka-instance needs --port and --controller-port"
    [[ $port != "$KAFKA_PORT" && $cport != "$KAFKA_CONTROLLER_PORT" ]] || die "kafka-instance: those are the shared broker's ports"
    KAFKA_NODES_DIR=$(realpath -m "${dir:-$STACK_DIR/instances/$name}")
    mkdir -p "$KAFKA_NODES_DIR"
    exec 9>"$KAFKA_NODES_DIR/.lock"
    flock -w 300 9 || die "timed out waiting for $KAFKA_NODES_DIR/.lock"
    case $action in
    up | start) kafka_node_start 1 "$port" "$cport" "1@$KAFKA_HOST:$cport" ;;
    stop) kafka_node_stop 1 TERM ;;
    kill) kafka_node_stop 1 KILL ;;
    status)
        if kafka_node_pid 1 >/dev/null && port_open "$KAFKA_HOST" "$port"; then
            echo "kafka instance $name  $KAFKA_HOST:$port  up (pid $(kafka_node_pid 1))"
        else
            echo "kafka instance $name  $KAFKA_HOST:$port  down"
            return 1
        fi
        ;;
    *) die "kafka-instance: unknown action $action" ;;
    esac
}

# kafka-cluster NAME ACTION [N] [--base-port P] [--dir D]: a three-node KRaft cluster of
# its own (each node broker and controller; replication 3, min.insync.replicas 2), for
# tests that kill a broker under load. Node N listens on P+2(N-1), its controller on
# P+2(N-1)+1; data under D/nodeN. Shares only the cached jars; its own lock.
CLUSTER_NODES=(1 2 3)

cmd_kafka_cluster() {
    local name=${1:-} action=${2:-} base=29092 dir="" node=""
    [[ -n $name && -n $action ]] || die "usage: kafka-cluster NAME up|down|kill|status|kill-broker N|stop-broker N|start-broker N [--base-port P] [--dir D]"
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "kafka-cluster: bad name '$name'"
    shift 2
    case $action in
    kill-broker | stop-broker | start-broker)
        node=${1:-}
        [[ $node =~ ^[123]$ ]] || die "kafka-cluster $action needs a node number, 1 to 3"
        shift
        ;;
    esac
    while [[ $# -gt 0 ]]; do
        case $1 in
        --base-port) base=${2:-}; shift 2 ;;
        --dir) dir=${2:-}; shift 2 ;;
        *) die "kafka-cluster: unknown option $1" ;;
        esac
    done
    [[ $base =~ ^[0-9]+$ ]] || die "kafka-cluster: --base-port must be a number"
    local n p
    for n in "${CLUSTER_NODES[@]}"; do
        for p in "$(cluster_port "$base" "$n")" "$(($(cluster_port "$base" "$n") + 1))"; do
            [[ $p != "$KAFKA_PORT" && $p != "$KAFKA_CONTROLLER_PORT" ]] ||
                die "kafka-cluster: base port $base overlaps the shared broker's ports"
        done
    done
    KAFKA_NODES_DIR=$(realpath -m "${dir:-$STACK_DIR/instances/$name}")
    KAFKA_REPLICATION_FACTOR=3
    KAFKA_MIN_INSYNC_REPLICAS=2
    mkdir -p "$KAFKA_NODES_DIR"
    exec 9>"$KAFKA_NODES_DIR/.lock"
    flock -w 300 9 || die "timed out waiting for $KAFKA_NODES_DIR/.lock"
    case $action in
    up) cluster_up "$base" ;;
    down) cluster_each "$base" stop TERM ;;
    kill) cluster_each "$base" stop KILL ;;
    kill-broker) kafka_node_stop "$node" KILL ;;
    stop-broker) kafka_node_stop "$node" TERM ;;
    start-broker) kafka_node_start "$node" "$(cluster_port "$base" "$node")" \
        "$(($(cluster_port "$base" "$node") + 1))" "$(cluster_voters "$base")" ;;
    status) cluster_status "$name" "$base" ;;
    *) die "kafka-cluster: unknown action $action" ;;
    esac
}

cluster_port() { echo $(($1 + 2 * ($2 - 1))); }

cluster_voters() {
    local base=$1 n voters=""
    for n in "${CLUSTER_NODES[@]}"; do
        voters+="${voters:+,}$n@$KAFKA_HOST:$(($(cluster_port "$base" "$n") + 1))"
    done
    echo "$voters"
}

cluster_bootstrap() {
    local base=$1 n out=""
    for n in "${CLUSTER_NODES[@]}"; do
        out+="${out:+,}$KAFKA_HOST:$(cluster_port "$base" "$n")"
    done
    echo "$out"
}

# The nodes start together: none reports "started" before a quorum of controllers is up.
cluster_up() {
    local base=$1 n rc=0
    local -a pids=()
    ensure_java_maven
    kafka_fetch_jars
    kafka_cluster_id >/dev/null # one id for all nodes, written before they fork
    for n in "${CLUSTER_NODES[@]}"; do
        (kafka_node_start "$n" "$(cluster_port "$base" "$n")" \
            "$(($(cluster_port "$base" "$n") + 1))" "$(cluster_voters "$base")") &
        pids+=($!)
    done
    for n in "${pids[@]}"; do
        wait "$n" || rc=1
    done
    [[ $rc -eq 0 ]] || die "kafka cluster did not start (node logs under $KAFKA_NODES_DIR/node*/kafka.log)"
    say "kafka cluster up: $(cluster_bootstrap "$base") (replication 3, min.insync.replicas 2)"
}

# cluster_each BASE stop TERM|KILL: all nodes at once (a node alone waits on the others).
cluster_each() {
    local n
    for n in "${CLUSTER_NODES[@]}"; do
        (kafka_node_stop "$n" "$3") &
    done
    wait
}

cluster_status() {
    local name=$1 base=$2 n rc=0 port
    for n in "${CLUSTER_NODES[@]}"; do
        port=$(cluster_port "$base" "$n")
        if kafka_node_pid "$n" >/dev/null && port_open "$KAFKA_HOST" "$port"; then
            echo "kafka cluster $name node $n  $KAFKA_HOST:$port  up (pid $(kafka_node_pid "$n"))"
        else
            echo "kafka cluster $name node $n  $KAFKA_HOST:$port  down"
            rc=1
        fi
    done
    return $rc
}

# ---------------------------------------------------------------------------- MariaDB

mariadb_server_bin() {
    local b
    for b in mariadbd mysqld; do
        if command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return 0
        fi
        if [[ -x /usr/sbin/$b ]]; then
            echo "/usr/sbin/$b"
            return 0
        fi
    done
    return 1
}

root_sql() { mariadb --protocol=socket --socket="$MARIADB_SOCKET" -uroot "$@"; }

mariadb_answers() { root_sql -N -e 'select 1' >/dev/null 2>&1; }

app_user_answers() {
    MYSQL_PWD=$DB_PASSWORD mariadb --protocol=tcp -h"$MARIADB_HOST" -P"$MARIADB_PORT" \
        -u"$DB_USER" "$DB_NAME" -N -e 'select 1' >/dev/null 2>&1
}

mariadb_pid() {
    local pid
    [[ -f $MARIADB_PIDFILE ]] || return 1
    pid=$(cat "$MARIADB_PIDFILE")
    pid_alive "$pid" && echo "$pid"
}

# Our settings, read after Debian's 50-server.cnf. Durability defaults stay as they are
# (innodb_flush_log_at_trx_commit=1, sync_binlog untouched): tests rely on them.
mariadb_write_cnf() {
    mkdir -p "$(dirname "$MARIADB_CNF")"
    cat >"$MARIADB_CNF.tmp" <<EOF
# Written by switchboard scripts/stack.sh; overwritten on every start.
[mariadb]
bind-address = $MARIADB_HOST
port = $MARIADB_PORT
socket = $MARIADB_SOCKET
pid-file = $MARIADB_PIDFILE
datadir = $MARIADB_DATADIR
log_error = $MARIADB_ERROR_LOG
innodb_buffer_pool_size = 256M
max_connections = 300
character-set-server = utf8mb4
# MySQL 8's default sql_mode, so SQL that MySQL 8 (production) would reject fails here too.
sql_mode = ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
EOF
    mv "$MARIADB_CNF.tmp" "$MARIADB_CNF"
}

mariadb_install() {
    if mariadb_server_bin >/dev/null && command -v mariadb >/dev/null 2>&1; then
        return 0
    fi
    # Our config file goes in first, so a server started by the package's postinst
    # (where services may start) already uses it.
    mariadb_write_cnf
    apt_install mariadb-server mariadb-client
    mariadb_server_bin >/dev/null || die "mariadb-server installed but no mariadbd/mysqld found"
}

mariadb_setup_db() {
    root_sql <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
-- Tests create (and drop) one database per run/test named switchboard_test_xxx.
GRANT ALL PRIVILEGES ON \`${DB_NAME}\\_%\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

# True when the running server was started by mysqld_safe (e.g. by the package's
# postinst or /etc/init.d/mariadb on a machine without a policy-rc.d): mysqld_safe would
# restart a server that a fault test killed on purpose.
mariadb_under_safe() {
    local pid ppid
    pid=$(mariadb_pid) || return 1
    ppid=$(ps -o ppid= -p "$pid" | tr -d ' ')
    [[ -n $ppid ]] && ps -o args= -p "$ppid" 2>/dev/null | grep -q mysqld_safe
}

mariadb_start() {
    mariadb_install
    if mariadb_answers && mariadb_under_safe; then
        say "mariadb runs under mysqld_safe; restarting it under start-stop-daemon"
        mariadb_stop
    fi
    if mariadb_answers; then
        say "mariadb already running (pid $(mariadb_pid || echo '?')) on $MARIADB_HOST:$MARIADB_PORT"
    else
        local bin pid who
        bin=$(mariadb_server_bin)
        mariadb_write_cnf
        install -d -o mysql -g mysql -m 0755 "$MARIADB_RUN_DIR"
        install -d -o mysql -g adm -m 2750 "$MARIADB_LOG_DIR"
        if [[ ! -d $MARIADB_DATADIR/mysql ]]; then
            say "initialising $MARIADB_DATADIR"
            install -d -o mysql -g mysql -m 0755 "$MARIADB_DATADIR"
            mariadb-install-db --user=mysql --datadir="$MARIADB_DATADIR" \
                --auth-root-authentication-method=socket >"$STACK_DIR/mariadb-install-db.log" 2>&1 ||
                { log_tail "$STACK_DIR/mariadb-install-db.log"; die "mariadb-install-db failed"; }
        fi
        if pid=$(mariadb_pid); then
            say "mariadb process $pid exists but does not answer yet; waiting"
        else
            rm -f "$MARIADB_PIDFILE" # stale, from a killed server
            if port_open "$MARIADB_HOST" "$MARIADB_PORT"; then
                who=$(who_listens "$MARIADB_PORT")
                die "port $MARIADB_HOST:$MARIADB_PORT is taken by ${who:-another process}"
            fi
            say "starting mariadb ($bin), error log $MARIADB_ERROR_LOG"
            # --pidfile: only the process our pid file names is "already running"; without
            # it any mariadbd counts (a test's or a developer's private server), and
            # start-stop-daemon started nothing.
            start-stop-daemon --start --background --output "$MARIADB_LOG_DIR/mariadbd.out" \
                --pidfile "$MARIADB_PIDFILE" --exec "$bin" -- --user=mysql 9>&-
        fi
        local deadline=$(($(now) + MARIADB_START_TIMEOUT))
        until mariadb_answers; do
            if (($(now) >= deadline)); then
                log_tail "$MARIADB_ERROR_LOG" 40
                log_tail "$MARIADB_LOG_DIR/mariadbd.out" 20
                die "mariadb did not answer on $MARIADB_SOCKET within ${MARIADB_START_TIMEOUT}s"
            fi
            # Once it has written its pid file, a vanished process means it crashed.
            if [[ -f $MARIADB_PIDFILE ]] && ! mariadb_pid >/dev/null; then
                sleep 1
                if ! mariadb_answers && ! mariadb_pid >/dev/null; then
                    log_tail "$MARIADB_ERROR_LOG" 40
                    die "mariadb exited during startup"
                fi
            fi
            sleep 0.5
        done
        say "mariadb up (pid $(mariadb_pid || echo '?')) on $MARIADB_HOST:$MARIADB_PORT"
    fi
    mariadb_setup_db
    app_user_answers || die "user $DB_USER cannot log in over TCP to $MARIADB_HOST:$MARIADB_PORT/$DB_NAME"
    say "database '$DB_NAME' ready for $DB_USER@127.0.0.1 / $DB_USER@localhost"
}

# mariadb_stop [TERM|KILL]
mariadb_stop() {
    local sig=${1:-TERM} pid
    pid=$(mariadb_pid || true)
    if [[ -z $pid ]] && ! mariadb_answers; then
        say "mariadb not running"
        return 0
    fi
    if [[ $sig == KILL ]]; then
        [[ -n $pid ]] || die "mariadb answers but $MARIADB_PIDFILE names no live process"
        say "killing mariadb (pid $pid, SIGKILL)"
        kill -KILL "$pid"
    else
        say "stopping mariadb (pid ${pid:-?})"
        if ! mariadb-admin --protocol=socket --socket="$MARIADB_SOCKET" -uroot \
            --shutdown-timeout="$MARIADB_STOP_TIMEOUT" shutdown 2>/dev/null; then
            [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
    local deadline=$(($(now) + MARIADB_STOP_TIMEOUT))
    while pid_alive "$pid" || { [[ -z $pid ]] && mariadb_answers; }; do
        if (($(now) >= deadline)); then
            if [[ -n $pid ]]; then
                warn "mariadb still running after ${MARIADB_STOP_TIMEOUT}s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                deadline=$(($(now) + 30))
            else
                die "mariadb still answers after ${MARIADB_STOP_TIMEOUT}s"
            fi
        fi
        sleep 0.3
    done
    [[ $sig == KILL ]] && rm -f "$MARIADB_PIDFILE"
    say "mariadb stopped"
}

mariadb_status() {
    local pid
    pid=$(mariadb_pid || echo '?')
    if ! mariadb_answers; then
        echo "mariadb  $MARIADB_HOST:$MARIADB_PORT  down"
        return 1
    fi
    if app_user_answers; then
        echo "mariadb  $MARIADB_HOST:$MARIADB_PORT  up (pid $pid, $DB_USER@$MARIADB_HOST/$DB_NAME answers), log $MARIADB_ERROR_LOG"
        return 0
    fi
    echo "mariadb  $MARIADB_HOST:$MARIADB_PORT  server up (pid $pid) but $DB_USER cannot reach $DB_NAME over TCP (run: scripts/stack.sh up)"
    return 1
}

mariadb_reset_databases() {
    local db
    say "dropping and recreating database '$DB_NAME' (and any ${DB_NAME}_test_* databases)"
    for db in $(root_sql -N -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${DB_NAME}\\_test\\_%'"); do
        root_sql -e "DROP DATABASE IF EXISTS \`$db\`"
    done
    root_sql -e "DROP DATABASE IF EXISTS \`$DB_NAME\`"
    mariadb_setup_db
}

# mariadb-instance NAME ACTION --port P [--dir D]: one more MariaDB server with its own
# port, socket, pid file, config and data directory; nothing of the shared server's
# (/etc/mysql, /var/lib/mysql, /run/mysqld) is read or written. Its own lock.
cmd_mariadb_instance() {
    local name=${1:-} action=${2:-} port="" dir="" tls=""
    [[ -n $name && -n $action ]] || die "usage: mariadb-instance NAME up|start|stop|kill|status|sql --port P [--dir D] [--tls T] [SQL]"
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "mariadb-instance: bad name '$name'"
    shift 2
    local -a rest=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --port) port=${2:-}; shift 2 ;;
        --dir) dir=${2:-}; shift 2 ;;
        --tls) tls=${2:-}; shift 2 ;;
        *) rest+=("$1"); shift ;;
        esac
    done
    [[ $port =~ ^[0-9]+$ ]] || die "mariadb-instance needs --port"
    [[ $port != "$MARIADB_PORT" ]] || die "mariadb-instance: $MARIADB_PORT is the shared server's port"
    dir=$(realpath -m "${dir:-$STACK_DIR/instances/$name}")
    [[ $dir != "$MARIADB_DATADIR" && $dir != "$MARIADB_DATADIR"/* ]] || die "mariadb-instance: $dir is the shared server's"
    mkdir -p "$dir"
    local sock=$dir/mysqld.sock pidf=$dir/mysqld.pid
    exec 9>"$dir/.lock"
    flock -w 300 9 || die "timed out waiting for $dir/.lock"
    case $action in
    up | start) instance_mariadb_start "$name" "$dir" "$port" "$tls" ;;
    stop) instance_mariadb_stop "$name" "$sock" "$pidf" TERM ;;
    kill) instance_mariadb_stop "$name" "$sock" "$pidf" KILL ;;
    status)
        if instance_sql "$sock" -N -e 'select 1' >/dev/null 2>&1; then
            echo "mariadb instance $name  $MARIADB_HOST:$port  up (pid $(cat "$pidf" 2>/dev/null || echo '?')), log $dir/error.log"
        else
            echo "mariadb instance $name  $MARIADB_HOST:$port  down"
            return 1
        fi
        ;;
    sql)
        [[ ${#rest[@]} -gt 0 ]] || die "mariadb-instance sql needs the SQL to run"
        instance_sql "$sock" -e "${rest[*]}"
        ;;
    *) die "mariadb-instance: unknown action $action" ;;
    esac
}

instance_sql() {
    local sock=$1
    shift
    mariadb --no-defaults --protocol=socket --socket="$sock" -uroot "$@"
}

instance_mariadb_start() {
    local name=$1 dir=$2 port=$3 tls=${4:-}
    local cnf=$dir/my.cnf sock=$dir/mysqld.sock pidf=$dir/mysqld.pid log=$dir/error.log
    local bin who pid deadline
    mariadb_install
    bin=$(mariadb_server_bin)
    if instance_sql "$sock" -N -e 'select 1' >/dev/null 2>&1; then
        say "mariadb instance $name already running on $MARIADB_HOST:$port"
    else
        if port_open "$MARIADB_HOST" "$port"; then
            who=$(who_listens "$port")
            die "port $MARIADB_HOST:$port is taken by ${who:-another process}"
        fi
        # It runs as whoever starts it (root here): its directory may be one that the
        # mysql user cannot even traverse, such as a test's private temporary directory.
        mkdir -p "$dir/data"
        {
            echo "# Written by switchboard scripts/stack.sh (mariadb-instance $name); overwritten on start."
            echo "[mariadb]"
            echo "user = $(id -un)"
            echo "bind-address = $MARIADB_HOST"
            echo "port = $port"
            echo "socket = $sock"
            echo "pid-file = $pidf"
            echo "datadir = $dir/data"
            echo "log_error = $log"
            echo "innodb_buffer_pool_size = 64M"
            echo "max_connections = 200"
            echo "character-set-server = utf8mb4"
            echo "skip-name-resolve"
            echo "sql_mode = ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
            if [[ -n $tls ]]; then
                # --tls DIR: ca.crt, server.crt and server.key (PEM); TCP clients must use TLS.
                echo "ssl-ca = $(realpath "$tls/ca.crt")"
                echo "ssl-cert = $(realpath "$tls/server.crt")"
                echo "ssl-key = $(realpath "$tls/server.key")"
                echo "require_secure_transport = ON"
            fi
        } >"$cnf"
        if [[ ! -d $dir/data/mysql ]]; then
            say "initialising $dir/data"
            mariadb-install-db --defaults-file="$cnf" --auth-root-authentication-method=socket \
                --skip-test-db >"$dir/install-db.log" 2>&1 ||
                { log_tail "$dir/install-db.log"; die "mariadb-install-db failed for instance $name"; }
        fi
        rm -f "$pidf"
        say "starting mariadb instance $name on $MARIADB_HOST:$port, log $log"
        setsid "$bin" --defaults-file="$cnf" >"$dir/mariadbd.out" 2>&1 </dev/null 9>&- &
        pid=$!
        deadline=$(($(now) + MARIADB_START_TIMEOUT))
        until instance_sql "$sock" -N -e 'select 1' >/dev/null 2>&1; do
            if ! pid_alive "$pid"; then
                log_tail "$log" 40
                die "mariadb instance $name exited during startup"
            fi
            if (($(now) >= deadline)); then
                log_tail "$log" 40
                die "mariadb instance $name did not answer within ${MARIADB_START_TIMEOUT}s"
            fi
            sleep 0.3
        done
    fi
    instance_sql "$sock" -e "
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON \`${DB_NAME}\\_%\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
FLUSH PRIVILEGES;" || die "could not create the $DB_USER user on mariadb instance $name"
    say "mariadb instance $name up (pid $(cat "$pidf" 2>/dev/null || echo '?')) on $MARIADB_HOST:$port"
}

# instance_mariadb_stop NAME SOCKET PIDFILE TERM|KILL
instance_mariadb_stop() {
    local name=$1 sock=$2 pidf=$3 sig=$4 pid deadline
    pid=$(cat "$pidf" 2>/dev/null || true)
    if ! pid_alive "$pid"; then
        rm -f "$pidf"
        say "mariadb instance $name not running"
        return 0
    fi
    if [[ $sig == KILL ]]; then
        say "killing mariadb instance $name (pid $pid, SIGKILL)"
        kill -KILL "$pid"
    else
        say "stopping mariadb instance $name (pid $pid)"
        mariadb-admin --no-defaults --protocol=socket --socket="$sock" -uroot \
            --shutdown-timeout="$MARIADB_STOP_TIMEOUT" shutdown 2>/dev/null ||
            kill -TERM "$pid" 2>/dev/null || true
    fi
    deadline=$(($(now) + MARIADB_STOP_TIMEOUT))
    while pid_alive "$pid"; do
        if (($(now) >= deadline)); then
            warn "mariadb instance $name still running after ${MARIADB_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$(($(now) + 30))
        fi
        sleep 0.2
    done
    rm -f "$pidf"
    say "mariadb instance $name stopped"
}

# ---------------------------------------------------------------------------- commands

FETCH_PID=""
cmd_up() {
    local t0
    t0=$(now)
    take_lock
    # The jar download and the MariaDB install are both network-bound: overlap them.
    if ! kafka_node_pid 1 >/dev/null && ! kafka_jars_cached; then
        ensure_java_maven
        (kafka_fetch_jars) >"$STACK_DIR/fetch-jars.log" 2>&1 &
        FETCH_PID=$!
        trap 'if [[ -n $FETCH_PID ]]; then kill "$FETCH_PID" 2>/dev/null || true; fi' EXIT
    fi
    mariadb_start
    if [[ -n $FETCH_PID ]]; then
        if ! wait "$FETCH_PID"; then
            FETCH_PID=""
            cat "$STACK_DIR/fetch-jars.log" >&2
            die "fetching the Kafka jars failed"
        fi
        FETCH_PID=""
        cat "$STACK_DIR/fetch-jars.log"
    fi
    kafka_up
    say "stack up in $(($(now) - t0))s: kafka $KAFKA_HOST:$KAFKA_PORT, mariadb $MARIADB_HOST:$MARIADB_PORT/$DB_NAME"
}

cmd_down() {
    take_lock
    kafka_down
    mariadb_stop
}

cmd_wipe() {
    take_lock
    kafka_down
    say "deleting $STACK_DIR/kafka and $REPO/var"
    rm -rf "$STACK_DIR/kafka" "$REPO/var"
    if mariadb_server_bin >/dev/null; then
        mariadb_start
        mariadb_reset_databases
        mariadb_stop
    fi
    say "wiped; everything is stopped (run: scripts/stack.sh up)"
}

cmd_status() {
    local rc=0 what=${1:-all}
    case $what in
    all) kafka_status || rc=1; mariadb_status || rc=1 ;;
    kafka) kafka_status || rc=1 ;;
    mariadb) mariadb_status || rc=1 ;;
    *) die "status takes kafka, mariadb or nothing" ;;
    esac
    return $rc
}

cmd_env() {
    echo "export SWITCHBOARD_KAFKA_BOOTSTRAP=$KAFKA_HOST:$KAFKA_PORT"
    echo "export SWITCHBOARD_DATABASE_URL=mysql+pymysql://$DB_USER:$DB_PASSWORD@$MARIADB_HOST:$MARIADB_PORT/$DB_NAME"
}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    up | down | wipe | kafka-start | kafka-stop | kafka-kill | mariadb-*)
        [[ $(id -u) -eq 0 ]] || die "scripts/stack.sh $cmd must run as root (apt, MariaDB under /var/lib/mysql)"
        ;;
    esac
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    wipe) cmd_wipe ;;
    status) cmd_status "$@" ;;
    kafka-start) take_lock; kafka_up ;;
    kafka-stop) take_lock; kafka_down TERM ;;
    kafka-kill) take_lock; kafka_down KILL ;;
    mariadb-start) take_lock; mariadb_start ;;
    mariadb-stop) take_lock; mariadb_stop TERM ;;
    mariadb-kill) take_lock; mariadb_stop KILL ;;
    kafka-instance) cmd_kafka_instance "$@" ;;
    kafka-topics)
        kafka_jars_cached || die "no Kafka jars yet (run: scripts/stack.sh up)"
        kafka_cli org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" "$@"
        ;;
    kafka-groups)
        kafka_jars_cached || die "no Kafka jars yet (run: scripts/stack.sh up)"
        kafka_cli org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
            --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" "$@"
        ;;
    env) cmd_env ;;
    mariadb-instance) cmd_mariadb_instance "$@" ;;
    kafka-cluster) cmd_kafka_cluster "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) usage >&2; die "unknown command: $cmd" ;;
    esac
}

main "$@"
