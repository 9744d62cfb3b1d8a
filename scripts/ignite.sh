#!/usr/bin/env bash
# Local Apache Ignite 2.x clusters for kfcache's tests and benchmarks.
#
#   scripts/ignite.sh setup
#   scripts/ignite.sh start N [--name CLUSTER] [--base-port 10800] [--discovery-port P]
#                             [--comm-port P] [--region-mb 256] [--heap 512m] [--timeout 180]
#                             [--secure]
#   scripts/ignite.sh stop [CLUSTER]          (no CLUSTER: every cluster this script started)
#   scripts/ignite.sh stop-node CLUSTER INDEX
#   scripts/ignite.sh kill-node CLUSTER INDEX     (SIGKILL, no grace: a node that crashes)
#   scripts/ignite.sh start-node CLUSTER INDEX
#   scripts/ignite.sh restart-node CLUSTER INDEX
#   scripts/ignite.sh status
#   scripts/ignite.sh healthy CLUSTER         (exit 0 if every node runs and answers a handshake)
#   scripts/ignite.sh addrs CLUSTER           (prints host:port,host:port,...)
#
# Nodes are plain JVMs running scripts/ignite/KfcacheNode.java against the ignite-core jars that
# `setup` fetches with Maven into .cache/ignite (once; later runs reuse them). Everything listens
# on 127.0.0.1. Per-cluster state (pids, logs, ready markers, work dirs) lives in
# .cache/ignite/state/CLUSTER. Ports default from --base-port so that two clusters never clash:
# offset = base-port - 10800, discovery = 27500 + 10*offset (range of 10), communication =
# 27100 + offset + index, client = base-port + index. All of them lie below the kernel's
# ephemeral range (32768..60999): a node restarted on a busy machine once found its
# communication port held by another process's outgoing connection and could not bind it
# (Ignite's own defaults, 47100 and 47500, lie inside that range).
#
# --secure: the thin-client ports use TLS (a throw-away CA and node certificate for 127.0.0.1
# are made with keytool once and reused for 20 days; the CA is .cache/ignite/tls/ca.pem) and
# authentication is on with Ignite's default user ignite/ignite. Ignite 2.x authenticates only
# with native persistence, so such a cluster keeps its data region on disk in its state dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${KFCACHE_IGNITE_CACHE:-$ROOT/.cache/ignite}"
LIB_DIR="$CACHE_DIR/lib"
CLASS_DIR="$CACHE_DIR/classes"
STATE_ROOT="$CACHE_DIR/state"
POM="$ROOT/scripts/ignite/pom.xml"
NODE_SRC="$ROOT/scripts/ignite/KfcacheNode.java"
PROBE="$ROOT/scripts/lib/ignite_probe.py"

log() { echo "ignite.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Flags Ignite 2.x needs on Java 17 (the list Ignite's own bin/include/jvmdefaults.sh passes).
JAVA17_OPENS=(
  --add-opens=java.base/jdk.internal.access=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/sun.util.calendar=ALL-UNNAMED
  --add-opens=java.management/com.sun.jmx.mbeanserver=ALL-UNNAMED
  --add-opens=jdk.internal.jvmstat/sun.jvmstat.monitor=ALL-UNNAMED
  --add-opens=java.base/sun.reflect.generics.reflectiveObjects=ALL-UNNAMED
  --add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.lang.invoke=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.math=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.sql/java.sql=ALL-UNNAMED
)

# --- setup -------------------------------------------------------------------------------------

setup() {
  command -v java >/dev/null || die "java not found (Java 17 is required)"
  local stamp="$LIB_DIR/.pom.sha256" want
  want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Ignite jars)"
    log "fetching Ignite jars into $LIB_DIR"
    rm -rf "$LIB_DIR"
    mkdir -p "$LIB_DIR"
    mvn -q -B -f "$POM" -Dmaven.repo.local="$CACHE_DIR/m2" \
      dependency:copy-dependencies -DoutputDirectory="$LIB_DIR" >&2 \
      || die "mvn dependency:copy-dependencies failed"
    echo "$want" >"$stamp"
  fi
  if [[ ! -f "$CLASS_DIR/KfcacheNode.class" || "$NODE_SRC" -nt "$CLASS_DIR/KfcacheNode.class" \
        || "$stamp" -nt "$CLASS_DIR/KfcacheNode.class" ]]; then
    log "compiling KfcacheNode.java"
    mkdir -p "$CLASS_DIR"
    javac -nowarn -d "$CLASS_DIR" -cp "$LIB_DIR/*" "$NODE_SRC" >&2 || die "javac failed"
  fi
}

