#!/usr/bin/env bash
# Compares MQTT ingest of Millstream and mosquitto on this machine, in one run,
# with the same client code (millstream bench ingest). Also reports Millstream's
# idle RSS. Usage: scripts/bench-ingest.sh [DURATION] [PUBLISHERS...]
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}; shift || true
pubs=("${@:-1 8 64}"); read -r -a pubs <<<"${pubs[*]}"
make -s build
work=$(mktemp -d /tmp/millstream-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

ms_port=18830; mq_port=18831; http_port=18080
cat >"$work/millstream.yaml" <<YAML
data_dir: $work/data
mqtt:
  listeners:
    - {name: tcp, type: tcp, address: "127.0.0.1:$ms_port"}
http:
  address: "127.0.0.1:$http_port"
YAML
./bin/millstream run --config "$work/millstream.yaml" 2>"$work/millstream.log" &
ms_pid=$!; pids+=("$ms_pid")

mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mkdir -p "$work/mosq"
cat >"$work/mosquitto.conf" <<CONF
listener $mq_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/mosq/
max_queued_messages 100000
CONF
"$mosq" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=("$!")
for i in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$ms_port) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$mq_port) 2>/dev/null && break
  sleep 0.1
done

sleep 2
rss=$(awk '/VmRSS/ {print $2}' /proc/$ms_pid/status)
echo "{\"scenario\":\"idle_rss\",\"target\":\"millstream\",\"rss_kib\":$rss}"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), mosquitto $("$mosq" -h 2>&1 | head -1 | awk '{print $3}')" >&2
for qos in 0 1; do
  for p in "${pubs[@]}"; do
    ./bin/millstream bench ingest --broker tcp://127.0.0.1:$ms_port --target millstream --qos $qos --publishers "$p" --duration "$dur"
    ./bin/millstream bench ingest --broker tcp://127.0.0.1:$mq_port --target mosquitto --qos $qos --publishers "$p" --duration "$dur"
  done
done
