#!/usr/bin/env bash
# One large upload (curl -T: a streamed PUT) into an HTTP receive location
# (one-way), delivered by a FILE send port: the time to the 202, the node's
# peak RSS (OS), and a byte-for-byte check of the delivered file. (Issue 4's relay benchmarks,
# request-response and the Node-RED peer, come with request-response.)
#
#   bench/http-receive.sh [SIZE_MIB]      (default 1024)
set -euo pipefail
size_mib=${1:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-http-receive
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/sluice.toml" <<TOML
data_dir = "data"
[receive_ports.web.locations.web-in]
adapter = { type = "http", address = "127.0.0.1:$port", path = "/in", max_body = "4GiB" }
[send_ports.out]
filter = 'receive.port == "web"'
adapter = { type = "file", path = "out", file_name = "big.bin", create_folder = true }
TOML
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/big.bin"
sum=$(sha256sum "$work/big.bin" | cut -d' ' -f1)
/usr/bin/time -v -o "$work/sluice.time" "$bin" serve --config "$work/sluice.toml" 2> "$work/serve.err" &
pid=$!
until grep -q "node running" "$work/serve.err" 2>/dev/null; do sleep 0.1; done
start=$(date +%s.%N)
code=$(curl -sS -o /dev/null -w "%{http_code}" -T "$work/big.bin" "http://127.0.0.1:$port/in")  # -T streams (a PUT)
accepted=$(date +%s.%N)
[ "$code" = 202 ] || { echo "answer $code" >&2; exit 1; }
until [ -f "$work/out/big.bin" ]; do sleep 0.2; done
delivered=$(date +%s.%N)
kill -TERM "$(node_pid)"; wait "$pid" || true
[ "$(sha256sum "$work/out/big.bin" | cut -d' ' -f1)" = "$sum" ] || { echo "delivered file differs" >&2; exit 1; }
rss=$(grep "Maximum resident set size" "$work/sluice.time" | awk '{print $NF}')
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "{\"bench\":\"http-receive\",\"bytes\":$((size_mib * 1024 * 1024)),\"post_to_202_seconds\":$(secs "$start" "$accepted"),\"post_to_delivered_seconds\":$(secs "$start" "$delivered"),\"sluice_peak_rss_kib\":$rss,\"identical\":true}"
