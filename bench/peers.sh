#!/usr/bin/env bash
# Sluice's durable messaging beside RabbitMQ's and NATS JetStream's, in one
# run on this machine: each publishes N messages of SIZE bytes while one
# consumer takes and acks them, and the figure is messages/s from the first
# publish until every ack is in.
#
#   bench/peers.sh [--messages N] [--size BYTES] [--window W] [--rounds R]
#                  [--tools "sluice rabbitmq nats"]
#
# (or the environment: MESSAGES (default 200000), SIZE (1024), WINDOW (1000),
# ROUNDS (1), TOOLS; a flag wins.)
#
# sluice    `sluice bench messaging --messages N --size SIZE`: the embedded
#           box in a fresh temporary directory, every publish and ack fsync'd
#           before it is answered (256 concurrent publishers, one consumer
#           leasing 512 at a time, an ack per message), tracking on.
# rabbitmq  bench/peers (`sluice-bench-peers rabbitmq`, lapin): a durable
#           queue, persistent messages, publisher confirms with W in flight,
#           one consumer with prefetch W acking each message.
# nats      bench/peers (`sluice-bench-peers nats`, async-nats): a JetStream
#           stream with file storage (work-queue retention), publish acks with
#           W in flight, one durable pull consumer with explicit acks
#           (max_ack_pending W). nats-server fsyncs on its own interval, not
#           per message.
#
# bench/peers is its own cargo workspace (built here, release). The brokers
# are the ones this machine runs on 127.0.0.1 (RabbitMQ 5672, guest/guest;
# NATS 4222 with JetStream); one that does not answer is started (as the
# machine starts it) and stopped again at the end; one that cannot be
# reached stops the run with an error. Peak RSS: each program's own, from
# /usr/bin/time -v ("Maximum resident set size"); the broker's resident
# memory is sampled every 100 ms during its run (highest VmRSS), for scale:
# Sluice's figure holds its whole box, a peer's only its client.
# Rounds run the tools in turn (sluice, rabbitmq, nats, sluice, ...); the
# table shows each run and the medians, the ratios are of the medians.
# Progress on stderr; the table and a last line of JSON on stdout.
set -euo pipefail
messages=${MESSAGES:-200000}
size=${SIZE:-1024}
window=${WINDOW:-1000}
rounds=${ROUNDS:-1}
tools=${TOOLS:-sluice rabbitmq nats}
while [ $# -gt 0 ]; do
  case $1 in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
  [ $# -ge 2 ] || { echo "$1 needs a value (see --help)" >&2; exit 2; }
  case $1 in
    --messages) messages=$2 ;;
    --size) size=$2 ;;
    --window) window=$2 ;;
    --rounds) rounds=$2 ;;
    --tools) tools=$2 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
for t in $tools; do
  case $t in sluice | rabbitmq | nats) ;; *) echo "unknown tool: $t (sluice, rabbitmq, nats)" >&2; exit 2 ;; esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
say() { echo "peers: $*" >&2; }
has() { [[ " $tools " == *" $1 "* ]]; }

need_tools "jq jq" "/usr/bin/time time" "ss iproute2"

started_rabbitmq=
started_nats=
cleanup() {
  if [ -n "$started_rabbitmq" ]; then
    say "stopping the RabbitMQ this run started"
    rabbitmqctl stop >/dev/null 2>&1 || true
  fi
  if [ -n "$started_nats" ] && [ -f "$work/nats.pid" ]; then
    say "stopping the nats-server this run started"
    kill -TERM "$(cat "$work/nats.pid")" 2>/dev/null || true
  fi
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# listener PORT: the pid of the process listening on 127.0.0.1:PORT.
listener() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2; }

# ensure NAME PORT PACKAGE PROGRAM COMMAND...: start the broker with COMMAND
# if PORT does not answer (installing PACKAGE if PROGRAM is missing); fail if
# it still does not answer after 90 s.
ensure() {
  local name=$1 port=$2 pkg=$3 program=$4
  shift 4
  port_open "$port" && return 0
  need_tools "$program $pkg"
  say "$name is not answering on 127.0.0.1:$port; starting it: $*"
  "$@" >&2 || { echo "peers: could not start $name ($*)" >&2; exit 1; }
  for _ in $(seq 1 90); do port_open "$port" && return 0; sleep 1; done
  echo "peers: $name does not answer on 127.0.0.1:$port after 90 s" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-peers.XXXXXX")
if has rabbitmq; then
  port_open 5672 || started_rabbitmq=yes
  ensure RabbitMQ 5672 rabbitmq-server rabbitmq-server rabbitmq-server -detached
fi
if has nats; then
  port_open 4222 || started_nats=yes
  mkdir -p /var/lib/nats-server
  ensure NATS 4222 nats-server nats-server start-stop-daemon --start --oknodo --background --make-pidfile \
    --pidfile "$work/nats.pid" --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js \
    -sd /var/lib/nats-server -l /var/log/nats-server.log
fi

say "building sluice and bench/peers (release)"
if has sluice; then
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
fi
if has rabbitmq || has nats; then
  cargo build --release --quiet --manifest-path "$repo/bench/peers/Cargo.toml"
fi
bin="${CARGO_TARGET_DIR:-$repo/target}/release/sluice"
peers="${CARGO_TARGET_DIR:-$repo/bench/peers/target}/release/sluice-bench-peers"

version() {
  case $1 in
    sluice) echo "sluice $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')" ;;
    rabbitmq) echo "RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '?')" ;;
    nats) echo "nats-server $(nats-server --version 2>/dev/null | sed 's/^nats-server: //' || echo '?')" ;;
  esac
}

