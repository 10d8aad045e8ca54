#!/usr/bin/env bash
# One large file through the quickstart (FILE in -> box -> FILE out, twice if
# named .xml): peak RSS of `sluice serve` as the OS reports it, and a byte
# comparison of the output.
#
#   bench/file-large.sh [SIZE_MIB]      (default 2048)
set -euo pipefail
size_mib=${1:-2048}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-file-large
echo "making a ${size_mib} MiB file" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/big.bin"
in_sum=$(sha256sum "$work/big.bin" | cut -d' ' -f1)
timed_drop "$repo/examples/quickstart/sluice.toml" "$work/big.bin" big.bin
out_sum=$(sha256sum "$work/out/big.bin" | cut -d' ' -f1)
[ "$in_sum" = "$out_sum" ] || { echo "output differs from input" >&2; exit 1; }
echo "size_mib=$size_mib seconds=$run_secs peak_rss_kib=$run_rss_kib identical=yes"
