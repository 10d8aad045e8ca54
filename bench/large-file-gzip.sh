#!/usr/bin/env bash
# examples/large-file-gzip with one large file, beside `gzip -6` on the same
# file in the same run: time, and peak RSS of each as the OS reports it.
#
#   bench/large-file-gzip.sh [SIZE_MIB]      (default 10240 = 10 GiB)
#
# The file is CSV-like text: a 64 MiB block of varied lines repeated to the
# size asked for (gzip's window is 32 KiB, so the repetition does not help it).
set -euo pipefail
size_mib=${1:-10240}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-gzip-bench

echo "making a ${size_mib} MiB file" >&2
awk 'BEGIN { srand(42); for (i = 0; i < 1100000; i++)
  printf "%d,customer-%05d,%s,%d,%.2f,%s\n", i, int(rand() * 99999), "2026-11-" sprintf("%02d", 1 + i % 28) "T" sprintf("%02d:%02d:%02d", i % 24, i % 60, (i * 7) % 60) "Z", int(rand() * 500), rand() * 10000, (rand() < 0.5 ? "open" : "shipped") }' \
  | head -c $((64 * 1024 * 1024)) > "$work/block" || true   # awk stops on SIGPIPE once head has enough
[ "$(stat -c %s "$work/block")" = $((64 * 1024 * 1024)) ] || { echo "could not make the 64 MiB block" >&2; exit 1; }
rm -f "$work/big.csv"
for _ in $(seq 1 $((size_mib / 64))); do cat "$work/block"; done > "$work/big.csv"
rm -f "$work/block"
bytes=$(stat -c %s "$work/big.csv")
in_sum=$(sha256sum "$work/big.csv" | cut -d' ' -f1)

echo "gzip -6" >&2
/usr/bin/time -v -o "$work/gzip.time" gzip -6 -c "$work/big.csv" > "$work/peer.gz"
gzip_secs=$(grep "Elapsed (wall clock)" "$work/gzip.time" | awk '{print $NF}')
gzip_rss=$(grep "Maximum resident set size" "$work/gzip.time" | awk '{print $NF}')
gzip_bytes=$(stat -c %s "$work/peer.gz")
rm -f "$work/peer.gz"

echo "sluice: examples/large-file-gzip" >&2
timed_drop "$repo/examples/large-file-gzip/sluice.toml" "$work/big.csv" big.csv.gz
sluice_secs=$run_secs
sluice_rss=$run_rss_kib
out_bytes=$(stat -c %s "$work/out/big.csv.gz")

echo "checking the output" >&2
out_sum=$(gzip -dc "$work/out/big.csv.gz" | sha256sum | cut -d' ' -f1)
[ "$out_sum" = "$in_sum" ] || { echo "the output does not decompress to the input" >&2; exit 1; }
echo "{\"bench\":\"large-file-gzip\",\"input_bytes\":$bytes,\"gzip_wall\":\"$gzip_secs\",\"gzip_peak_rss_kib\":$gzip_rss,\"gzip_out_bytes\":$gzip_bytes,\"sluice_seconds\":$sluice_secs,\"sluice_peak_rss_kib\":$sluice_rss,\"sluice_out_bytes\":$out_bytes,\"identical\":true}"
