#!/usr/bin/env bash
# Suspended messages in bulk (issue 5): COUNT small files are dropped at once
# while the `deliver` port's folder is missing (create_folder off, 1 retry
# 200 ms later), so every one is suspended and its fault message goes to a
# fault handler (faults/). Then, with the node still running, out/ is made
# and `sluice suspended list --json` and `sluice suspended resume --all` run
# under /usr/bin/time: each one's time and peak RSS, and how long until every
# file is in out/ and the box is empty.
#
#   bench/suspended-bulk.sh [COUNT] [SIZE_BYTES]      (default 20000 1024)
set -euo pipefail
count=${1:-20000}
size=${2:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-suspended-bulk

echo "making $count files of $size bytes" >&2
random_files "$work/stage" "$count" "$size"

config="$work/sluice.toml"
cat > "$config" <<'EOF'
data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*" }

[send_ports.deliver]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = false }
retry = { count = 1, interval = "200ms", backoff = 1 }

[send_ports.fault-handler]
filter = 'fault.message_id exists'
adapter = { type = "file", path = "faults", file_name = "%MessageId%.fault", create_folder = true }
EOF
status() { "$bin" status --json --config "$config"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
rss_of() { grep "Maximum resident set size" "$1" | awk '{print $NF}'; }

mkdir -p "$work/in"
start_node "$config"
start=$(date +%s.%N)
rmdir "$work/in" && mv "$work/stage" "$work/in"
until [ "$(status | jq .suspended)" = "$count" ] && [ "$(visible_files "$work/faults")" = "$count" ]; do sleep 1; done
suspend_secs=$(secs "$start" "$(date +%s.%N)")

/usr/bin/time -v -o "$work/list.time" "$bin" suspended list --json --config "$config" > "$work/list.json"
listed=$(jq length "$work/list.json")
list_secs=$(grep "Elapsed (wall clock)" "$work/list.time" | awk '{print $NF}')

mkdir "$work/out"
start=$(date +%s.%N)
/usr/bin/time -v -o "$work/resume.time" "$bin" suspended resume --all --config "$config" > "$work/resume.out" 2>&1
resume_cli_secs=$(secs "$start" "$(date +%s.%N)")
until [ "$(visible_files "$work/out")" = "$count" ] && [ "$(status | jq .spool)" = 0 ]; do sleep 1; done
resume_secs=$(secs "$start" "$(date +%s.%N)")
left=$(status | jq .suspended)
stop_node
echo "files=$count size=$size suspended_after_seconds=$suspend_secs node_peak_rss_kib=$run_rss_kib" \
  "list_entries=$listed list_wall=$list_secs list_peak_rss_kib=$(rss_of "$work/list.time")" \
  "resume_all_cli_seconds=$resume_cli_secs resume_all_peak_rss_kib=$(rss_of "$work/resume.time")" \
  "all_delivered_after_seconds=$resume_secs delivered=$(visible_files "$work/out") suspended_left=$left"
