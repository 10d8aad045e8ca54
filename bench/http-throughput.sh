#!/usr/bin/env bash
# HTTP -> box -> HTTP with 1 KiB messages, as a new user would run it: a node
# (fresh data directory, every setting at its default) with a one-way HTTP
# receive location and an HTTP send port, all on this machine.
#
#   bench/http-throughput.sh [--duration S] [--connections N] [--threads N]
#                            [--rate R] [--paced-duration S] [--size BYTES]
#                            [--modes "max paced"] [--drain-timeout S]
#                            [--send-concurrency N] [--peers "rabbitmq nats"]
#                            [--peer-messages N]
#
# (or the environment: DURATION, CONNECTIONS, THREADS, RATE, PACED_DURATION,
# SIZE, MODES, DRAIN_TIMEOUT (default 1800: how long either mode waits for
# the box to empty after its load), SEND_CONCURRENCY (the send port's
# `concurrency`; unset: the default), PEERS (default "rabbitmq"; "none":
# no peer), PEER_MESSAGES (default 200000); a flag wins.)
#
# max    wrk (Debian's package, installed with apt-get when missing) POSTs
#        SIZE-byte bodies over CONNECTIONS connections (THREADS threads) as
#        fast as the node answers, for DURATION seconds (default 30, 64
#        connections, 2 threads); the send port delivers to `sluice dev
#        echo-server`. Figures: requests/s answered 202 (wrk), p50/p99 of the
#        202 (wrk's latency distribution: from the request written to the
#        answer read, closed loop), messages/s delivered end to end (every
#        message the node published, from the first request until the
#        node's /metrics counts them all delivered and `sluice status --json`
#        shows the box empty: spool 0, nothing queued), the node's peak RSS.
# paced  `sluice bench http` POSTs at RATE/s (default 5,000) for
#        PACED_DURATION seconds (default DURATION) and receives the
#        deliveries itself (the send port points at it): p50/p99 from each
#        202 to the delivery of the same message (X-Sluice-Message-Id on
#        both), one clock; and the node's peak RSS.
# peers  after the modes, in the same run: `bench/peers.sh --tools PEERS
#        --rounds 1` (PEER_MESSAGES durable SIZE-byte messages through each
#        broker, one publisher and one consumer), and max's end-to-end
#        figure over each peer's.
#
# Peak RSS is the OS's figure for the node: `/usr/bin/time -v`, "Maximum
# resident set size". Each mode runs its own node on a fresh data directory.
# Human lines on stderr as it goes, one line per figure at the end, and a
# last line of JSON on stdout. Every process it starts is stopped and its
# scratch folder removed on exit.
set -euo pipefail
duration=${DURATION:-30}
connections=${CONNECTIONS:-64}
threads=${THREADS:-2}
rate=${RATE:-5000}
paced_duration=${PACED_DURATION:-}
size=${SIZE:-1024}
modes=${MODES:-max paced}
drain_timeout=${DRAIN_TIMEOUT:-1800}
send_concurrency=${SEND_CONCURRENCY:-}
peers=${PEERS-rabbitmq}
peer_messages=${PEER_MESSAGES:-200000}
while [ $# -gt 0 ]; do
  case $1 in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
  [ $# -ge 2 ] || { echo "$1 needs a value (see --help)" >&2; exit 2; }
  case $1 in
    --duration) duration=$2 ;;
    --connections) connections=$2 ;;
    --threads) threads=$2 ;;
    --rate) rate=$2 ;;
    --paced-duration) paced_duration=$2 ;;
    --size) size=$2 ;;
    --modes) modes=$2 ;;
    --drain-timeout) drain_timeout=$2 ;;
    --send-concurrency) send_concurrency=$2 ;;
    --peers) peers=$2 ;;
    --peer-messages) peer_messages=$2 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
paced_duration=${paced_duration:-$duration}
for m in $modes; do
  case $m in max | paced) ;; *) echo "unknown mode: $m (max, paced)" >&2; exit 2 ;; esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"

