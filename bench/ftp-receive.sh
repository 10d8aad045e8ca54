#!/usr/bin/env bash
# FTP -> box -> FILE with small files: COUNT files of SIZE bytes waiting on
# pyftpdlib (a third-party FTP server, from PyPI; installed with pip when
# missing) on this machine; an FTP receive location (MLSD listings, claim by
# rename, RETR, DELE after the publish) takes them and a FILE port writes
# them out. Timed from when the files appear until all COUNT are in out/,
# the server's folder is empty and the box is empty; every file compared
# with its source. Beside it, in the same run, the peer: Python's ftplib
# fetching the same files on one connection (RETR only: no claim, no
# delete, no box). Prints files/s, the ratio, the node's CPU per file and
# its peak RSS (/usr/bin/time -v).
#
#   bench/ftp-receive.sh [COUNT] [SIZE_BYTES]      (default 2000 1024)
# (SLUICE_BIN=PATH: run that binary.)
set -euo pipefail
count=${1:-2000}
size=${2:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
need_tools "jq jq" "python3 python3"
bench_setup sluice-ftp-receive

dir="$work/run"
mkdir -p "$dir" "$work/served/outbox" "$work/served/peer"
random_files "$work/sources" "$count" "$size"
cp "$work/sources"/* "$work/served/peer/"

start_pyftpdlib "$work/served"
port=$ftp_port password=$ftp_password

cat > "$dir/sluice.toml" <<CFG
data_dir = "data"
[receive_ports.remote.locations.outbox]
adapter = { type = "ftp", url = "ftp://bench@127.0.0.1:$port/outbox", password_env = "BENCH_FTP_PASSWORD", poll_interval = "200ms" }
[send_ports.down]
filter = 'receive.port == "remote"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }
CFG
export BENCH_FTP_PASSWORD="$password"
start_node "$dir/sluice.toml" "$dir"
node=$(node_pid)
cp -r "$work/sources" "$work/served/outbox.fill"
rmdir "$work/served/outbox"
c0=$(cpu_ticks "$node"); t0=$(date +%s.%N)
mv "$work/served/outbox.fill" "$work/served/outbox"
until [ "$(visible_files "$dir/out")" = "$count" ] && [ -z "$(ls -A "$work/served/outbox")" ]; do sleep 0.2; done
until [ "$("$bin" status --json --config "$dir/sluice.toml" | jq '.spool')" = 0 ]; do sleep 0.2; done
t1=$(date +%s.%N); c1=$(cpu_ticks "$node")
stop_node
differ=0
for f in "$work/sources"/*; do cmp -s "$f" "$dir/out/$(basename "$f")" || differ=$((differ + 1)); done

# The peer: ftplib, one connection, RETR of each file of peer/.
peer_secs=$(BENCH_PORT=$port BENCH_PW=$password BENCH_DIR="$work/peer-got" python3 - <<'PY'
import ftplib, os, time
os.makedirs(os.environ["BENCH_DIR"], exist_ok=True)
f = ftplib.FTP()
f.connect("127.0.0.1", int(os.environ["BENCH_PORT"]))
f.login("bench", os.environ["BENCH_PW"])
f.cwd("peer")
t0 = time.time()
for name in f.nlst():
    with open(os.path.join(os.environ["BENCH_DIR"], name), "wb") as out:
        f.retrbinary("RETR " + name, out.write)
print(time.time() - t0)
f.quit()
PY
)
echo "--- ftp-receive ($(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ *//"), Linux $(uname -r); $("$bin" --version); pyftpdlib $(python3 -c 'import pyftpdlib; print(pyftpdlib.__ver__)'))"
awk -v n="$count" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v rss="$run_rss_kib" \
  -v differ="$differ" -v peer="$peer_secs" \
  'BEGIN { printf "FTP -> FILE: %d files of '"$size"' bytes in %.1f s: %.0f files/s (node CPU %.0f us per file); ftplib RETR on one connection: %.0f files/s; ratio %.2f; node peak RSS %.1f MiB; %d differ\n", n, b - a, n / (b - a), c / hz / n * 1e6, n / peer, (n / (b - a)) / (n / peer), rss / 1024, differ }'
[ "$differ" = 0 ]
