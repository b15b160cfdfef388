#!/usr/bin/env bash
# Stops the processes that up.sh started (by their PID files in the run dir, newest first), and
# nothing else. --purge also removes the run dir (certs, etcd data, logs).
set -uo pipefail
RUN=${SIMCLUSTER_DIR:-/tmp/simcluster}
for name in alloy-operator simprovisioner kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f=$RUN/pids/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  bin=$name; [ "$name" = etcd ] && bin=simetcd; [ "$name" = alloy-operator ] && bin=alloy-operator.sh
  # Only a live process that still runs our binary (a PID may have been reused).
  if kill -0 "$pid" 2>/dev/null && ps -o args= -p "$pid" | grep -q "/$bin\( \|$\)"; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "simcluster: stopped $name ($pid)" >&2
  fi
  rm -f "$f"
done
if [ -f "$RUN/routes" ]; then
  # Another simcluster still running relies on the same routes (its up.sh found them and added none):
  # hand them to it (its run dir is in its apiserver's --admission-control-config-file) instead.
  other=$(ps -eo args= | sed -n 's|.*/kube-apiserver .*--admission-control-config-file=\([^ ]*\)/admission.yaml.*|\1|p' | grep -vx "$RUN" | head -1)
  if [ -n "$other" ] && [ -d "$other" ]; then
    cat "$RUN/routes" >> "$other/routes"
    echo "simcluster: left the blackhole routes to the simcluster in $other" >&2
  else
    while read -r cidr; do [ -n "$cidr" ] && ip route del blackhole "$cidr" 2>/dev/null; done < "$RUN/routes"
  fi
  rm -f "$RUN/routes"
fi
if [ "${1:-}" = --purge ]; then rm -rf "$RUN"; echo "simcluster: removed $RUN" >&2; fi
