#!/usr/bin/env bash
# A real Kubernetes control plane with Argo's workflow-controller, on loopback, for kfcache's
# end-to-end tests: etcd, kube-apiserver, kube-scheduler, workflow-controller and kwok (which
# fakes the GPU nodes; no kubelet, no kube-controller-manager).
#
#   scripts/k8s.sh build          build the binaries once per machine (also done by `up`)
#   scripts/k8s.sh up [--fresh]   start everything (healthy components from an earlier `up` are
#                                 reused unless --fresh) and apply the cluster's objects
#   scripts/k8s.sh down           stop everything, by pid, and drop the cluster's data
#   scripts/k8s.sh env            print `export ...` lines; use as eval "$(scripts/k8s.sh env)"
#   scripts/k8s.sh status
#
# Binaries come from the Go module proxy at pinned versions (the wrapper modules in
# scripts/k8s/build/: k8s.io/kubernetes v1.37.2 with its staging modules as k8s.io/X v0.37.2,
# etcd v3.6.16, argo-workflows v3.7.4, kwok v0.7.0 in a module of its own). They are built
# sequentially (about 10 minutes on 2 idle cores, 20-25 beside other builds) into a per-machine
# cache outside the repository,
# ${KFCACHE_K8S_CACHE:-~/.cache/kfcache/k8s}/bin-STAMP, STAMP being a hash of the wrapper
# modules, this script's build section and the Go version, so that fresh clones reuse them.
# A fresh machine needs go >= 1.26 (and the module proxy), openssl, curl and flock.
# Argo's CRDs and kwok's node stages are copied from the module cache next to them
# (data-STAMP). Argo is built from a copy of its module with one file put back (see
# argo_patched_copy): its zip lacks a symbolic link that argoexec needs on Linux.
#
# State (pids, logs, certificates, tokens, kubeconfig, etcd data) lives in .cache/k8s. Ports:
# apiserver $KFCACHE_K8S_PORT (6443), etcd $KFCACHE_K8S_ETCD_PORT (2479) and the next one for
# peers, scheduler $KFCACHE_K8S_SCHEDULER_PORT (10359). Argo's controller always listens on
# :6060 for /healthz (hard-coded upstream); its metrics servers are switched off.
#
# The cluster: namespaces argo (the controller's configmap and lease), kfcache-e2e and default,
# plus $KFCACHE_K8S_NAMESPACES (space- or comma-separated). Each pod namespace gets the
# `default` ServiceAccount, the kube-root-ca.crt ConfigMap (no controller-manager makes them),
# the Secret kfcache-s3 (moto's credentials) and a RoleBinding to the ClusterRole
# kfcache-argo-executor (what argoexec needs). The artifact repository is S3 at
# $KFCACHE_K8S_S3_ENDPOINT (default: the moto of scripts/s3.sh), bucket $KFCACHE_TEST_S3_BUCKET
# (kfcache-test). Nodes gpu-node-0 and gpu-node-1 (16 CPU, 64Gi, 4 nvidia.com/gpu each) are
# kept Ready by kwok; kwok plays no pod stages: pods bound to them stay Pending until the test
# node agent runs them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_SRC="$ROOT/scripts/k8s/build"
CACHE="${KFCACHE_K8S_CACHE:-$HOME/.cache/kfcache/k8s}"
STATE="$ROOT/.cache/k8s"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_FILE="$STATE/kubeconfig"

PORT="${KFCACHE_K8S_PORT:-6443}"
ETCD_PORT="${KFCACHE_K8S_ETCD_PORT:-2479}"
ETCD_PEER_PORT="$((ETCD_PORT + 1))"
SCHEDULER_PORT="${KFCACHE_K8S_SCHEDULER_PORT:-10359}"
TEST_NAMESPACE=kfcache-e2e
BUCKET="${KFCACHE_TEST_S3_BUCKET:-kfcache-test}"
ARGO_VERSION=v3.7.4
EXECUTOR_IMAGE="quay.io/argoproj/argoexec:$ARGO_VERSION"
SA_ISSUER=https://kubernetes.default.svc.cluster.local
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
GPU_NODES=(gpu-node-0 gpu-node-1)
COMPONENTS=(etcd kube-apiserver kube-scheduler workflow-controller kwok)

