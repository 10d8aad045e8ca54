#!/usr/bin/env bash
# FILE -> box -> FTP with small files: COUNT files of SIZE bytes dropped into
# in/ at once; an FTP send port uploads each to pyftpdlib (a third-party FTP
# server, from PyPI; installed with pip when missing) on this machine, as
# `.sluice-tmp.*` then renamed. Timed from the drop until all COUNT are in
# the server's folder and the box is empty; every file is compared with its
# source. Prints files/s, the node's CPU per file, its peak RSS
# (/usr/bin/time -v) and the server's CPU per file.
#
#   bench/ftp-send.sh [COUNT] [SIZE_BYTES]      (default 5000 1024)
# (SLUICE_BIN=PATH: run that binary; SEND_CONCURRENCY=N: the port's
# `concurrency` and `max_connections`, unset: the defaults, 4.)
set -euo pipefail
count=${1:-5000}
size=${2:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
need_tools "jq jq" "python3 python3"
bench_setup sluice-ftp-send


dir="$work/run"
mkdir -p "$dir/in" "$work/served/inbound"
random_files "$dir/stage" "$count" "$size"
cp -r "$dir/stage" "$work/sources"

start_pyftpdlib "$work/served"
port=$ftp_port password=$ftp_password

cat > "$dir/sluice.toml" <<CFG
data_dir = "data"
[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*" }
[send_ports.out]
filter = 'receive.port == "in"'
adapter = { type = "ftp", url = "ftp://bench@127.0.0.1:$port/inbound", password_env = "BENCH_FTP_PASSWORD", file_name = "%SourceFileName%"${SEND_CONCURRENCY:+, max_connections = $SEND_CONCURRENCY} }
${SEND_CONCURRENCY:+concurrency = $SEND_CONCURRENCY}
CFG
export BENCH_FTP_PASSWORD="$password"
start_node "$dir/sluice.toml" "$dir"
node=$(node_pid)
c0=$(cpu_ticks "$node")
f0=$(cpu_ticks "$ftp_pid")
t0=$(date +%s.%N)
rmdir "$dir/in" && mv "$dir/stage" "$dir/in"
until [ "$(visible_files "$work/served/inbound")" = "$count" ]; do sleep 0.2; done
until [ "$("$bin" status --json --config "$dir/sluice.toml" | jq '.spool')" = 0 ]; do sleep 0.2; done
t1=$(date +%s.%N)
c1=$(cpu_ticks "$node")
f1=$(cpu_ticks "$ftp_pid")
stop_node
differ=0
for f in "$work/sources"/*; do
  cmp -s "$f" "$work/served/inbound/$(basename "$f")" || differ=$((differ + 1))
done
left=$(find "$work/served/inbound" -maxdepth 1 -name '.sluice-*' | wc -l)
echo "--- ftp-send ($(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ *//"), Linux $(uname -r); $bin, $("$bin" --version); pyftpdlib $(python3 -c 'import pyftpdlib; print(pyftpdlib.__ver__)'))"
awk -v n="$count" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v fc="$((f1 - f0))" -v hz="$(getconf CLK_TCK)" -v rss="$run_rss_kib" \
  -v differ="$differ" -v left="$left" -v conc="${SEND_CONCURRENCY:-default}" \
  'BEGIN { printf "FILE -> FTP (concurrency %s): %d files of '"$size"' bytes in %.1f s: %.0f files/s, %.1f MiB/s; node CPU %.1f s (%.0f us per file), FTP server CPU %.1f s (%.0f us per file); node peak RSS %.1f MiB; %d differ, %d temporary files left\n", conc, n, b - a, n / (b - a), n * '"$size"' / (b - a) / 1048576, c / hz, c / hz / n * 1e6, fc / hz, fc / hz / n * 1e6, rss / 1024, differ, left }'
[ "$differ" = 0 ] && [ "$left" = 0 ]
