#!/usr/bin/env bash
# Starts a simcluster: a real control plane (embedded etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) on 127.0.0.1, kwok for fake Ready nodes and Running pods, and simprovisioner for
# PersistentVolumes. Prints the admin kubeconfig's path on stdout (everything else goes to stderr).
# Binaries come from build.sh (run first). Stop it with down.sh.
#
# Environment (all optional):
#   SIMCLUSTER_DIR        run dir: certs, kubeconfigs, etcd data, logs, pids   (/tmp/simcluster)
#   SIMCLUSTER_API_PORT   apiserver port on 127.0.0.1                           (6443)
#   SIMCLUSTER_ETCD_PORT  etcd client port on 127.0.0.1                         (2379)
#   SIMCLUSTER_ETCD_PEER_PORT  etcd peer port on 127.0.0.1                      (etcd client port + 1)
#   SIMCLUSTER_NAME       node name prefix: <name>-controlplane-1, <name>-worker-N (sim)
#   SIMCLUSTER_WORKERS    number of worker nodes                                (2)
#   SIMCLUSTER_NODE_CPU / SIMCLUSTER_NODE_MEMORY  each node's capacity          (2 / 4Gi)
#   SIMCLUSTER_OS_IMAGE   the nodes' status.nodeInfo.osImage                    (simcluster (kwok))
#   SIMCLUSTER_PSA_ENFORCE  cluster-wide Pod Security default level, as Talos   (baseline)
#   SIMCLUSTER_KEEP=1     keep the etcd data of an earlier run (default: start empty)
#   SIMCLUSTER_ALLOY_OPERATOR=1  also run alloy-operator.sh (needs helm, kubectl, jq on PATH)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${SIMCLUSTER_BIN:-$HOME/.cache/simcluster/bin}
RUN=${SIMCLUSTER_DIR:-/tmp/simcluster}
API_PORT=${SIMCLUSTER_API_PORT:-6443}
ETCD_PORT=${SIMCLUSTER_ETCD_PORT:-2379}
ETCD_PEER_PORT=${SIMCLUSTER_ETCD_PEER_PORT:-$((ETCD_PORT + 1))}
NAME=${SIMCLUSTER_NAME:-sim}
WORKERS=${SIMCLUSTER_WORKERS:-2}
NODE_CPU=${SIMCLUSTER_NODE_CPU:-2}
NODE_MEMORY=${SIMCLUSTER_NODE_MEMORY:-4Gi}
OS_IMAGE=${SIMCLUSTER_OS_IMAGE:-simcluster (kwok)}
PSA=${SIMCLUSTER_PSA_ENFORCE:-baseline}
K8S_VERSION=v1.36.3
t0=$(date +%s.%N)
log() { echo "simcluster: $*" >&2; }

for b in simetcd kube-apiserver kube-controller-manager kube-scheduler kwok simprovisioner; do
  [ -x "$BIN/$b" ] || { log "$BIN/$b is missing: run $HERE/build.sh first"; exit 1; }
