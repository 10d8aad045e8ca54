#!/usr/bin/env bash
# A backlog with every send port stopped (issue 3): COUNT small files are
# dropped into in/ at once on the quickstart with both send ports
# `enabled = false`. Phase 1 waits until every file is received and queued
# (in/ empty, spool = COUNT) and stops the node; phase 2 restarts it with the
# ports enabled and waits until all COUNT are in out/ and the box is empty.
# Reports each phase's time and peak RSS (OS) and the box's size on disk.
#
#   bench/stopped-ports.sh [COUNT] [SIZE_BYTES]      (default 200000 1024)
set -euo pipefail
count=${1:-200000}
size=${2:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-stopped-ports

echo "making $count files of $size bytes" >&2
random_files "$work/stage" "$count" "$size"
[ "$(ls -f "$work/stage" | grep -c '^f')" = "$count" ]

config="$work/sluice.toml"
cp "$repo/examples/quickstart/sluice.toml" "$config"
sed -i 's/^\[send_ports\.\(out\|xml\)\]$/&\nenabled = false/' "$config"
[ "$(grep -c '^enabled = false' "$config")" = 2 ]
spool() { "$bin" status --json --config "$config" | jq .spool; }

# Phase 1: drop everything at once (one directory rename) with the ports stopped.
mkdir -p "$work/in"
start_node "$config"
start=$(date +%s.%N)
rmdir "$work/in" && mv "$work/stage" "$work/in"
until [ "$(visible_files "$work/in")" = 0 ] && [ "$(spool)" = "$count" ]; do sleep 2; done
end=$(date +%s.%N)
queued=$("$bin" status --json --config "$config" | jq -c '{spool, suspended, queued}')
stop_node
p1_secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
p1_rss=$run_rss_kib
box_mib=$(du -sm "$work/data" | cut -f1)
[ -z "$(ls -A "$work/out" 2>/dev/null)" ] || { echo "a stopped port delivered" >&2; exit 1; }

# Phase 2: start the ports.
sed -i '/^enabled = false$/d' "$config"
start_node "$config"
start=$(date +%s.%N)
until [ "$(visible_files "$work/out")" = "$count" ] && [ "$(spool)" = 0 ]; do sleep 2; done
end=$(date +%s.%N)
stop_node
p2_secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "phase 1 (ports stopped): $queued"
echo "files=$count size=$size receive_seconds=$p1_secs receive_peak_rss_kib=$p1_rss box_mib=$box_mib" \
  "deliver_seconds=$p2_secs deliver_peak_rss_kib=$run_rss_kib delivered=$(visible_files "$work/out")"