# What each binary is built from: module folder under scripts/k8s/build, output name, package,
# extra -ldflags. Changing this (or anything under scripts/k8s/build, or the Go version) changes
# the stamp, so the next `up` builds again into a new folder.
K8S_VERSION_X="-X=k8s.io/component-base/version.gitVersion=v1.37.2 -X=k8s.io/component-base/version.gitMajor=1 -X=k8s.io/component-base/version.gitMinor=37 -X=k8s.io/component-base/version.gitTreeState=clean"
BUILD_STEPS=(
  "kubernetes kube-apiserver ./kube-apiserver $K8S_VERSION_X"
  "kubernetes kube-scheduler ./kube-scheduler $K8S_VERSION_X"
  "kubernetes kubectl ./kubectl $K8S_VERSION_X"
  "etcd etcd . -"
  "argo workflow-controller github.com/argoproj/argo-workflows/v3/cmd/workflow-controller -X=github.com/argoproj/argo-workflows/v3.version=$ARGO_VERSION"
  "argo argoexec ./argoexec -X=github.com/argoproj/argo-workflows/v3.version=$ARGO_VERSION"
  "kwok kwok . -"
)
BUILD_RECIPE='go build -trimpath -ldflags="-s -w [-X ...]"; GOFLAGS=-mod=mod; go mod tidy'

