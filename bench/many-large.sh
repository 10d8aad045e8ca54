#!/usr/bin/env bash
# Many large files at once (issue 3): COUNT files of SIZE_MIB each are moved
# into in/ in one go, on the quickstart with the default host budget
# (256 MiB in flight) and /metrics on. Checks that every file arrives in out/
# byte-identical, shows the throttle engaging (from /metrics, scraped every
# second during the run), and reports the node's peak RSS from the OS.
#
#   bench/many-large.sh [COUNT] [SIZE_MIB]      (default 500 20)
set -euo pipefail
count=${1:-500}
size_mib=${2:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-many-large
size=$((size_mib * 1024 * 1024))

# Distinct files, cheaply: a 64-byte header naming the file, then shared random bytes.
echo "making $count files of ${size_mib} MiB" >&2
head -c "$((size - 64))" /dev/urandom > "$work/tail.bin"
mkdir -p "$work/stage" "$work/in"
for i in $(seq 1 "$count"); do
  { printf '%-64s' "file $i"; cat "$work/tail.bin"; } > "$work/stage/f$i.bin"
done

cp "$repo/examples/quickstart/sluice.toml" "$work/sluice.toml"
printf '\n[metrics]\naddress = "127.0.0.1:0"\n' >> "$work/sluice.toml"
start_node "$work/sluice.toml"
addr=$(metrics_address "$work/data")
scrape() { curl -sf "http://$addr/metrics" || true; }

start=$(date +%s.%N)
mv "$work/stage/"* "$work/in/"
peak_bytes=0; peak_in_flight=0; throttled_seen=0
while [ "$(ls "$work/out" 2>/dev/null | wc -l)" -lt "$count" ] || [ -n "$(ls -A "$work/in")" ]; do
  m=$(scrape)
  b=$(awk '/^sluice_bytes_in_flight\{host="default"\}/ {print $2}' <<<"$m")
  n=$(awk '/^sluice_messages_in_flight\{host="default"\}/ {print $2}' <<<"$m")
  t=$(awk '/^sluice_throttled\{host="default"\}/ {print $2}' <<<"$m")
  [ "${b:-0}" -gt "$peak_bytes" ] && peak_bytes=$b
  [ "${n:-0}" -gt "$peak_in_flight" ] && peak_in_flight=$n
  [ "${t:-0}" = 1 ] && throttled_seen=$((throttled_seen + 1))
  sleep 1
done
end=$(date +%s.%N)
engagements=$(scrape | grep '^sluice_throttle_engagements_total{host="default"' | tr '\n' ' ')
stop_node

bad=0
for i in $(seq 1 "$count"); do
  cmp -s <(printf '%-64s' "file $i"; cat "$work/tail.bin") "$work/out/f$i.bin" || bad=$((bad + 1))
done
[ "$bad" = 0 ] || { echo "$bad output files differ from their input" >&2; exit 1; }
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "engagements: $engagements"
echo "files=$count size_mib=$size_mib seconds=$secs delivered=$(ls "$work/out" | wc -l) identical=yes" \
  "peak_rss_kib=$run_rss_kib peak_bytes_in_flight=$peak_bytes peak_messages_in_flight=$peak_in_flight" \
  "scrapes_throttled=$throttled_seen"
