#!/usr/bin/env bash
# freshrec local stack: the real Kafka broker, an S3 server and Prometheus, as plain
# processes on 127.0.0.1, for tests and the demo on machines without Docker.
#
#   deploy/local/stack.sh up                 start whatever is not running, wait until ready
#   deploy/local/stack.sh down               stop everything, check the ports are free
#   deploy/local/stack.sh status             each service up/down with its endpoint (exit 3 if any is down)
#   deploy/local/stack.sh logs [svc] [-f]    end of the logs (svc: kafka, s3, prometheus)
#   deploy/local/stack.sh env                endpoints as FRESHREC_TEST_* lines (`set -a; . <(stack.sh env)`)
#   deploy/local/stack.sh reload             make Prometheus re-read its config and rule files
#
# Services (defaults; every port can be moved with the env var next to it):
#   kafka       Apache Kafka (version pinned in deploy/local/pom.xml), one KRaft node
#               broker     127.0.0.1:19092   FRESHREC_STACK_KAFKA_PORT
#               controller 127.0.0.1:19093   FRESHREC_STACK_KAFKA_CONTROLLER_PORT
#               heap 512m                    FRESHREC_STACK_KAFKA_HEAP
#   s3          versitygw serving $STACK_DIR/s3data
#               http://127.0.0.1:19000       FRESHREC_STACK_S3_PORT
#               access key freshrec          FRESHREC_STACK_S3_ACCESS_KEY
#               secret key freshrec-secret   FRESHREC_STACK_S3_SECRET_KEY
#               region us-east-1             FRESHREC_STACK_S3_REGION
#               bucket freshrec (created)    FRESHREC_STACK_S3_BUCKET
#   prometheus  Debian's prometheus binary, our own instance and config
#               http://127.0.0.1:19090       FRESHREC_STACK_PROMETHEUS_PORT
#               scrape targets: write file_sd JSON into $STACK_DIR/prometheus/targets/
#
# All state (downloads, data, logs, pid files) lives in one folder, .stack/ at the
# repo root (git-ignored), or FRESHREC_STACK_DIR. `rm -rf .stack` after `down` is a
# full reset. The first `up` downloads the Kafka jars and compiles versitygw (a few
# minutes); later ones reuse them.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
LOG_TAG=stack
# shellcheck source=deploy/local/lib.sh
source "$SCRIPT_DIR/lib.sh"

STACK_DIR=${FRESHREC_STACK_DIR:-$REPO_ROOT/.stack}
PYTHON=${PYTHON:-python3}

KAFKA_PORT=${FRESHREC_STACK_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${FRESHREC_STACK_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${FRESHREC_STACK_KAFKA_HEAP:-512m}
S3_PORT=${FRESHREC_STACK_S3_PORT:-19000}
S3_ACCESS_KEY=${FRESHREC_STACK_S3_ACCESS_KEY:-freshrec}
S3_SECRET_KEY=${FRESHREC_STACK_S3_SECRET_KEY:-freshrec-secret}
S3_REGION=${FRESHREC_STACK_S3_REGION:-us-east-1}
S3_BUCKET=${FRESHREC_STACK_S3_BUCKET:-freshrec}
PROMETHEUS_PORT=${FRESHREC_STACK_PROMETHEUS_PORT:-19090}
READY_TIMEOUT=${FRESHREC_STACK_READY_TIMEOUT:-120}

# Pinned: a new versitygw release must not change the test environment under us.
VERSITYGW_MODULE=github.com/versity/versitygw/cmd/versitygw
VERSITYGW_VERSION=v1.8.0

SERVICES=(kafka s3 prometheus)
RUN_DIR=$STACK_DIR/run
LOG_DIR=$STACK_DIR/logs
ENV_FILE=$STACK_DIR/stack.env

# --------------------------------------------------------------------------- helpers

port_of() {
    case $1 in
        kafka) echo "$KAFKA_PORT" ;;
        s3) echo "$S3_PORT" ;;
        prometheus) echo "$PROMETHEUS_PORT" ;;
    esac
}