log() { echo "k8s.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

stamp() {
  {
    printf '%s\n' "${BUILD_STEPS[@]}" "$BUILD_RECIPE"
    sed -n '/^# --- build/,/^# --- processes/p' "${BASH_SOURCE[0]}"
    go version
    (cd "$BUILD_SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -c1-12
}

resolve_dirs() {
  command -v go >/dev/null || die "go not found (Go >= 1.26 builds the control plane)"
  STAMP="$(stamp)"
  BIN="$CACHE/bin-$STAMP"
  DATA="$CACHE/data-$STAMP"
}

# --- build -------------------------------------------------------------------------------------

# Runs one `go build` in the background and prints a line a minute, so that CI sees progress.
go_build_step() {
  local dir="$1" name="$2" pkg="$3" xflags="$4" out="$5" buildlog="$6"
  local ldflags="-s -w"
  [[ "$xflags" != "-" ]] && ldflags="$ldflags $xflags"
  (cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" -o "$out/$name" "$pkg") \
    >>"$buildlog" 2>&1 &
  local pid=$! started=$SECONDS next=$((SECONDS + 60))
  # shellcheck disable=SC2064 # the pid is meant to be expanded now
  trap "kill $pid 2>/dev/null; exit 130" INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      log "  ... still building $name ($((SECONDS - started))s)"
      next=$((next + 60))
    fi
  done
  trap - INT TERM
  wait "$pid"
}

# Argo's workflow/executor/osspecific/signal_linux.go is a symbolic link to signal_darwin.go in
# its repository, and module zips leave symbolic links out: from the proxy's zip argoexec does not
# build ("undefined: Setpgid"). `go build -overlay` may not touch the module cache, so the build
# uses a copy of the module (replace => ./argo-workflows) with the link's target copied in.
argo_patched_copy() {
  local work="$1" dir pkg
  dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/argoproj/argo-workflows/v3@$ARGO_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { echo "go mod download gave no directory for argo-workflows"; return 1; }
  rm -rf "$work/argo-workflows"
  cp -r "$dir" "$work/argo-workflows"
  chmod -R u+w "$work/argo-workflows"
  pkg="$work/argo-workflows/workflow/executor/osspecific"
  [[ -f "$pkg/signal_darwin.go" ]] || { echo "no $pkg/signal_darwin.go"; return 1; }
  [[ -e "$pkg/signal_linux.go" ]] || cp "$pkg/signal_darwin.go" "$pkg/signal_linux.go"
  (cd "$work" && go mod edit -replace "github.com/argoproj/argo-workflows/v3=./argo-workflows")
}

cmd_build() {
  resolve_dirs
  [[ -f "$BIN/.complete" && -f "$DATA/.complete" ]] && return 0
  mkdir -p "$CACHE"
  local lock="$CACHE/build.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    log "another build holds $lock; waiting for it"
    flock 9
  fi
  if [[ -f "$BIN/.complete" && -f "$DATA/.complete" ]]; then
    exec 9>&-
    return 0
  fi
  local started=$SECONDS work="$CACHE/src-$STAMP" out="$CACHE/bin-$STAMP.tmp"
  local data="$CACHE/data-$STAMP.tmp" buildlog="$CACHE/build-$STAMP.log"
  log "building the control plane ($(go version | cut -d' ' -f3)) into $BIN; this takes about" \
    "10 minutes on 2 cores, once per machine (log: $buildlog)"
  rm -rf "$work" "$out" "$data"
  mkdir -p "$out" "$data/argo-crds" "$data/kwok-stages"
  cp -r "$BUILD_SRC" "$work"
  : >"$buildlog"
  argo_patched_copy "$work/argo" >>"$buildlog" 2>&1 \
    || { tail -n 30 "$buildlog" >&2; die "could not prepare Argo's source (log: $buildlog)"; }
  local module
  for module in kubernetes etcd argo kwok; do
    log "resolving modules for $module (go mod tidy)"
    (cd "$work/$module" && GOFLAGS=-mod=mod go mod tidy) >>"$buildlog" 2>&1 \
      || { tail -n 30 "$buildlog" >&2; die "go mod tidy failed in $module (log: $buildlog)"; }
  done
  local i=0 step dir name pkg xflags t
  for step in "${BUILD_STEPS[@]}"; do
    i=$((i + 1))
    read -r dir name pkg xflags <<<"$step"
    log "building $name ($i/${#BUILD_STEPS[@]})"
    t=$SECONDS
    go_build_step "$work/$dir" "$name" "$pkg" "$xflags" "$out" "$buildlog" \
      || { tail -n 30 "$buildlog" >&2; die "building $name failed (log: $buildlog)"; }
    log "built $name in $((SECONDS - t))s"
    echo "$name $((SECONDS - t))s" >>"$out/build-times.txt"
  done
  # Data from the module zips that `go mod tidy` put into the module cache.
  local argo_dir kwok_dir f
  argo_dir="$work/argo/argo-workflows"
  kwok_dir="$(cd "$work/kwok" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  [[ -d "$argo_dir/manifests/base/crds/minimal" ]] || die "no Argo CRDs in $argo_dir"
  for f in "$argo_dir"/manifests/base/crds/minimal/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] && continue
    install -m 0644 "$f" "$data/argo-crds/"
  done
  install -m 0644 "$kwok_dir/kustomize/stage/node/fast/node-initialize.yaml" \
    "$kwok_dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$data/kwok-stages/"
  touch "$data/.complete" "$out/.complete"
  rm -rf "$BIN" "$DATA"
  mv "$data" "$DATA"
  mv "$out" "$BIN"
  rm -rf "$work"
  exec 9>&-
  log "built the control plane in $((SECONDS - started))s: $BIN"
}

# --- processes ---------------------------------------------------------------------------------

# A pid is ours when its program is one of our binaries (by name) and its command line names
# this checkout's state folder: every component gets a flag pointing into it.
is_ours() {
  local pid="$1" name="$2" argv0
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)"
  [[ "$(basename "$argv0")" == "$name" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$STATE/" || return 1
}

# Ours and started from the current build.
is_current() {
  local pid="$1" name="$2"
  is_ours "$pid" "$name" || return 1
  [[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)" == "$BIN/$name" ]]
}

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }

# Pids of processes that are ours but whose pid file was lost (an interrupted run).
stray_pids() {
  local name="$1" f p
  for f in $(grep -lF "$STATE/" /proc/[0-9]*/cmdline 2>/dev/null); do
    p="${f#/proc/}"
    p="${p%/cmdline}"
    is_ours "$p" "$name" 2>/dev/null && echo "$p"
  done
  return 0
}

stop_component() {
  local name="$1" pid pids=()
  pid="$(pid_of "$name")"
  is_ours "$pid" "$name" && pids+=("$pid")
  for pid in $(stray_pids "$name"); do
    [[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do is_ours "$pid" "$name" || break; sleep 0.1; done
    if is_ours "$pid" "$name"; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    log "stopped $name (pid $pid)"
  done
  rm -f "$PIDS/$name.pid"
}

start_component() {
  local name="$1"
  shift
  mkdir -p "$LOGS" "$PIDS"
  {
    echo "--- $(date -u +%FT%TZ) starting $name"
  } >>"$LOGS/$name.log"
  # 8>&- 9>&-: the components must not inherit (and so hold for their whole life) the locks.
  nohup "$@" </dev/null >>"$LOGS/$name.log" 2>&1 8>&- 9>&- &
  echo $! >"$PIDS/$name.pid"
}

# wait_for NAME TIMEOUT CHECK...: polls CHECK until it succeeds; dies naming the log when the
# process exits or the time runs out.
wait_for() {
  local name="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    # Alive is enough here: right after the start the child may not have exec'd the binary yet.
    if ! kill -0 "$(pid_of "$name")" 2>/dev/null; then
      tail -n 30 "$LOGS/$name.log" >&2
      die "$name exited during start (log: $LOGS/$name.log)"
    fi
    ((SECONDS < deadline)) || {
      tail -n 30 "$LOGS/$name.log" >&2
      die "$name not ready after ${timeout}s (log: $LOGS/$name.log)"
    }
    sleep 0.5
  done
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

need_port() {
  local port="$1" what="$2"
  port_free "$port" || die "port $port ($what) on 127.0.0.1 is in use by another process" \
    "(set the KFCACHE_K8S_*PORT variables)"
}

# --- health checks -----------------------------------------------------------------------------

admin_token() { cat "$STATE/admin-token"; }

kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

etcd_healthy() {
  curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}

apiserver_healthy() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:$PORT/readyz" | grep -q '^ok'
}

scheduler_healthy() {
  curl -fsS --max-time 3 -k "https://127.0.0.1:$SCHEDULER_PORT/healthz" | grep -q '^ok'
}

controller_identity() { echo "kfcache-$(hostname)"; }

# The controller leads (its lease names it) once it runs its workers.
controller_healthy() {
  [[ "$(kctl -n argo get lease workflow-controller -o 'jsonpath={.spec.holderIdentity}' \
    2>/dev/null)" == "$(controller_identity)" ]]
}

nodes_ready() {
  local node
  for node in "${GPU_NODES[@]}"; do
    [[ "$(kctl get node "$node" \
      -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] \
      || return 1
  done
}

kwok_healthy() { nodes_ready; }

healthy() {
  case "$1" in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_healthy ;;
    kube-scheduler) scheduler_healthy ;;
    workflow-controller) controller_healthy ;;
    kwok) kwok_healthy ;;
  esac
}

# --- certificates, tokens, kubeconfig ------------------------------------------------------------

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" || ! -f "$PKI/ca.key" ]]; then
    log "making a CA and the apiserver's serving certificate (openssl)"
    rm -f "$PKI"/*
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$PKI/ca.key" \
      -out "$PKI/ca.crt" -subj "/CN=kfcache-k8s-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null \
      || die "openssl could not make the CA"
  fi
  if [[ ! -f "$PKI/apiserver.crt" ]]; then
    cat >"$PKI/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$PKI/apiserver.key" \
      -out "$PKI/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null \
      || die "openssl could not make the apiserver key"
    openssl x509 -req -sha256 -days 3650 -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" \
      -CAkey "$PKI/ca.key" -CAcreateserial -extfile "$PKI/apiserver.ext" \
      -out "$PKI/apiserver.crt" 2>/dev/null || die "openssl could not sign the apiserver cert"
    openssl verify -CAfile "$PKI/ca.crt" "$PKI/apiserver.crt" >/dev/null \
      || die "the apiserver certificate does not verify against the CA"
  fi
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null || die "openssl could not make sa.key"
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null \
      || die "openssl could not write sa.pub"
  fi
  if [[ ! -f "$STATE/admin-token" ]]; then
    openssl rand -hex 24 >"$STATE/admin-token"
    chmod 600 "$STATE/admin-token"
  fi
  echo "$(admin_token),admin,admin,system:masters" >"$STATE/tokens.csv"
  chmod 600 "$STATE/tokens.csv"
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kfcache
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $(admin_token)
contexts:
- name: kfcache
  context:
    cluster: kfcache
    user: admin
current-context: kfcache
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

# --- components ----------------------------------------------------------------------------------

start_etcd() {
  need_port "$ETCD_PORT" "etcd client"
  need_port "$ETCD_PEER_PORT" "etcd peer"
  mkdir -p "$STATE/etcd-data"
  chmod 700 "$STATE/etcd-data"
  start_component etcd "$BIN/etcd" \
    --name kfcache \
    --data-dir "$STATE/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kfcache=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --quota-backend-bytes 2147483648
  wait_for etcd 60 etcd_healthy
}

start_apiserver() {
  need_port "$PORT" "kube-apiserver"
  mkdir -p "$STATE/apiserver-certs"
  start_component kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$PORT" \
    --endpoint-reconciler-type none \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$PKI/apiserver.crt" \
    --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --token-auth-file "$STATE/tokens.csv" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer "$SA_ISSUER" \
    --api-audiences "$SA_ISSUER" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode RBAC \
    --disable-admission-plugins TaintNodesByCondition \
    --allow-privileged=true \
    --profiling=false
  wait_for kube-apiserver 90 apiserver_healthy
}

start_scheduler() {
  need_port "$SCHEDULER_PORT" "kube-scheduler"
  start_component kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" \
    --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHEDULER_PORT" \
    --cert-dir "$STATE/scheduler-certs" \
    --leader-elect=false
  wait_for kube-scheduler 60 scheduler_healthy
}

start_controller() {
  # A fixed identity: a restarted controller takes its own lease back at once instead of
  # waiting for the old one to expire.
  # DEFAULT_REQUEUE_TIME: Argo looks at a running workflow again after 10 s by default
  # (workflow/controller/rate_limiters.go); 1 s keeps the tests' short pods from idling.
  LEADER_ELECTION_IDENTITY="$(controller_identity)" DEFAULT_REQUEUE_TIME="${KFCACHE_K8S_REQUEUE:-1s}" \
    start_component workflow-controller \
    "$BIN/workflow-controller" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --namespace argo \
    --configmap workflow-controller-configmap \
    --executor-image "$EXECUTOR_IMAGE" \
    --executor-image-pull-policy IfNotPresent \
    --namespaced=false
  wait_for workflow-controller 90 controller_healthy
}

start_kwok() {
  start_component kwok "$BIN/kwok" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --config "$STATE/kwok.yaml" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 \
    --node-lease-duration-seconds 40
  wait_for kwok 90 nodes_ready
}

# kwok's --config: its own node stages (initialize, heartbeat with a lease) and one pod stage
# that matches no pod. That stage is needed because kwok plays its default pod stages (pods
# become Running and then Succeeded, all faked) whenever the config has no pod stage; the test
# node agent, not kwok, runs the pods.
write_kwok_config() {
  {
    cat "$DATA/kwok-stages/node-initialize.yaml"
    echo "---"
    cat "$DATA/kwok-stages/node-heartbeat-with-lease.yaml"
    cat <<'EOF'
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kfcache-no-pod-stages
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchAnnotations:
      kfcache.dev/kwok-plays-this-pod: "never"
  next:
    event:
      type: Normal
      reason: Ignored
      message: kwok plays no pod stages in kfcache's test cluster
EOF
  } >"$STATE/kwok.yaml"
}

# --- cluster objects -----------------------------------------------------------------------------

s3_endpoint() {
  local endpoint="${KFCACHE_K8S_S3_ENDPOINT:-}"
  if [[ -z "$endpoint" ]]; then
    endpoint="$("$ROOT/scripts/s3.sh" endpoint 2>/dev/null)" \
      || die "no S3 endpoint: start moto first (scripts/s3.sh start or scripts/services.sh up)" \
        "or set KFCACHE_K8S_S3_ENDPOINT"
  fi
  echo "$endpoint"
}

pod_namespaces() {
  local extra="${KFCACHE_K8S_NAMESPACES:-}"
  printf '%s\n' default "$TEST_NAMESPACE" ${extra//,/ } | awk 'NF && !seen[$0]++'
}

apply_objects() {
  local s3="$1" ns
  local s3_host="${s3#http://}" insecure=true
  [[ "$s3" == https://* ]] && { s3_host="${s3#https://}"; insecure=false; }
  s3_host="${s3_host%/}"

  log "installing Argo's CRDs"
  kctl apply --server-side --force-conflicts -f "$DATA/argo-crds/" >/dev/null \
    || die "could not apply Argo's CRDs"
  kctl wait --for condition=established --timeout=60s \
    -f "$DATA/argo-crds/" >/dev/null || die "Argo's CRDs were not established"

  local ca_indented
  ca_indented="$(sed 's/^/    /' "$PKI/ca.crt")"
  {
    cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: argo
---
# What argoexec (init, wait) needs in a pod's namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kfcache-argo-executor
rules:
- apiGroups: [argoproj.io]
  resources: [workflowtaskresults]
  verbs: [create, patch, get, list, watch]
- apiGroups: [argoproj.io]
  resources: [workflowtasksets, workflowartifactgctasks]
  verbs: [get, list, watch]
- apiGroups: [argoproj.io]
  resources: [workflowtasksets/status, workflowartifactgctasks/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get, watch]
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: workflow-controller-configmap
  namespace: argo
data:
  artifactRepository: |
    archiveLogs: false
    s3:
      endpoint: "$s3_host"
      bucket: "$BUCKET"
      region: us-east-1
      insecure: $insecure
      accessKeySecret:
        name: kfcache-s3
        key: accessKey
      secretKeySecret:
        name: kfcache-s3
        key: secretKey
  executor: |
    image: "$EXECUTOR_IMAGE"
    imagePullPolicy: IfNotPresent
  metricsConfig: |
    enabled: false
  telemetryConfig: |
    enabled: false
EOF
    while read -r ns; do
      [[ "$ns" == default ]] || printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns"
      cat <<EOF
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: $ns
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-root-ca.crt
  namespace: $ns
data:
  ca.crt: |
$ca_indented
---
apiVersion: v1
kind: Secret
metadata:
  name: kfcache-s3
  namespace: $ns
stringData:
  accessKey: testing
  secretKey: testing
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kfcache-argo-executor
  namespace: $ns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kfcache-argo-executor
subjects:
- kind: ServiceAccount
  name: default
  namespace: $ns
EOF
    done < <(pod_namespaces)
  } >"$STATE/objects.yaml"
  kctl apply -f "$STATE/objects.yaml" >/dev/null || die "could not apply $STATE/objects.yaml"
}

apply_nodes() {
  local node
  {
    for node in "${GPU_NODES[@]}"; do
      cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    nvidia.com/gpu.present: "true"
spec: {}
status:
  capacity:
    cpu: "16"
    memory: 64Gi
    pods: "110"
    nvidia.com/gpu: "4"
  allocatable:
    cpu: "16"
    memory: 64Gi
    pods: "110"
    nvidia.com/gpu: "4"
EOF
    done
  } >"$STATE/nodes.yaml"
  # Nodes take their status on create; later applies leave it alone.
  kctl apply -f "$STATE/nodes.yaml" >/dev/null || die "could not apply $STATE/nodes.yaml"
}

# No node lifecycle controller removes the not-ready taint (TaintNodesByCondition is off too).
untaint_nodes() {
  local node
  for node in "${GPU_NODES[@]}"; do
    if kctl get node "$node" -o 'jsonpath={.spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'; then
      kctl taint nodes "$node" node.kubernetes.io/not-ready- >/dev/null
    fi
  done
}

# --- commands --------------------------------------------------------------------------------------

ensure_component() {
  local name="$1" fresh="$2" pid
  pid="$(pid_of "$name")"
  if ((!fresh)) && is_current "$pid" "$name" && healthy "$name" >/dev/null 2>&1; then
    log "reusing healthy $name (pid $pid)"
    return 1
  fi
  stop_component "$name"
  return 0
}

cmd_up() {
  local fresh=0
  [[ "${1:-}" == "--fresh" ]] && fresh=1
  local started=$SECONDS
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"
  cmd_build
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  take_state_lock
  ((fresh)) && stop_all
  local s3
  s3="$(s3_endpoint)"
  make_pki
  write_kwok_config

  if ensure_component etcd "$fresh"; then
    log "starting etcd on 127.0.0.1:$ETCD_PORT"
    start_etcd
  fi
  if ensure_component kube-apiserver "$fresh"; then
    log "starting kube-apiserver on 127.0.0.1:$PORT"
    start_apiserver
  fi
  apply_objects "$s3"
  apply_nodes
  if ensure_component kube-scheduler "$fresh"; then
    log "starting kube-scheduler on 127.0.0.1:$SCHEDULER_PORT"
    start_scheduler
  fi
  if ensure_component workflow-controller "$fresh"; then
    log "starting workflow-controller (executor $EXECUTOR_IMAGE, S3 $s3 bucket $BUCKET)"
    start_controller
  fi
  if ensure_component kwok "$fresh"; then
    log "starting kwok (nodes ${GPU_NODES[*]})"
    start_kwok
  fi
  untaint_nodes
  exec 8>&-
  log "control plane up in $((SECONDS - started))s: https://127.0.0.1:$PORT" \
    "(eval \"\$(scripts/k8s.sh env)\")"
}

# One `up` or `down` at a time per checkout.
take_state_lock() {
  exec 8>"$STATE/k8s.sh.lock"
  flock -w 300 8 || die "another scripts/k8s.sh up/down holds $STATE/k8s.sh.lock (waited 300s)"
}

stop_all() {
  local i
  # Reverse order: clients first, etcd last.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[$i]}"
  done
  rm -rf "$STATE/etcd-data"
}

cmd_down() {
  mkdir -p "$STATE"
  take_state_lock
  stop_all
  exec 8>&-
}

cmd_env() {
  resolve_dirs
  [[ -f "$KUBECONFIG_FILE" ]] || die "no kubeconfig: run scripts/k8s.sh up"
  cat <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export KFCACHE_TEST_KUBECONFIG=$KUBECONFIG_FILE
export KFCACHE_TEST_K8S_API=https://127.0.0.1:$PORT
export KFCACHE_TEST_K8S_CA=$PKI/ca.crt
export KFCACHE_TEST_K8S_BIN=$BIN
export KFCACHE_TEST_K8S_NAMESPACE=$TEST_NAMESPACE
EOF
}

cmd_status() {
  resolve_dirs
  local name pid state rc=0
  if [[ -f "$BIN/.complete" ]]; then
    echo "binaries $BIN"
  else
    echo "binaries not built ($BIN)"
    rc=1
  fi
  for name in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$name")"
    if is_ours "$pid" "$name"; then
      if healthy "$name" >/dev/null 2>&1; then state="running pid=$pid healthy"; else
        state="running pid=$pid NOT healthy"
        rc=1
      fi
      is_current "$pid" "$name" || state="$state (from an older build)"
    else
      state="stopped"
      rc=1
    fi
    echo "$name $state (log: $LOGS/$name.log)"
  done
  return "$rc"
}

case "${1:-}" in
  build) cmd_build ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
