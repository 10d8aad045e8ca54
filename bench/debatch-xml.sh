#!/usr/bin/env bash
# examples/debatch-xml with one large XML file of orders: how long until the
# interchange is published and every order delivered, and the node's peak RSS
# as the OS reports it.
#
#   bench/debatch-xml.sh [ORDERS]      (default 1000000: a 2 GiB file)
#
# Each order is about 2,150 bytes (a 2 KB note pads it), every third ACME's.
set -euo pipefail
orders=${1:-1000000}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
bench_setup sluice-debatch-bench

echo "making a file of ${orders} orders" >&2
awk -v n="$orders" 'BEGIN {
  pad = ""; for (i = 0; i < 2000; i++) pad = pad sprintf("%c", 97 + i % 26);
  split("ACME Globex Initech", who, " ");
  print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
  print "<Orders xmlns=\"urn:example:orders\" xmlns:x=\"urn:example:extra\">";
  for (i = 1; i <= n; i++)
    printf "  <Order id=\"%d\"><Customer>%s</Customer><Date>2026-11-%02d</Date><x:Note>%s</x:Note><Item sku=\"S-%d\" qty=\"%d\"/></Order>\n",
      i, who[1 + i % 3], 1 + i % 28, pad, i % 9973, 1 + i % 7;
  print "</Orders>" }' > "$work/orders.xml"
bytes=$(stat -c %s "$work/orders.xml")
acme=$(( orders / 3 ))

cp "$repo/examples/debatch-xml/sluice.toml" "$work/sluice.toml"
mkdir -p "$work/in"
/usr/bin/time -v -o "$work/sluice.time" "$bin" serve --config "$work/sluice.toml" 2> "$work/serve.err" &
pid=$!
until grep -q "node running" "$work/serve.err" 2>/dev/null; do sleep 0.1; done
start=$(date +%s.%N)
mv "$work/orders.xml" "$work/in/"
until grep -q "interchange published" "$work/serve.err"; do
  grep -q "it is suspended as received" "$work/serve.err" && { grep "suspended as received" "$work/serve.err" >&2; exit 1; }
  sleep 0.5
done
published=$(date +%s.%N)
count() { find "$work/$1" -maxdepth 1 -name '*.xml' 2>/dev/null | wc -l; }
until [ "$(count out)" -ge "$orders" ] && [ "$(count acme)" -ge "$acme" ]; do sleep 5; done
delivered=$(date +%s.%N)
kill -TERM "$(node_pid)"
wait "$pid" || true
rss=$(grep "Maximum resident set size" "$work/sluice.time" | awk '{print $NF}')
out=$(count out); acme_out=$(count acme)
# Spot check: one order, standalone, with the namespaces in scope.
sample=$(head -c 120 "$work/out/4242.xml")
case "$sample" in
  '<Order id="4242" xmlns="urn:example:orders" xmlns:x="urn:example:extra"><Customer>'*) ;;
  *) echo "unexpected record: $sample" >&2; exit 1 ;;
esac
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "{\"bench\":\"debatch-xml\",\"input_bytes\":$bytes,\"orders\":$orders,\"out_files\":$out,\"acme_files\":$acme_out,\"published_seconds\":$(secs "$start" "$published"),\"delivered_seconds\":$(secs "$start" "$delivered"),\"sluice_peak_rss_kib\":$rss}"