endpoint_of() {
    case $1 in
        kafka) echo "127.0.0.1:$KAFKA_PORT" ;;
        s3) echo "http://127.0.0.1:$S3_PORT" ;;
        prometheus) echo "http://127.0.0.1:$PROMETHEUS_PORT" ;;
    esac
}

# A string that is in the service's command line and in no one else's: a path
# inside our state dir. Used to recognise our process behind a pid (pids get reused)
# and to find our processes whose pid file was lost.
signature_of() {
    case $1 in
        kafka) echo "$STACK_DIR/kafka/server.properties" ;;
        s3) echo "$STACK_DIR/s3data" ;;
        prometheus) echo "$STACK_DIR/prometheus/prometheus.yml" ;;
    esac
}

pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_holder() {
    if have ss; then
        ss -ltnpH "sport = :$1" 2>/dev/null | sed 's/^/    /'
    fi
}

cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# Prints the pid of our running instance of service $1; fails if it is not running.
running_pid() {
    local f pid
    f=$(pid_file "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cmdline_of "$pid") == *"$(signature_of "$1")"* ]] || return 1
    echo "$pid"
}

# Our processes for service $1 that have no (valid) pid file, e.g. after the pid
# file was deleted by hand. Matched on a path inside our own state dir only.
orphan_pids() {
    local sig pid known
    sig=$(signature_of "$1")
    known=$(running_pid "$1" || true)
    for pid in $(pgrep -f -- "$sig" 2>/dev/null || true); do
        [[ $pid == "$known" || $pid == "$$" ]] && continue
        if [[ $(cmdline_of "$pid") == *"$sig"* ]]; then echo "$pid"; fi
    done
    return 0
}

# start_bg SERVICE CMD...: run CMD detached, its output in the service log.
start_bg() {
    local svc=$1 log
    shift
    log=$(log_file "$svc")
    [[ -f $log ]] && mv -f "$log" "$log.1" # keep the previous run's log for post-mortems
    # setsid: the service gets its own session and process group (pgid == pid, since a
    # background child of a script is never a group leader, setsid does not fork), so it
    # outlives the shell/CI step that started it and `down` can signal the whole group.
    # 9>&-: do not leak our lock fd into the daemon, or the lock would stay held.
    setsid "$@" >"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$(pid_file "$svc")"
}

# stop_pid SERVICE PID: SIGTERM the process group, wait, then SIGKILL.
stop_pid() {
    local svc=$1 pid=$2 i
    say "stopping $svc (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    # Kafka shuts down cleanly in a few seconds; give it 30 s before forcing.
    for ((i = 0; i < 150; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    say "$svc did not stop within 30 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

# One stack.sh at a time per state dir: concurrent test sessions may all call `up`.
take_lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    if ! flock -w 600 9; then
        die "another stack.sh has held $STACK_DIR/.lock for 10 minutes; is a cold 'up' stuck?"
    fi
}

# sed-based @NAME@ templating; values are paths and numbers, '|' never occurs in them.
render() {
    local tmpl=$1 out=$2
    shift 2
    local args=() kv
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tmpl" >"$out.tmp"
    if grep -v '^[[:space:]]*#' "$out.tmp" | grep -q '@[A-Z_]*@'; then
        die "unrendered placeholder in $out.tmp (template $tmpl)"
    fi
    mv -f "$out.tmp" "$out"
}

# The endpoints the running stack was started with. Later commands use them, so that
# `status`/`down` work even when called without the env vars `up` was called with.
write_env_file() {
    cat >"$ENV_FILE.tmp" <<EOF
# Written by deploy/local/stack.sh up. Endpoints of the running local stack.
FRESHREC_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
FRESHREC_TEST_S3=http://127.0.0.1:$S3_PORT
FRESHREC_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
FRESHREC_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
FRESHREC_TEST_S3_REGION=$S3_REGION
FRESHREC_TEST_S3_BUCKET=$S3_BUCKET
FRESHREC_TEST_PROMETHEUS=http://127.0.0.1:$PROMETHEUS_PORT
FRESHREC_TEST_PROMETHEUS_TARGETS_DIR=$STACK_DIR/prometheus/targets
FRESHREC_STACK_KAFKA_PORT=$KAFKA_PORT
FRESHREC_STACK_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
FRESHREC_STACK_S3_PORT=$S3_PORT
FRESHREC_STACK_PROMETHEUS_PORT=$PROMETHEUS_PORT
EOF
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

# If services are running, adopt the ports recorded when they were started; refuse
# (for `up`) to silently mix two port sets.
load_recorded_ports() {
    local mode=$1 any_running=0 svc
    [[ -f $ENV_FILE ]] || return 0
    for svc in "${SERVICES[@]}"; do running_pid "$svc" >/dev/null && any_running=1; done
    ((any_running)) || return 0
    local rk rc rs rp
    rk=$(sed -n 's/^FRESHREC_STACK_KAFKA_PORT=//p' "$ENV_FILE")
    rc=$(sed -n 's/^FRESHREC_STACK_KAFKA_CONTROLLER_PORT=//p' "$ENV_FILE")
    rs=$(sed -n 's/^FRESHREC_STACK_S3_PORT=//p' "$ENV_FILE")
    rp=$(sed -n 's/^FRESHREC_STACK_PROMETHEUS_PORT=//p' "$ENV_FILE")
    if [[ $mode == up && "$rk/$rc/$rs/$rp" != "$KAFKA_PORT/$KAFKA_CONTROLLER_PORT/$S3_PORT/$PROMETHEUS_PORT" ]]; then
        die "the stack in $STACK_DIR is running with ports kafka=$rk/$rc s3=$rs prometheus=$rp, not the requested $KAFKA_PORT/$KAFKA_CONTROLLER_PORT/$S3_PORT/$PROMETHEUS_PORT. Run 'deploy/local/stack.sh down' first."
    fi
    KAFKA_PORT=${rk:-$KAFKA_PORT}
    KAFKA_CONTROLLER_PORT=${rc:-$KAFKA_CONTROLLER_PORT}
    S3_PORT=${rs:-$S3_PORT}
    PROMETHEUS_PORT=${rp:-$PROMETHEUS_PORT}
}

require_port_free() {
    local port=$1 what=$2
    if port_open "$port"; then
        die "port 127.0.0.1:$port (for $what) is already in use by another process:
$(port_holder "$port")
  Stop that process, or pick other ports via the FRESHREC_STACK_*_PORT env vars (see the top of $0)."
    fi
}

# --------------------------------------------------------------------------- kafka

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$SCRIPT_DIR/pom.xml"; }

ensure_kafka_jars() {
    local libs=$STACK_DIR/kafka/libs marker want
    marker=$libs/.pom.sha256
    # The pom's hash is the cache key: a version bump in pom.xml triggers a refetch.
    want=$(sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1)
    if [[ -f $marker && $(<"$marker") == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    have java || die "java not found: Kafka needs Java 17+. Run: bash deploy/local/bootstrap.sh"
    have mvn || die "mvn not found: it fetches the Kafka jars. Run: bash deploy/local/bootstrap.sh"
    say "fetching Kafka $(kafka_version) jars with Maven (first run only)…"
    rm -rf "$libs.tmp"
    # Into a temp folder, then swapped in: a half-done fetch or jars of two versions in
    # one classpath would give baffling broker errors.
    if ! mvn -q -B -f "$SCRIPT_DIR/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$LOG_DIR/maven.log" 2>&1; then
        die "Maven could not fetch the Kafka jars; see $LOG_DIR/maven.log"
    fi
    rm -rf "$libs"
    mv "$libs.tmp" "$libs"
    echo "$want" >"$marker"
    say "Kafka jars ready ($(find "$libs" -name '*.jar' | wc -l) jars)"
}

start_kafka() {
    local dir=$STACK_DIR/kafka props data cp
    props=$dir/server.properties
    data=$dir/data
    cp="$dir/libs/*"
    mkdir -p "$data"
    render "$SCRIPT_DIR/kafka-server.properties.tmpl" "$props" \
        KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" KAFKA_DATA_DIR="$data"

    # `format --standalone` writes the controller's endpoint into the metadata log, so
    # storage formatted for another controller port cannot be reused: start afresh
    # (it is test data).
    local fmt_key="controller=$KAFKA_CONTROLLER_PORT"
    if [[ -f $data/meta.properties && "$(cat "$dir/formatted-for" 2>/dev/null)" != "$fmt_key" ]]; then
        say "controller port changed; wiping $data and reformatting"
        rm -rf "$data"
        mkdir -p "$data"
    fi
    if [[ ! -f $data/meta.properties ]]; then
        [[ -s $dir/cluster.id ]] ||
            java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null >"$dir/cluster.id"
        [[ -s $dir/cluster.id ]] || die "kafka.tools.StorageTool random-uuid failed (java -cp '$cp' ...)"
        if ! java -cp "$cp" kafka.tools.StorageTool format -t "$(<"$dir/cluster.id")" -c "$props" \
            --standalone --ignore-formatted >"$LOG_DIR/kafka-format.log" 2>&1; then
            die "formatting Kafka storage failed; see $LOG_DIR/kafka-format.log"
        fi
        echo "$fmt_key" >"$dir/formatted-for"
    fi

    say "starting kafka on 127.0.0.1:$KAFKA_PORT"
    start_bg kafka java "-Xmx$KAFKA_HEAP" -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS" \
        -cp "$cp" kafka.Kafka "$props"
}

# --------------------------------------------------------------------------- s3 (versitygw)

ensure_versitygw() {
    local bin=$STACK_DIR/bin/versitygw marker=$STACK_DIR/bin/versitygw.version
    if [[ -x $bin && -f $marker && $(<"$marker") == "$VERSITYGW_VERSION" ]]; then
        return 0
    fi
    have go || die "go not found: it builds the versitygw S3 server. Install Go >= 1.21 (see deploy/local/bootstrap.sh)."
    say "building versitygw $VERSITYGW_VERSION with go install (first run only, ~1-2 min)…"
    mkdir -p "$STACK_DIR/bin"
    # versitygw's go.mod asks for a newer Go than some machines have; GOTOOLCHAIN=auto
    # (the default unless overridden) lets go fetch that toolchain itself.
    if ! GOBIN="$STACK_DIR/bin" GOFLAGS=-buildvcs=false go install "$VERSITYGW_MODULE@$VERSITYGW_VERSION" \
        >"$LOG_DIR/go-install.log" 2>&1; then
        die "go install $VERSITYGW_MODULE@$VERSITYGW_VERSION failed; see $LOG_DIR/go-install.log"
    fi
    echo "$VERSITYGW_VERSION" >"$marker"
}

start_s3() {
    local root=$STACK_DIR/s3data extra=()
    mkdir -p "$root"
    # versitygw keeps object metadata (ETag, content type, user metadata) in extended
    # attributes; on filesystems without user xattrs (some overlay/tmpfs setups) it
    # needs a sidecar folder instead.
    if ! "$PYTHON" - "$root" <<'EOF' 2>/dev/null; then
import os, sys, tempfile
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as f:
    os.setxattr(f.name, "user.freshrec.probe", b"1")
EOF
        say "no user xattr support under $root; using a versitygw sidecar folder"
        mkdir -p "$STACK_DIR/s3meta"
        extra=(--sidecar "$STACK_DIR/s3meta")
    fi
    say "starting s3 (versitygw) on 127.0.0.1:$S3_PORT"
    # --quiet: no per-request access log (tests make thousands of requests).
    start_bg s3 env ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
        "$STACK_DIR/bin/versitygw" --port "127.0.0.1:$S3_PORT" --region "$S3_REGION" --quiet \
        posix "${extra[@]}" "$root"
}

# --------------------------------------------------------------------------- prometheus

ensure_prometheus() {
    if have prometheus && have promtool; then return 0; fi
    say "installing Debian's prometheus package (first run only)…"
    apt_install prometheus
    have prometheus || die "prometheus still not on PATH after apt-get install prometheus"
}

start_prometheus() {
    local dir=$STACK_DIR/prometheus cfg out
    cfg=$dir/prometheus.yml
    mkdir -p "$dir/data" "$dir/targets"
    render "$SCRIPT_DIR/prometheus.yml.tmpl" "$cfg" \
        RULES_DIR="$REPO_ROOT/deploy/prometheus/rules" TARGETS_DIR="$dir/targets" \
        PROMETHEUS_PORT="$PROMETHEUS_PORT"
    # Prometheus refuses to start on a bad config or a bad rule file; say which, here,
    # rather than as a dead process and a log to dig through.
    if ! out=$(promtool check config "$cfg" 2>&1); then
        die "Prometheus config or rules do not pass 'promtool check config $cfg':
$out"
    fi
    say "starting prometheus on 127.0.0.1:$PROMETHEUS_PORT"
    # --web.enable-lifecycle: lets `curl -X POST .../-/reload` pick up new rule files.
    start_bg prometheus prometheus --config.file="$cfg" --storage.tsdb.path="$dir/data" \
        --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        --web.enable-lifecycle
}

# Prometheus reads rule files only at start and on reload. A warm `up` reloads, so rules
# added to deploy/prometheus/rules/ since the start are picked up; bad rules are reported
# and the running config is kept (Prometheus refuses a reload it cannot apply).
reload_prometheus() {
    local cfg=$STACK_DIR/prometheus/prometheus.yml out
    if ! out=$(promtool check config "$cfg" 2>&1); then
        say "WARNING: not reloading Prometheus, 'promtool check config $cfg' fails:"
        printf '%s\n' "$out" >&2
        return 1
    fi
    if ! "$PYTHON" - "http://127.0.0.1:$PROMETHEUS_PORT/-/reload" 2>/dev/null <<'EOF'; then
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST"), timeout=10)
EOF
        say "WARNING: Prometheus did not accept the reload; see $(log_file prometheus)"
        return 1
    fi
}

# --------------------------------------------------------------------------- commands

probe() { # probe TIMEOUT [--quiet] SERVICE...
    local timeout=$1 svc args=()
    shift
    if [[ ${1:-} == --quiet ]]; then
        args+=(--quiet)
        shift
    fi
    for svc in "$@"; do
        local pid
        pid=$(running_pid "$svc" || true)
        case $svc in
            kafka) args+=(--kafka "127.0.0.1:$KAFKA_PORT") ;;
            s3) args+=(--s3 "http://127.0.0.1:$S3_PORT" --s3-access-key "$S3_ACCESS_KEY"
                --s3-secret-key "$S3_SECRET_KEY" --s3-region "$S3_REGION" --s3-bucket "$S3_BUCKET") ;;
            prometheus) args+=(--prometheus "http://127.0.0.1:$PROMETHEUS_PORT") ;;
        esac
        args+=("--$svc-log" "$(log_file "$svc")")
        [[ -n $pid ]] && args+=("--$svc-pid" "$pid")
    done
    "$PYTHON" "$SCRIPT_DIR/probe.py" --timeout "$timeout" "${args[@]}"
}

cmd_up() {
    local t0=$SECONDS svc to_start=()
    take_lock
    load_recorded_ports up
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    for svc in "${SERVICES[@]}"; do
        running_pid "$svc" >/dev/null || to_start+=("$svc")
    done

    if ((${#to_start[@]} == 0)); then
        # Warm path: all processes are there; one quick real request each.
        probe 15 --quiet "${SERVICES[@]}" ||
            die "a running service does not answer (details above). Restart the stack: deploy/local/stack.sh down && deploy/local/stack.sh up"
        reload_prometheus || true
        say "already up ($(endpoint_of kafka), $(endpoint_of s3), $(endpoint_of prometheus)); logs in $LOG_DIR"
        return 0
    fi

    # Fail now rather than after minutes of downloads: the readiness probes need these.
    "$PYTHON" -c 'import confluent_kafka, boto3' 2>/dev/null ||
        die "Python packages confluent-kafka and boto3 are needed for the readiness checks. Run: bash deploy/local/bootstrap.sh"

    # Orphans (ours, pid file lost) would hold the ports: clear them first.
    for svc in "${to_start[@]}"; do
        local o
        for o in $(orphan_pids "$svc"); do stop_pid "$svc" "$o"; done
    done

    # Check every port before starting anything, so a conflict leaves nothing half-started.
    for svc in "${to_start[@]}"; do
        require_port_free "$(port_of "$svc")" "$svc"
        if [[ $svc == kafka ]]; then require_port_free "$KAFKA_CONTROLLER_PORT" "the Kafka controller"; fi
    done

    # Downloads/builds first (slow only on the first run), then starts.
    for svc in "${to_start[@]}"; do
        case $svc in
            kafka) ensure_kafka_jars ;;
            s3) ensure_versitygw ;;
            prometheus) ensure_prometheus ;;
        esac
    done
    write_env_file
    for svc in "${to_start[@]}"; do "start_$svc"; done

    say "waiting for ${to_start[*]} to answer (deadline ${READY_TIMEOUT}s)…"
    if ! probe "$READY_TIMEOUT" "${SERVICES[@]}"; then
        die "the stack did not come up (details above). Logs: $LOG_DIR. Stop leftovers with: deploy/local/stack.sh down"
    fi
    say "up in $((SECONDS - t0))s. Logs: $LOG_DIR/<service>.log"
    print_status >&2 || true
}

cmd_down() {
    take_lock
    load_recorded_ports down
    local svc pid busy=()
    for svc in "${SERVICES[@]}"; do
        if pid=$(running_pid "$svc"); then
            stop_pid "$svc" "$pid"
        fi
        for pid in $(orphan_pids "$svc"); do stop_pid "$svc" "$pid"; done
        rm -f "$(pid_file "$svc")"
    done
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$S3_PORT" "$PROMETHEUS_PORT"; do
        port_open "$port" && busy+=("$port")
    done
    if ((${#busy[@]})); then
        die "stopped our services, but ports ${busy[*]} are still in use by:
$(for p in "${busy[@]}"; do port_holder "$p"; done)"
    fi
    say "down (ports $KAFKA_PORT $KAFKA_CONTROLLER_PORT $S3_PORT $PROMETHEUS_PORT free). State kept in $STACK_DIR"
}

print_status() {
    local svc pid state all_up=0 extra
    for svc in "${SERVICES[@]}"; do
        extra=""
        if pid=$(running_pid "$svc"); then
            if port_open "$(port_of "$svc")"; then state=up; else state=starting all_up=1; fi
            extra="pid $pid"
        else
            all_up=1
            state=down
            port_open "$(port_of "$svc")" && extra="port $(port_of "$svc") taken by another process"
        fi
        [[ $svc == s3 ]] && extra+="${extra:+, }bucket $S3_BUCKET, keys $S3_ACCESS_KEY/$S3_SECRET_KEY"
        printf '%-11s %-9s %-24s %s\n' "$svc" "$state" "$(endpoint_of "$svc")" "${extra:+($extra)}"
    done
    printf 'logs: %s/<service>.log   state: %s\n' "$LOG_DIR" "$STACK_DIR"
    return "$all_up"
}

cmd_status() {
    load_recorded_ports status
    print_status || exit 3
}

cmd_logs() {
    local svc="" follow=() arg
    for arg in "$@"; do
        case $arg in
            -f) follow=(-f) ;;
            *) svc=$arg ;;
        esac
    done
    if [[ -z $svc ]]; then
        for svc in "${SERVICES[@]}"; do
            printf '==> %s <==\n' "$(log_file "$svc")"
            tail -n 20 "$(log_file "$svc")" 2>/dev/null || echo "(no log yet)"
        done
        return 0
    fi
    [[ " ${SERVICES[*]} " == *" $svc "* ]] || die "unknown service '$svc' (one of: ${SERVICES[*]})"
    [[ -f $(log_file "$svc") ]] || die "no log yet at $(log_file "$svc"); has 'up' been run?"
    echo "==> $(log_file "$svc") <==" >&2
    tail -n 200 "${follow[@]}" "$(log_file "$svc")"
}

cmd_reload() {
    load_recorded_ports reload
    running_pid prometheus >/dev/null || die "prometheus is not running; run: deploy/local/stack.sh up"
    reload_prometheus && say "prometheus reloaded (config and rule files)"
}

cmd_env() {
    [[ -f $ENV_FILE ]] || die "no $ENV_FILE yet; run: deploy/local/stack.sh up"
    grep -v '^#' "$ENV_FILE"
}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        logs) cmd_logs "$@" ;;
        env) cmd_env ;;
        reload) cmd_reload ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
