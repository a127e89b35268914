# Shared by scripts/bench-vs-etcd, bench-availability and bench-features (sourced, not run): logging,
# the work directory, stopping every server a script started, the tools a run needs, the
# release build, the Go probes (etcd's own client), etcd members, and one `synod bench` run.
# The sourcing script sets ROOT, OUT, REPLICAS, ETCD_CLIENT_PORT_BASE, ETCD_PEER_PORT_BASE and
# (for start_synod) SYNOD_BASE_PORT first.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

WORK=$(mktemp -d "/tmp/synod-$(basename "$0").XXXXXX")
PIDS=()   # every server process this script started (each in its own session)

# Whether a process of the session (setsid: session = process group = leader's pid) still runs
# (an unreaped leader is a zombie, which does not count).
session_alive() { ps -o stat= --sid "$1" 2>/dev/null | grep -qv '^Z'; }
# SIGINT to each server's process group (graceful), SIGKILL after 5 s.
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do session_alive "$pid" || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
# Results not moved into place by the end of the run (interrupted, failed) are dropped.
cleanup() { stop_all; rm -f "$OUT.tmp"; if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
    log "installing etcd-server and etcd-client (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
}
command -v go >/dev/null && [[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ]] || {
    log "installing golang-go and golang-etcd-server-dev (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-etcd-server-dev >/dev/null
}
if [[ -z "${SYNOD_BIN:-}" ]]; then
    log "building synod (release)"
    (cd "$ROOT" && swift build -c release --product synod >"$WORK/build.log" 2>&1) \
        || { tail -30 "$WORK/build.log" >&2; die "release build failed"; }
    SYNOD_BIN=$ROOT/.build/release/synod
fi
[[ -x "$SYNOD_BIN" ]] || die "no synod binary at $SYNOD_BIN"

# build_probe NAME → path of scripts/NAME built with etcd's clientv3 (GOPATH mode).
build_probe() {
    (cd "$ROOT/scripts/$1" && GO111MODULE=off GOPATH=$WORK/gopath:/usr/share/gocode go build -o "$WORK/$1" .) \
        || die "could not build scripts/$1"
    echo "$WORK/$1"
}

: >"$OUT.tmp"
record() { printf '%s\n' "$1" >>"$OUT.tmp"; }
record_load() {   # before | after
    log "load $1: $(uptime)"
    record "{\"kind\":\"load\",\"when\":\"$1\",\"uptime\":\"$(uptime | sed 's/.*load average: //')\"}"
}

etcd_endpoint() { echo "127.0.0.1:$((ETCD_CLIENT_PORT_BASE + 2 * ($1 - 1)))"; }
declare -A SERVER_PID=()   # "<system>-<i>" → pid

# Member i of a $REPLICAS-member etcd cluster in dir, as its own process. With TLS_DIR set (the
# certificates `synod cluster --tls` makes), TLS with client certificates on both planes.
start_etcd_member() {
    local i=$1 dir=$2 cluster="" j scheme=http tls=()
    if [[ -n "${TLS_DIR:-}" ]]; then
        scheme=https
        tls=(--cert-file "$TLS_DIR/r$i.crt" --key-file "$TLS_DIR/r$i.key" --trusted-ca-file "$TLS_DIR/ca.crt" --client-cert-auth
            --peer-cert-file "$TLS_DIR/r$i-peer.crt" --peer-key-file "$TLS_DIR/r$i-peer.key"
            --peer-trusted-ca-file "$TLS_DIR/ca.crt" --peer-client-cert-auth)
    fi
    for ((j = 1; j <= REPLICAS; j++)); do
        cluster+="${cluster:+,}e$j=$scheme://127.0.0.1:$((ETCD_PEER_PORT_BASE + 2 * (j - 1)))"
    done
    local client_url=$scheme://$(etcd_endpoint "$i") peer_url=$scheme://127.0.0.1:$((ETCD_PEER_PORT_BASE + 2 * (i - 1)))
    setsid etcd --name "e$i" --data-dir "$dir/e$i" \
        --listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
        --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" --log-level warn "${tls[@]}" >>"$dir/e$i.log" 2>&1 </dev/null &
    SERVER_PID[etcd-$i]=$!
    PIDS+=($!)
}