# run TOOL: one run under /usr/bin/time -v; prints its result as one JSON object.
run() {
  local tool=$1 out=$work/$1.out time=$work/$1.time rss json server_pid
  case $tool in
    sluice)
      /usr/bin/time -v -o "$time" "$bin" bench messaging --messages "$messages" --size "$size" > "$out" \
        || { cat "$out" >&2; echo "peers: sluice bench messaging failed" >&2; exit 1; }
      ;;
    rabbitmq | nats)
      local port=5672
      [ "$tool" = nats ] && port=4222
      port_open "$port" || { echo "peers: $tool does not answer on 127.0.0.1:$port" >&2; exit 1; }
      server_pid=$(listener "$port")
      /usr/bin/time -v -o "$time" "$peers" "$tool" --messages "$messages" --size "$size" --window "$window" \
        ${server_pid:+--server-pid "$server_pid"} > "$out" \
        || { cat "$out" >&2; echo "peers: $tool failed" >&2; exit 1; }
      ;;
  esac
  sed '$d' "$out" >&2
  json=$(tail -n 1 "$out")
  rss=$(grep "Maximum resident set size" "$time" | awk '{print $NF}')
  jq -c --arg tool "$tool" --arg version "$(version "$tool")" --argjson rss "$rss" '{
      tool: $tool, version: $version, messages_per_sec, p50_ms: (.p50_ms // .publish_to_consume_p50_ms),
      p99_ms: (.p99_ms // .publish_to_consume_p99_ms), seconds, peak_rss_kib: $rss,
      server_rss_kib: (.server_rss_kib // null)}' <<<"$json"
}

results=()
for r in $(seq 1 "$rounds"); do
  for t in $tools; do
    say "round $r of $rounds: $t ($messages messages of $size bytes)"
    results+=("$(run "$t")")
  done
done

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r)"
all=$(printf '%s\n' "${results[@]}" | jq -cs .)
summary=$(jq -c '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  group_by(.tool) | map({key: .[0].tool, value: {
    version: .[0].version,
    runs: map(.messages_per_sec | floor),
    median_messages_per_sec: (map(.messages_per_sec) | median | floor),
    peak_rss_kib: (map(.peak_rss_kib) | max),
    server_rss_kib: (map(.server_rss_kib) | max)}}) | from_entries' <<<"$all")
ratios=$(jq -c '
  if .sluice then
    .sluice.median_messages_per_sec as $s
    | [to_entries[] | select(.key != "sluice") | {key: ("sluice_over_" + .key),
        value: (.value.median_messages_per_sec as $p | if $p > 0 then ($s / $p * 100 | round / 100) else null end)}]
    | from_entries
  else {} end' <<<"$summary")

echo "--- peers: $messages durable messages of $size bytes, one consumer, end to end ($machine)"
printf '%-9s %-28s %12s %10s %14s %16s %18s\n' tool version "messages/s" "peer/sluice" "p50 / p99 ms" "peak RSS (own)" "broker RSS (max)"
jq -r --argjson s "$summary" '.[] |
  [.tool, .version, (.messages_per_sec | floor | tostring),
   (if $s.sluice and .tool != "sluice" then (.messages_per_sec / $s.sluice.median_messages_per_sec * 100 | round / 100 | tostring) + "x" else "-" end),
   ((.p50_ms * 10 | round / 10 | tostring) + " / " + (.p99_ms * 10 | round / 10 | tostring)),
   ((.peak_rss_kib / 1024 * 10 | round / 10 | tostring) + " MiB"),
   (if .server_rss_kib then (.server_rss_kib / 1024 * 10 | round / 10 | tostring) + " MiB" else "-" end)] | @tsv' <<<"$all" |
  while IFS=$'\t' read -r a b c d e f g; do printf '%-9s %-28s %12s %10s %14s %16s %18s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g"; done
jq -r 'to_entries[] | "median \(.key): \(.value.median_messages_per_sec) messages/s (runs: \(.value.runs | map(tostring) | join(", ")))"' <<<"$summary"
jq -r 'to_entries[] | "Sluice / \(.key | ltrimstr("sluice_over_")): \(.value)"' <<<"$ratios"
echo "(latency: sluice from publish start to ack committed, peers from publish to consumed)"
jq -cn --arg machine "$machine" --argjson messages "$messages" --argjson size "$size" --argjson window "$window" \
  --argjson runs "$all" --argjson summary "$summary" --argjson ratios "$ratios" \
  '{bench: "peers", machine: $machine, messages: $messages, size: $size, window: $window,
    runs: $runs, summary: $summary, ratios: $ratios}'