say() { echo "http-throughput: $*" >&2; }
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

need_tools "wrk wrk" "jq jq" "curl curl" "/usr/bin/time time" "python3 python3"

echo_pid=
bench_pid=
# Replaces lib.sh's trap: stop what runs (wrk dies with the script), then
# remove the scratch folder.
cleanup() {
  stop_bg "$bench_pid"
  [ -n "$pid" ] && kill -TERM "$(node_pid)" 2>/dev/null
  stop_bg "$pid"
  stop_bg "$echo_pid"
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building sluice (release)"
bench_setup sluice-http-throughput

# write_config DIR SEND_URL: a node in DIR with a one-way HTTP location on a
# free port (its URL in $in_url) and an HTTP send port to SEND_URL; /metrics
# on any free port. Every other setting is the default.
write_config() {
  local dir=$1 port
  port=$(free_port)
  in_url="http://127.0.0.1:$port/in"
  mkdir -p "$dir"
  cat > "$dir/sluice.toml" <<TOML
data_dir = "data"

[receive_ports.web.locations.web-in]
adapter = { type = "http", address = "127.0.0.1:$port", path = "/in" }

[send_ports.out]
filter = 'receive.port == "web"'
adapter = { type = "http", url = "$2" }
${send_concurrency:+concurrency = $send_concurrency}

[metrics]
address = "127.0.0.1:0"
TOML
}

# metric NAME: the sum of NAME's samples on the node's /metrics.
metric() {
  curl -sf "http://$metrics/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# start DIR: start the node of DIR/sluice.toml under /usr/bin/time -v (lib.sh;
# its report and log in DIR); $metrics is its /metrics address.
start() {
  start_node "$1/sluice.toml" "$1"
  metrics=$(metrics_address "$1/data")
}

# box_empty DIR: whether `sluice status --json` shows no message and nothing queued.
box_empty() {
  "$bin" status --json --config "$1/sluice.toml" 2>/dev/null |
    jq -e '.spool == 0 and ([.queued[]] | add // 0) == 0' >/dev/null
}

results='{}'
lines=()
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r)"

if [[ " $modes " == *" max "* ]]; then
  echo_port=$(free_port)
  "$bin" dev echo-server --port "$echo_port" > "$work/echo.out" 2> "$work/echo.err" &
  echo_pid=$!
  until grep -q "listening on" "$work/echo.out" 2>/dev/null; do
    kill -0 "$echo_pid" 2>/dev/null || { cat "$work/echo.err" >&2; exit 1; }
    sleep 0.1
  done
  write_config "$work/max" "http://127.0.0.1:$echo_port/echo"
  cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", $size / 16) .. string.rep("x", $size % 16)
wrk.headers["Content-Type"] = "application/octet-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
LUA
  start "$work/max"
  say "max: wrk -t$threads -c$connections -d${duration}s, $size-byte POSTs to $in_url; send port -> echo server"
  t0=$(now)
  wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "$in_url" > "$work/wrk.out"
  t_wrk=$(now)
  delivered_at_wrk=$(metric sluice_messages_delivered_total)
  wrk_json=$(sed -n 's/^WRK //p' "$work/wrk.out")
  [ -n "$wrk_json" ] || { cat "$work/wrk.out" >&2; echo "wrk printed no summary" >&2; exit 1; }
  say "max: wrk done ($(jq -r .requests <<<"$wrk_json") requests); waiting for the box to empty"
  # Every message the node published, delivered: /metrics (cheap, polled
  # often), then the box itself.
  deadline=$(awk -v t="$t_wrk" -v d="$drain_timeout" 'BEGIN { printf "%d", t + d }')
  published=0
  delivered=0
  last_report=$SECONDS
  while :; do
    published=$(metric sluice_messages_published_total)
    delivered=$(metric sluice_messages_delivered_total)
    [ "$delivered" -ge "$published" ] && box_empty "$work/max" && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "max: the box did not empty within ${drain_timeout}s ($delivered of $published delivered)"
      break
    fi
    if [ $((SECONDS - last_report)) -ge 10 ]; then
      say "max: $delivered of $published delivered"
      last_report=$SECONDS
    fi
    sleep 0.05
  done
  t_empty=$(now)
  suspended=$("$bin" status --json --config "$work/max/sluice.toml" | jq '.suspended')
  stop_node
  rss_kib=$run_rss_kib
  stop_bg "$echo_pid"
  echo_pid=
  max_json=$(jq -c --argjson wrk "$wrk_json" --argjson published "$published" --argjson delivered "$delivered" \
    --argjson suspended "$suspended" --argjson rss "$rss_kib" --argjson at_wrk "$delivered_at_wrk" --arg t0 "$t0" --arg tw "$t_wrk" --arg te "$t_empty" \
    --argjson connections "$connections" --argjson threads "$threads" --argjson size "$size" -n '
    ($wrk.requests - $wrk.errors.status) as $ok |
    ($wrk.duration_us / 1e6) as $secs |
    (($te | tonumber) - ($t0 | tonumber)) as $e2e |
    {connections: $connections, threads: $threads, size: $size, seconds: $secs,
     requests: $wrk.requests, accepted: $ok, accepted_per_s: ($ok / $secs),
     accepted_p50_ms: ($wrk.p50_us / 1000), accepted_p90_ms: ($wrk.p90_us / 1000),
     accepted_p99_ms: ($wrk.p99_us / 1000), accepted_max_ms: ($wrk.max_us / 1000),
     wrk_errors: $wrk.errors,
     published: $published, delivered: $delivered, suspended: $suspended,
     drain_s: (($te | tonumber) - ($tw | tonumber)), end_to_end_s: $e2e, delivered_during_wrk: $at_wrk,
     drain_delivered_per_s: (($delivered - $at_wrk) / (($te | tonumber) - ($tw | tonumber))),
     delivered_per_s: ($delivered / $e2e), node_peak_rss_kib: $rss}')
  results=$(jq -c --argjson m "$max_json" '. + {max: $m}' <<<"$results")
  lines+=("$(jq -r '"max: accepted \(.accepted_per_s | floor) requests/s (wrk: \(.accepted) answered 202 in \(.seconds | . * 10 | round / 10) s, \(.connections) connections; errors \(.wrk_errors | tostring))"' <<<"$max_json")")
  lines+=("$(jq -r '"max: 202 latency p50 \(.accepted_p50_ms) ms, p99 \(.accepted_p99_ms) ms (wrk latency distribution)"' <<<"$max_json")")
  lines+=("$(jq -r '"max: delivered \(.delivered_per_s | floor) messages/s end to end (\(.delivered) of \(.published) published, first request -> box empty \(.end_to_end_s | . * 10 | round / 10) s, drain after wrk \(.drain_s | . * 10 | round / 10) s, suspended \(.suspended))"' <<<"$max_json")")
  lines+=("$(jq -r '"max: of which \(.delivered_during_wrk) delivered while wrk ran, the rest at \(.drain_delivered_per_s | floor) messages/s after it"' <<<"$max_json")")
  lines+=("$(jq -r '"max: node peak RSS \(.node_peak_rss_kib) KiB (\(.node_peak_rss_kib / 1024 | . * 10 | round / 10) MiB, /usr/bin/time -v)"' <<<"$max_json")")
fi

if [[ " $modes " == *" paced "* ]]; then
  receiver_port=$(free_port)
  write_config "$work/paced" "http://127.0.0.1:$receiver_port/deliver"
  start "$work/paced"
  say "paced: sluice bench http --rate $rate --duration ${paced_duration}s to $in_url; deliveries to 127.0.0.1:$receiver_port"
  "$bin" bench http --url "$in_url" --receiver "127.0.0.1:$receiver_port" --rate "$rate" \
    --duration "${paced_duration}s" --size "$size" --connections "$connections" \
    --drain-timeout "${drain_timeout}s" > "$work/bench-http.out" &
  bench_pid=$!
  bench_rc=0
  wait "$bench_pid" || bench_rc=$?
  bench_pid=
  sed '$d' "$work/bench-http.out" >&2
  stop_node
  rss_kib=$run_rss_kib
  paced_json=$(tail -n 1 "$work/bench-http.out")
  jq -e . >/dev/null <<<"$paced_json" || { echo "sluice bench http printed no result (exit $bench_rc)" >&2; exit 1; }
  paced_json=$(jq -c --argjson rss "$rss_kib" '. + {node_peak_rss_kib: $rss}' <<<"$paced_json")
  results=$(jq -c --argjson m "$paced_json" '. + {paced: $m}' <<<"$results")
  lines+=("$(jq -r '"paced: \(.sent) POSTs at \(.rate)/s for \(.duration_s) s: \(.accepted) answered 202, \(.errors) errors \(.outcomes | tostring); 202 latency p50 \(.accept_latency.p50_ms) ms, p99 \(.accept_latency.p99_ms) ms"' <<<"$paced_json")")
  lines+=("$(jq -r '"paced: 202 -> delivered p50 \(.accepted_to_delivered.p50_ms) ms, p99 \(.accepted_to_delivered.p99_ms) ms, max \(.accepted_to_delivered.max_ms) ms (\(.delivered) of \(.accepted) delivered, \(.duplicates) duplicates)"' <<<"$paced_json")")
  lines+=("$(jq -r '"paced: node peak RSS \(.node_peak_rss_kib) KiB (\(.node_peak_rss_kib / 1024 | . * 10 | round / 10) MiB, /usr/bin/time -v)"' <<<"$paced_json")")
  [ "$bench_rc" = 0 ] || say "sluice bench http exited $bench_rc"
fi

if [ "$peers" != none ] && [ -n "$peers" ]; then
  # A peer that fails (a broker that cannot be started) costs its figure,
  # not the run's own: the failure is said and the rest printed.
  say "peers: bench/peers.sh --tools \"$peers\" --rounds 1 --messages $peer_messages --size $size"
  peers_json=$("$repo/bench/peers.sh" --tools "$peers" --rounds 1 --messages "$peer_messages" --size "$size" | tail -n 1) || peers_json=
  if [ -n "$peers_json" ] && jq -e '.summary | length > 0' >/dev/null 2>&1 <<<"$peers_json"; then
    results=$(jq -c --argjson p "$peers_json" '. + {peers: ($p.summary | map_values({version, messages_per_sec: .median_messages_per_sec, peak_rss_kib, server_rss_kib}))}' <<<"$results")
    peer_lines=$(jq -r --arg size "$size" '
      (.max.delivered_per_s // null) as $e2e |
      (if (.max.delivered // 0) < (.max.published // 0) then " (max did not drain: no ratio)" else "" end) as $undrained |
      .peers | to_entries[] |
      "peers: \(.value.version): \(.value.messages_per_sec) messages/s (durable, \($size) bytes, one publisher and one consumer)" +
      (if $e2e == null then "; no max run: no ratio"
       elif $undrained != "" then $undrained
       elif .value.messages_per_sec > 0 then "; max end to end / \(.key) = \($e2e / .value.messages_per_sec * 100 | round / 100)"
       else "" end)' <<<"$results")
    while read -r line; do lines+=("$line"); done <<<"$peer_lines"
  else
    lines+=("peers: bench/peers.sh failed or printed no result: no peer figures (see above)")
    peers_failed=yes
  fi
fi

echo "--- http-throughput ($machine; sluice $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?'))" >&2
printf '%s\n' "${lines[@]}"
jq -c --arg machine "$machine" --arg commit "$(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')" \
  '{bench: "http-throughput", machine: $machine, commit: $commit} + .' <<<"$results"
# The figures are printed either way; the exit status says a peer failed.
[ -z "${peers_failed:-}" ] || exit 1