# The flags of a client of the cluster whose certificates are in TLS_DIR (none without TLS_DIR).
client_tls_flags() {
    [[ -z "${TLS_DIR:-}" ]] || echo "--cacert $TLS_DIR/ca.crt --cert $TLS_DIR/client.crt --key $TLS_DIR/client.key"
}

wait_writable() {   # endpoints dir
    local deadline=$((SECONDS + 60)) pid
    # shellcheck disable=SC2046
    until "$SYNOD_BIN" put --endpoints "$1" --timeout 2s --retries 2 $(client_tls_flags) bench-ready 1 >/dev/null 2>&1; do
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { tail -n 5 "$2"/*.log >&2; die "a server of the cluster at $1 exited"; }
        done
        ((SECONDS < deadline)) || { tail -n 5 "$2"/*.log >&2; die "cluster at $1 not writable after 60 s"; }
        sleep 0.3
    done
}

ENDPOINTS=""   # of the cluster started last
TLS_DIR=""     # its certificates, when it runs TLS

# A Synod cluster through `synod cluster` (extra flags: --tls), with a binary (default SYNOD_BIN).
start_synod() {   # dir binary [cluster flags]
    local dir=$1 binary=$2 line="" deadline=$((SECONDS + 60))
    shift 2
    mkdir -p "$dir"
    setsid "$binary" cluster --replicas "$REPLICAS" --data-dir "$dir/data" --base-port "$SYNOD_BASE_PORT" "$@" \
        >"$dir/cluster.log" 2>&1 </dev/null &
    PIDS+=($!)
    while ((SECONDS < deadline)); do
        line=$(grep -m1 -o 'endpoints: *[0-9.:,]*' "$dir/cluster.log" || true)
        [[ -n "$line" ]] && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -20 "$dir/cluster.log" >&2; die "synod cluster exited"; }
        sleep 0.2
    done
    [[ -n "$line" ]] || die "synod cluster printed no endpoints line in 60 s"
    ENDPOINTS=$(sed 's/endpoints: *//' <<<"$line")
    TLS_DIR=""
    if [[ " $* " == *" --tls "* ]]; then TLS_DIR=$dir/data/tls; fi
    wait_writable "$ENDPOINTS" "$dir"
}
start_etcd() {   # dir [tls-dir]
    local dir=$1 i
    TLS_DIR=${2:-}
    mkdir -p "$dir"
    ENDPOINTS=""
    for ((i = 1; i <= REPLICAS; i++)); do
        start_etcd_member "$i" "$dir"
        ENDPOINTS+="${ENDPOINTS:+,}$(etcd_endpoint "$i")"
    done
    wait_writable "$ENDPOINTS" "$dir"
}
start_system() {   # system dir [tls-dir for etcd / cluster flags for synod]
    local system=$1 dir=$2
    shift 2
    if [[ $system == synod ]]; then start_synod "$dir" "$SYNOD_BIN" "$@"; else start_etcd "$dir" "$@"; fi
}
# The systems in the order of repetition rep (alternating).
systems_for() { if (($1 % 2 == 1)); then echo "synod etcd"; else echo "etcd synod"; fi; }
bench() {   # endpoints concurrency duration [more synod bench flags] → JSON line
    local endpoints=$1 concurrency=$2 duration=$3
    shift 3
    # shellcheck disable=SC2046
    "$SYNOD_BIN" bench --endpoints "$endpoints" --workload put --concurrency "$concurrency" \
        --connections "$(( concurrency < 16 ? concurrency : 16 ))" --duration "$duration" --warmup 2s --timeout 5s \
        --json $(client_tls_flags) "$@" 2>"$WORK/bench.err" || { log "bench failed: $(tail -1 "$WORK/bench.err")"; echo '{}'; }
}
