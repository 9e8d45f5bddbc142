#!/usr/bin/env bash
# Compares MQTT ingest of Millstream and mosquitto on this machine, in one run,
# with the same client code (millstream bench ingest). Also reports Millstream's
# idle RSS. For each QoS and number of publishers it runs Millstream (peak, then
# half of its peak), mosquitto (the same), and Millstream again at mosquitto's
# half-load rate (target millstream-at-mosquitto-half): the tails at equal load.
# Usage: [QOS="0 1"] scripts/bench-ingest.sh [DURATION] [PUBLISHERS...]
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
mq_pid=$!; pids+=("$mq_pid")
for i in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$ms_port) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$mq_port) 2>/dev/null && break
  sleep 0.1
done

sleep 2
rss=$(awk '/VmRSS/ {print $2}' /proc/$ms_pid/status)
echo "{\"scenario\":\"idle_rss\",\"target\":\"millstream\",\"rss_kib\":$rss}"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), mosquitto $("$mosq" -h 2>&1 | head -1 | awk '{print $3}')" >&2
# CPU time (user+system) the broker process used during one bench invocation
# (peak and half phases, with their warm-ups) divided by every message sent
# ("sent", warm-ups included): the cost per message, independent of how much
# of the machine the load generator takes.
# Each run starts with the broker idle and its CPU is counted until it is
# idle again, so Millstream's downstream work for a run's messages (the
# normaliser, the historian) is counted in that run and not in the next one.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Nanoseconds the process's threads ran and waited in the kernel's run queue
# while runnable (/proc/PID/task/*/schedstat). Waiting as long as running
# means the machine, not the broker, is the bottleneck.
sched() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{c += $1; w += $2} END {printf "%.0f %.0f\n", c, w}'; }
# Read and write system calls the process made (/proc/PID/io syscr, syscw:
# read/recv and write/send families, the log's pread/pwrite included). On a
# virtual machine where a system call costs microseconds they are a large
# share of a broker's CPU.
sysc() { awk '/^syscr|^syscw/ {printf "%s ", $2}' "/proc/$1/io"; }
wait_idle() { # pid: until it uses under 5% of a core over half a second (at most 60 s)
  local a b
  for _ in $(seq 120); do
    a=$(ticks "$1"); sleep 0.5; b=$(ticks "$1")
    [ $((b - a)) -le $(( $(getconf CLK_TCK) / 40 )) ] && return
  done
  echo "bench-ingest: pid $1 still busy after 60 s" >&2
}
run() { # target port pid qos publishers [phases [label]]
  local t0 t1 s0 s1 c0 c1 out
  wait_idle "$3"
  t0=$(ticks "$3"); s0=$(sched "$3"); c0=$(sysc "$3")
  # Millstream's own histograms split its part of the PUBACK wait (server_*).
  local extra=()
  [ "$1" = millstream ] && extra=(--metrics "http://127.0.0.1:$http_port/metrics")
  out=$(./bin/millstream bench ingest --broker "tcp://127.0.0.1:$2" --target "${7:-$1}" --qos "$4" --publishers "$5" --duration "$dur" --phases "${6:-peak,half}" "${extra[@]}")
  wait_idle "$3"
  t1=$(ticks "$3"); s1=$(sched "$3"); c1=$(sysc "$3")
  echo "$out"
  echo "$out" | awk -v t="${7:-$1}" -v q="$4" -v p="$5" -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    -v s="$s0 $s1" -v c="$c0 $c1" '
    match($0, /"sent":[0-9]+/) { n += substr($0, RSTART + 7, RLENGTH - 7) }
    END {
      split(s, a, " "); split(c, k, " ")
      printf "{\"scenario\":\"broker_cpu\",\"target\":\"%s\",\"qos\":%d,\"publishers\":%d,\"cpu_seconds\":%.2f,\"messages\":%d,\"cpu_us_per_message\":%.1f,\"runqueue_wait_seconds\":%.2f,\"read_syscalls_per_message\":%.2f,\"write_syscalls_per_message\":%.2f}\n",
        t, q, p, ticks / hz, n, ticks / hz * 1e6 / n, (a[4] - a[2]) / 1e9, (k[3] - k[1]) / n, (k[4] - k[2]) / n
    }'
}
for qos in ${QOS:-0 1}; do
  for p in "${pubs[@]}"; do
    run millstream $ms_port "$ms_pid" "$qos" "$p"
    mq=$(run mosquitto $mq_port "$mq_pid" "$qos" "$p")
    echo "$mq"
    # Millstream again at mosquitto's half-load rate: the brokers' tails
    # compared at equal load (each one's own half load differs with its peak).
    rate=$(echo "$mq" | grep '"phase":"half"' | grep -o '"rate_target":[0-9.]*' | cut -d: -f2)
    if [ -n "$rate" ] && [ "${rate%.*}" -gt 0 ]; then
      run millstream $ms_port "$ms_pid" "$qos" "$p" "${rate%.*}" millstream-at-mosquitto-half
    fi
  done
done