# --- process helpers ---------------------------------------------------------------------------

# True if PID is alive and is a node of CLUSTER (guards against reused pids).
is_our_node() {
  local pid="$1" cluster="$2"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-Dkfcache.cluster=$cluster " || return 1
}

node_pid() { cat "$STATE_ROOT/$1/node-$2.pid" 2>/dev/null || true; }

stop_pid() {
  local pid="$1" cluster="$2" grace="${3:-20}"
  is_our_node "$pid" "$cluster" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while is_our_node "$pid" "$cluster"; do
    if ((waited >= grace * 10)); then
      log "node pid $pid of $cluster ignored TERM for ${grace}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

load_cluster() {
  local cluster="$1"
  [[ -f "$STATE_ROOT/$cluster/cluster.env" ]] || die "no cluster named '$cluster' (see: status)"
  # shellcheck disable=SC1090
  source "$STATE_ROOT/$cluster/cluster.env"
}

# Arguments for ignite_probe.py matching the cluster's security settings.
probe_args() {
  if [[ "${SECURE:-0}" == 1 ]]; then
    echo "--ca $CACHE_DIR/tls/ca.pem --user ignite --password ignite"
  fi
}

make_certificates() {
  local tls="$1" pass=kfcache-test
  # Reuse recent certificates: keytool is a JVM per call, slow on a busy machine.
  if [[ -f "$tls/node.p12" && -f "$tls/ca.pem" ]] \
      && [[ -z "$(find "$tls/ca.pem" -mtime +20 2>/dev/null)" ]]; then
    return 0
  fi
  rm -rf "$tls"
  mkdir -p "$tls"
  (
    cd "$tls"
    keytool -genkeypair -alias ca -keyalg RSA -keysize 2048 -dname "CN=kfcache test CA" \
      -ext bc:c -validity 30 -storetype PKCS12 -keystore ca.p12 -storepass "$pass"
    keytool -exportcert -rfc -alias ca -keystore ca.p12 -storepass "$pass" -file ca.pem
    keytool -genkeypair -alias node -keyalg RSA -keysize 2048 -dname "CN=127.0.0.1" \
      -validity 30 -storetype PKCS12 -keystore node.p12 -storepass "$pass"
    keytool -certreq -alias node -keystore node.p12 -storepass "$pass" -file node.csr
    keytool -gencert -alias ca -keystore ca.p12 -storepass "$pass" -infile node.csr \
      -outfile node.pem -rfc -validity 30 -ext SAN=ip:127.0.0.1,dns:localhost \
      -ext KU=digitalSignature,keyEncipherment -ext EKU=serverAuth
    keytool -importcert -noprompt -alias ca -file ca.pem -keystore node.p12 -storepass "$pass"
    keytool -importcert -alias node -file node.pem -keystore node.p12 -storepass "$pass"
  ) >"$tls/keytool.log" 2>&1 || { cat "$tls/keytool.log" >&2; die "keytool failed"; }
}

# Fingerprint of everything that shapes a node (the jars, the node's code, the JVM flags and
# how a node is launched); a running cluster with another fingerprint was started by an older
# version of these scripts and is not reused. Usage text and commands are left out, so that
# adding a command does not make every running cluster stale.
config_stamp() {
  { cat "$POM" "$NODE_SRC"; printf '%s\n' "${JAVA17_OPENS[@]}"; declare -f launch_node; } \
    | sha256sum | cut -c1-16
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

launch_node() {
  local cluster="$1" index="$2" dir="$STATE_ROOT/$1"
  local client_port=$((BASE_PORT + index)) comm_port=$((COMM_PORT + index))
  port_in_use "$client_port" && die "127.0.0.1:$client_port is already in use (not by $cluster)"
  rm -f "$dir/node-$index.ready" "$dir/node-$index.ready.tmp"
  # A secure cluster keeps its persistent data across node restarts.
  [[ "${SECURE:-0}" == 1 ]] || rm -rf "$dir/work-$index"
  mkdir -p "$dir/work-$index"
  local secure_props=()
  if [[ "${SECURE:-0}" == 1 ]]; then
    secure_props=(-Dkfcache.secure=true -Dkfcache.keyStore="$CACHE_DIR/tls/node.p12"
      -Dkfcache.keyStorePassword=kfcache-test)
  fi
  # The node runs in its work directory with IGNITE_HOME there too, so that nothing Ignite
  # writes by default (diagnostic dumps, README) lands in the caller's directory.
  # KFCACHE_IGNITE_JVM_OPTS adds JVM options. Direct memory holds the client connector's
  # 4 MiB socket buffers, up to 8 MiB per thin-client connection: 1 GiB serves the 64
  # concurrent sidecars of the load test (256 MiB did not: the connector threads died).
  # shellcheck disable=SC2086
  (cd "$dir/work-$index" && exec nohup java -server -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC \
    -XX:MaxDirectMemorySize=1g ${KFCACHE_IGNITE_JVM_OPTS:-} \
    -Djava.net.preferIPv4Stack=true \
    -DIGNITE_QUIET=true -DIGNITE_UPDATE_NOTIFIER=false -DIGNITE_NO_ASCII=true \
    -DIGNITE_PERFORMANCE_SUGGESTIONS_DISABLED=true \
    "${JAVA17_OPENS[@]}" \
    -Dkfcache.cluster="$cluster" -Dkfcache.index="$index" -Dkfcache.servers="$SERVERS" \
    -Dkfcache.discoveryPort="$DISCOVERY_PORT" -Dkfcache.commPort="$comm_port" \
    -Dkfcache.clientPort="$client_port" -Dkfcache.regionMb="$REGION_MB" \
    -Dkfcache.workDir="$dir/work-$index" -Dkfcache.readyFile="$dir/node-$index.ready" \
    -DIGNITE_HOME="$dir/work-$index" "${secure_props[@]}" \
    -cp "$CLASS_DIR:$LIB_DIR/*" KfcacheNode \
    </dev/null >>"$dir/node-$index.log" 2>&1) &
  echo $! >"$dir/node-$index.pid"
}

# Waits until the given nodes wrote their ready markers and answer a thin-client handshake.
wait_ready() {
  local cluster="$1"; shift
  local dir="$STATE_ROOT/$cluster" deadline=$((SECONDS + TIMEOUT)) launched=$SECONDS index pid
  local addrs=() relaunched=()
  for index in "$@"; do
    while [[ ! -f "$dir/node-$index.ready" ]]; do
      pid="$(node_pid "$cluster" "$index")"
      # Just launched, the pid may still be the subshell that is about to exec java (slow on
      # a loaded machine): alive, but without the node's command line yet.
      if ! is_our_node "$pid" "$cluster" && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && ((SECONDS - launched < 15)); then
        sleep 0.2
        continue
      fi
      if ! is_our_node "$pid" "$cluster"; then
        log "node $cluster-$index (pid $pid) exited before it was ready; last log lines:"
        tail -n 40 "$dir/node-$index.log" >&2 || true
        # Once, a node that died while starting (on a machine busy fetching and installing
        # the other services) gets one more launch; a node that fails twice fails the start.
        if [[ -z "${relaunched[$index]:-}" ]]; then
          relaunched[$index]=1
          log "starting node $cluster-$index once more"
          launch_node "$cluster" "$index"
          launched=$SECONDS deadline=$((SECONDS + TIMEOUT))
          continue
        fi
        return 1
      fi
      if ((SECONDS >= deadline)); then
        log "node $cluster-$index not ready after ${TIMEOUT}s; last log lines:"
        tail -n 40 "$dir/node-$index.log" >&2 || true
        return 1
      fi
      sleep 0.2
    done
    addrs+=("127.0.0.1:$((BASE_PORT + index))")
  done
  # shellcheck disable=SC2046
  until python3 "$PROBE" "${addrs[@]}" $(probe_args "$cluster") >"$dir/probe.out" 2>&1; do
    if ((SECONDS >= deadline)); then
      log "thin-client handshake failed after ${TIMEOUT}s:"
      cat "$dir/probe.out" >&2
      return 1
    fi
    sleep 0.2
  done
}

# --- commands ----------------------------------------------------------------------------------

cmd_start() {
  local servers="${1:-}"; shift || true
  [[ "$servers" =~ ^[1-9][0-9]*$ ]] || die "usage: start N [--name CLUSTER] [--base-port P] ..."
  ((servers <= 10)) || die "at most 10 nodes per cluster (discovery range is 10 ports)"
  local cluster="" base_port=10800 discovery_port="" comm_port="" region_mb=256 heap=512m
  local timeout=180 secure=0
  while (($#)); do
    case "$1" in
      --secure) secure=1; shift ;;
      --name) cluster="$2"; shift 2 ;;
      --base-port) base_port="$2"; shift 2 ;;
      --discovery-port) discovery_port="$2"; shift 2 ;;
      --comm-port) comm_port="$2"; shift 2 ;;
      --region-mb) region_mb="$2"; shift 2 ;;
      --heap) heap="$2"; shift 2 ;;
      --timeout) timeout="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  local offset=$((base_port - 10800))
  ((offset >= 0 && offset < 100)) || [[ -n "$discovery_port" && -n "$comm_port" ]] \
    || die "--base-port outside 10800..10899 needs --discovery-port and --comm-port"
  cluster="${cluster:-ignite-$base_port}"
  [[ "$cluster" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name '$cluster'"
  discovery_port="${discovery_port:-$((27500 + 10 * offset))}"
  comm_port="${comm_port:-$((27100 + offset))}"

  setup
  local dir="$STATE_ROOT/$cluster"
  if [[ -d "$dir" ]]; then
    log "stopping leftovers of cluster $cluster"
    cmd_stop "$cluster"
  fi
  mkdir -p "$dir"
  cat >"$dir/cluster.env" <<EOF
SERVERS=$servers
BASE_PORT=$base_port
DISCOVERY_PORT=$discovery_port
COMM_PORT=$comm_port
REGION_MB=$region_mb
HEAP=$heap
TIMEOUT=$timeout
SECURE=$secure
STAMP=$(config_stamp)
EOF
  load_cluster "$cluster"
  if ((secure)); then
    rm -rf "$dir"/work-*
    make_certificates "$CACHE_DIR/tls"
  fi
  log "starting $cluster: $servers node(s), client ports $base_port..$((base_port + servers - 1)), discovery $discovery_port..$((discovery_port + 9))"
  local index started=$SECONDS
  for ((index = 0; index < servers; index++)); do
    launch_node "$cluster" "$index"
  done
  if ! wait_ready "$cluster" $(seq 0 $((servers - 1))); then
    cmd_stop "$cluster"
    die "cluster $cluster failed to start (logs kept in $dir)"
  fi
  log "cluster $cluster ready in $((SECONDS - started))s: $(cmd_addrs "$cluster")"
}

cmd_stop() {
  local clusters=()
  if (($#)); then
    clusters=("$1")
  elif [[ -d "$STATE_ROOT" ]]; then
    mapfile -t clusters < <(find "$STATE_ROOT" -mindepth 1 -maxdepth 1 -type d -printf '%f\n')
  fi
  local cluster pidfile pid
  for cluster in "${clusters[@]}"; do
    [[ -d "$STATE_ROOT/$cluster" ]] || continue
    # TERM every node first so they shut down in parallel, then wait for each.
    for pidfile in "$STATE_ROOT/$cluster"/node-*.pid; do
      [[ -f "$pidfile" ]] || continue
      pid="$(cat "$pidfile")"
      is_our_node "$pid" "$cluster" && kill -TERM "$pid" 2>/dev/null || true
    done
    for pidfile in "$STATE_ROOT/$cluster"/node-*.pid; do
      [[ -f "$pidfile" ]] || continue
      stop_pid "$(cat "$pidfile")" "$cluster"
      rm -f "$pidfile"
    done
    rm -rf "$STATE_ROOT/$cluster"/work-* "$STATE_ROOT/$cluster"/node-*.ready
    log "stopped $cluster"
  done
}

cmd_stop_node() {
  local cluster="$1" index="$2"
  load_cluster "$cluster"
  stop_pid "$(node_pid "$cluster" "$index")" "$cluster"
  rm -f "$STATE_ROOT/$cluster/node-$index.pid" "$STATE_ROOT/$cluster/node-$index.ready"
  log "stopped node $cluster-$index"
}

# SIGKILL: the node gets no chance to leave the topology; the others notice through discovery.
cmd_kill_node() {
  local cluster="$1" index="$2" pid waited=0
  load_cluster "$cluster"
  pid="$(node_pid "$cluster" "$index")"
  if is_our_node "$pid" "$cluster"; then
    kill -KILL "$pid" 2>/dev/null || true
    while is_our_node "$pid" "$cluster"; do
      ((waited < 100)) || die "node $cluster-$index (pid $pid) survived SIGKILL for 10s"
      sleep 0.1
      waited=$((waited + 1))
    done
    log "killed node $cluster-$index (pid $pid)"
  else
    log "node $cluster-$index is not running"
  fi
  rm -f "$STATE_ROOT/$cluster/node-$index.pid" "$STATE_ROOT/$cluster/node-$index.ready"
}

cmd_start_node() {
  local cluster="$1" index="$2"
  load_cluster "$cluster"
  setup
  is_our_node "$(node_pid "$cluster" "$index")" "$cluster" && die "node $cluster-$index is running"
  launch_node "$cluster" "$index"
  wait_ready "$cluster" "$index" || die "node $cluster-$index failed to start"
  log "started node $cluster-$index"
}

cmd_addrs() {
  local cluster="$1" index out=()
  load_cluster "$cluster"
  for ((index = 0; index < SERVERS; index++)); do
    out+=("127.0.0.1:$((BASE_PORT + index))")
  done
  (IFS=,; echo "${out[*]}")
}

cmd_healthy() {
  local cluster="$1" index addrs=()
  [[ -f "$STATE_ROOT/$cluster/cluster.env" ]] || return 1
  load_cluster "$cluster"
  [[ "${STAMP:-}" == "$(config_stamp)" ]] || return 1
  for ((index = 0; index < SERVERS; index++)); do
    is_our_node "$(node_pid "$cluster" "$index")" "$cluster" || return 1
    addrs+=("127.0.0.1:$((BASE_PORT + index))")
  done
  # shellcheck disable=SC2046
  python3 "$PROBE" "${addrs[@]}" $(probe_args "$cluster") >/dev/null 2>&1
}

cmd_status() {
  [[ -d "$STATE_ROOT" ]] || { echo "no clusters"; return 0; }
  local cluster index pid state rc=0 any=0
  for cluster in $(find "$STATE_ROOT" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort); do
    [[ -f "$STATE_ROOT/$cluster/cluster.env" ]] || continue
    any=1
    (
      load_cluster "$cluster"
      for ((index = 0; index < SERVERS; index++)); do
        pid="$(node_pid "$cluster" "$index")"
        if is_our_node "$pid" "$cluster"; then
          # shellcheck disable=SC2046
          state="running pid=$pid $(python3 "$PROBE" "127.0.0.1:$((BASE_PORT + index))" \
            $(probe_args "$cluster") 2>&1 | cut -d' ' -f2-)"
        else
          state="stopped"
        fi
        echo "$cluster-$index 127.0.0.1:$((BASE_PORT + index)) $state"
      done
    ) || rc=1
  done
  ((any)) || echo "no clusters"
  return $rc
}

main() {
  local command="${1:-}"; shift || true
  case "$command" in
    setup) setup ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-node) (($# == 2)) || die "usage: stop-node CLUSTER INDEX"; cmd_stop_node "$@" ;;
    kill-node) (($# == 2)) || die "usage: kill-node CLUSTER INDEX"; cmd_kill_node "$@" ;;
    start-node) (($# == 2)) || die "usage: start-node CLUSTER INDEX"; cmd_start_node "$@" ;;
    restart-node)
      (($# == 2)) || die "usage: restart-node CLUSTER INDEX"
      cmd_stop_node "$@"
      cmd_start_node "$@"
      ;;
    status) cmd_status ;;
    healthy) (($# == 1)) || die "usage: healthy CLUSTER"; cmd_healthy "$1" ;;
    addrs) (($# == 1)) || die "usage: addrs CLUSTER"; cmd_addrs "$1" ;;
    *) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