done
mkdir -p "$RUN"/{pki,pids,logs}
for f in "$RUN"/pids/*.pid; do
  [ -e "$f" ] || continue
  if kill -0 "$(cat "$f")" 2>/dev/null; then log "already running ($(basename "$f" .pid) pid $(cat "$f")); run down.sh first"; exit 1; fi
  rm -f "$f"
done

# --- certificates (made once per run dir) -----------------------------------------------------
P=$RUN/pki
leaf() { # name subject extensions
  openssl ecparam -name prime256v1 -genkey -noout -out "$P/$1.key" 2>/dev/null
  openssl req -new -key "$P/$1.key" -subj "$2" -out "$P/$1.csr"
  printf '%b\n' "$3" > "$P/$1.ext"
  openssl x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 365 -sha256 \
    -extfile "$P/$1.ext" -out "$P/$1.crt" 2>/dev/null
  rm -f "$P/$1.csr" "$P/$1.ext"
}
if [ ! -s "$P/admin.crt" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$P/ca.key"
  openssl req -x509 -new -key "$P/ca.key" -sha256 -days 3650 -subj "/CN=simcluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$P/ca.crt"
  openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
  openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
  client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
  leaf apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  leaf controller-manager "/CN=system:kube-controller-manager" "$client"
  leaf scheduler "/CN=system:kube-scheduler" "$client"
  leaf admin "/O=system:masters/CN=kubernetes-admin" "$client"
fi
b64() { base64 < "$1" | tr -d '\n'; }   # GNU and BSD base64 alike
kubeconfig() { # name cert
  cat > "$RUN/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: simcluster
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$P/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$P/$2.crt")
    client-key-data: $(b64 "$P/$2.key")
contexts:
- name: simcluster
  context: {cluster: simcluster, user: $2}
current-context: simcluster
KC
  chmod 600 "$RUN/$1.kubeconfig"
}
kubeconfig admin admin; kubeconfig controller-manager controller-manager; kubeconfig scheduler scheduler

cat > "$RUN/admission.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: "$PSA", enforce-version: latest, audit: restricted, audit-version: latest, warn: restricted, warn-version: latest}
    exemptions: {usernames: [], runtimeClasses: [], namespaces: [kube-system]}
YAML

# --- processes -----------------------------------------------------------------------------------
start() { # name binary args...
  local name=$1; shift
  if command -v setsid > /dev/null; then setsid "$@" > "$RUN/logs/$name.log" 2>&1 < /dev/null &
  else "$@" > "$RUN/logs/$name.log" 2>&1 < /dev/null &
  fi
  echo $! > "$RUN/pids/$name.pid"
}
waitfor() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" > /dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then log "$what not ready after ${secs}s; last log lines:"; tail -20 "$RUN/logs/$what.log" >&2; exit 1; fi
    sleep 0.5
  done
}
api() { curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "$@"; }

# Nothing here may send packets to the simulated ranges (no kube-proxy, no CNI): the apiserver would
# dial a Service ClusterIP for an admission webhook or an aggregated API, and that would leave the
# machine through its default route. Blackhole routes make such dials fail at once, locally.
: > "$RUN/routes"
NODE_IP=10.5.0.2   # the nodes' InternalIP (Talos-in-Docker style); 127.0.0.1 when no blackhole route can be made
for cidr in 10.96.0.0/12 10.244.0.0/16 10.5.0.0/24; do
  if ! ip route show "$cidr" 2>/dev/null | grep -q .; then
    if ip route add blackhole "$cidr" 2>/dev/null; then echo "$cidr" >> "$RUN/routes"
    else
      log "WARNING: could not add a blackhole route for $cidr (not root?): webhook/APIService dials would leave the machine"
      [ "$cidr" = 10.5.0.0/24 ] && NODE_IP=127.0.0.1
    fi
  fi
done

[ "${SIMCLUSTER_KEEP:-}" = 1 ] || rm -rf "$RUN/etcd" "$RUN/alloy-operator"
start etcd "$BIN/simetcd" --data-dir "$RUN/etcd" --listen-client "http://127.0.0.1:$ETCD_PORT" --listen-peer "http://127.0.0.1:$ETCD_PEER_PORT"
waitfor etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
  --client-ca-file="$P/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-cluster-ip-range=10.96.0.0/12 \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction,PodSecurity \
  --admission-control-config-file="$RUN/admission.yaml" \
  --allow-privileged=true --profiling=false --v=1
waitfor kube-apiserver 120 api "https://127.0.0.1:$API_PORT/readyz"
t_api=$(date +%s.%N)

# --secure-port=0: no health endpoints to serve, and no fixed port to collide with another cluster's.
common=(--bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1)
start kube-controller-manager "$BIN/kube-controller-manager" "${common[@]}" --secure-port=0 \
  --kubeconfig="$RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
  --controllers='*' --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range=10.96.0.0/12
start kube-scheduler "$BIN/kube-scheduler" "${common[@]}" --secure-port=0 \
  --kubeconfig="$RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig"
start kwok "$BIN/kwok" --kubeconfig="$RUN/admin.kubeconfig" --config="$HERE/kwok.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.1/16 --node-ip="$NODE_IP" --node-lease-duration-seconds=40
start simprovisioner "$BIN/simprovisioner" --kubeconfig="$RUN/admin.kubeconfig"
if [ "${SIMCLUSTER_ALLOY_OPERATOR:-}" = 1 ]; then
  KUBECONFIG="$RUN/admin.kubeconfig" start alloy-operator bash "$HERE/alloy-operator.sh"
fi

# --- nodes ------------------------------------------------------------------------------------------
node() { # name role
  local taints='[]' role=''
  if [ "$2" = control-plane ]; then
    taints='[{"key":"node-role.kubernetes.io/control-plane","effect":"NoSchedule"}]'
    role=',"node-role.kubernetes.io/control-plane":""'
  fi
  local res="{\"cpu\":\"$NODE_CPU\",\"memory\":\"$NODE_MEMORY\",\"pods\":\"110\",\"ephemeral-storage\":\"50Gi\"}"
  api -X POST -H 'Content-Type: application/json' "https://127.0.0.1:$API_PORT/api/v1/nodes" -d @- > /dev/null <<JSON
{"apiVersion":"v1","kind":"Node",
 "metadata":{"name":"$1","annotations":{"kwok.x-k8s.io/node":"fake","node.alpha.kubernetes.io/ttl":"0"},
   "labels":{"kubernetes.io/hostname":"$1","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64",
             "beta.kubernetes.io/os":"linux","beta.kubernetes.io/arch":"amd64"$role}},
 "spec":{"taints":$taints},
 "status":{"capacity":$res,"allocatable":$res,
   "nodeInfo":{"kubeletVersion":"$K8S_VERSION","kubeProxyVersion":"$K8S_VERSION","osImage":"$OS_IMAGE",
     "containerRuntimeVersion":"containerd://2.1.0 (kwok)","kernelVersion":"kwok","operatingSystem":"linux","architecture":"amd64"}}}
JSON
}
# The default ServiceAccount appears only once the controller-manager runs: wait for it, as for a real cluster.
waitfor kube-controller-manager 60 api "https://127.0.0.1:$API_PORT/api/v1/namespaces/default/serviceaccounts/default"
nodes=("$NAME-controlplane-1")
for i in $(seq 1 "$WORKERS"); do nodes+=("$NAME-worker-$i"); done
node "${nodes[0]}" control-plane
for n in "${nodes[@]:1}"; do node "$n" worker; done
ready() {
  for n in "${nodes[@]}"; do
    # Compact JSON (pretty=false: the apiserver indents for curl), a condition's fields in the API's order (type, status, ...).
    api "https://127.0.0.1:$API_PORT/api/v1/nodes/$n?pretty=false" | grep -q '"type":"Ready","status":"True"' || return 1
  done
}
waitfor kwok 60 ready
t1=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "$(date -u +%FT%TZ) apiserver-ready=$(secs "$t0" "$t_api")s cluster-ready=$(secs "$t0" "$t1")s" >> "$RUN/up.times"
log "up in $(secs "$t0" "$t1")s (apiserver ready after $(secs "$t0" "$t_api")s): ${#nodes[@]} nodes Ready, logs in $RUN/logs"
echo "$RUN/admin.kubeconfig"
