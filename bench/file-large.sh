#!/usr/bin/env bash
# One large file through the quickstart (FILE in -> box -> FILE out, twice if
# named .xml): peak RSS of `sluice serve` as the OS reports it, and a byte
# comparison of the output.
#
#   bench/file-large.sh [SIZE_MIB]      (default 2048)
set -euo pipefail
size_mib=${1:-2048}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sluice"
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-file-large.XXXXXX")
node_pid() { pgrep -P "$pid" -f "sluice serve" || true; }
trap 'kill -TERM $(node_pid) 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$repo/examples/quickstart/sluice.toml" "$work/"
mkdir -p "$work/in"
echo "making a ${size_mib} MiB file" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/big.bin"
in_sum=$(sha256sum "$work/big.bin" | cut -d' ' -f1)
/usr/bin/time -v -o "$work/time.txt" "$bin" serve --config "$work/sluice.toml" 2> "$work/serve.err" &
pid=$!
until grep -q "node running" "$work/serve.err" 2>/dev/null; do sleep 0.1; done
start=$(date +%s.%N)
mv "$work/big.bin" "$work/in/big.bin"
until [ -f "$work/out/big.bin" ]; do sleep 0.2; done
end=$(date +%s.%N)
until [ -z "$(ls -A "$work/in")" ]; do sleep 0.2; done
kill -TERM "$(node_pid)"; wait "$pid" || true
rss=$(grep "Maximum resident set size" "$work/time.txt" | awk '{print $NF}')
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
out_sum=$(sha256sum "$work/out/big.bin" | cut -d' ' -f1)
[ "$in_sum" = "$out_sum" ] || { echo "output differs from input" >&2; exit 1; }
echo "size_mib=$size_mib seconds=$secs peak_rss_kib=$rss identical=yes"
