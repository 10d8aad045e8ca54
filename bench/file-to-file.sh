#!/usr/bin/env bash
# FILE -> box -> FILE with small files, as the quickstart runs them: COUNT
# files of SIZE bytes are dropped into in/ at once (one directory rename);
# a FILE send port writes each to out/. Timed from the drop until all COUNT
# are in out/ and the box is empty. Run once with the send port's default
# `fsync = true` (each file and the folder synced before the message counts
# as delivered) and once with `fsync = false` beside it. Prints files/s,
# the node's CPU per file and its peak RSS (/usr/bin/time -v) for each.
#
#   bench/file-to-file.sh [COUNT] [SIZE_BYTES]      (default 20000 1024)
# (SLUICE_BIN=PATH: run that binary, to compare builds; SEND_CONCURRENCY=N:
# the send port's `concurrency`, unset: the default.)
set -euo pipefail
count=${1:-20000}
size=${2:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
need_tools "jq jq"
bench_setup sluice-file-to-file

run() { # FSYNC
  local dir="$work/fsync-$1"
  mkdir -p "$dir/in"
  random_files "$dir/stage" "$count" "$size"
  cat > "$dir/sluice.toml" <<CFG
data_dir = "data"
[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*" }
[send_ports.out]
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true, fsync = $1 }
${SEND_CONCURRENCY:+concurrency = $SEND_CONCURRENCY}
CFG
  start_node "$dir/sluice.toml" "$dir"
  local node t0 c0 t1 c1
  node=$(node_pid)
  c0=$(cpu_ticks "$node")
  t0=$(date +%s.%N)
  rmdir "$dir/in" && mv "$dir/stage" "$dir/in"
  until [ -d "$dir/out" ] && [ "$(visible_files "$dir/out")" = "$count" ]; do sleep 0.2; done
  until [ "$("$bin" status --json --config "$dir/sluice.toml" | jq '.spool')" = 0 ]; do sleep 0.2; done
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$node")
  stop_node
  awk -v n="$count" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v rss="$run_rss_kib" -v f="$1" \
    'BEGIN { printf "fsync = %s: %d files of '"$size"' bytes in %.1f s: %.0f files/s; node CPU %.1f s (%.0f us per file); node peak RSS %.1f MiB\n", f, n, b - a, n / (b - a), c / hz, c / hz / n * 1e6, rss / 1024 }'
  rm -rf "$dir"
}

echo "--- file-to-file ($(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ *//"), Linux $(uname -r); $bin, $("$bin" --version))"
run true
run false
