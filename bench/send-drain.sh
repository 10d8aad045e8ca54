#!/usr/bin/env bash
# The send side alone: fill a box with N messages of 1 KiB (a FILE receive
# location, the HTTP send port stopped), then start the port by a reload and
# time until its queue is empty; the port posts each to
# `sluice dev echo-server`. Prints msg/s and the node's peak RSS (GNU time).
# usage: bench/send-drain.sh PATH/TO/sluice [N=20000] [CONCURRENCY=8]
# (ECHO_BIN: another sluice binary for the echo server; PERF_OUT=FILE
# records the node with `perf record -g` while it drains.)
set -euo pipefail
SLUICE=$(realpath "$1"); N=${2:-20000}; CONC=${3:-8}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"   # cpu_ticks (its exit trap is replaced below)
ROOT=$(mktemp -d); mkdir -p $ROOT/in
trap 'kill $(jobs -p) 2>/dev/null; rm -rf $ROOT' EXIT
${ECHO_BIN:-$SLUICE} dev echo-server --port 0 > $ROOT/echo.out 2>&1 &
for i in $(seq 50); do grep -q "listening\|http://" $ROOT/echo.out && break; sleep 0.1; done
ECHO=$(grep -o "127.0.0.1:[0-9]*" $ROOT/echo.out | head -1)
write_cfg() {
cat > $ROOT/sluice.toml <<CFG
data_dir = "data"
[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*", settle = "0s", poll_interval = "100ms" }
[send_ports.out]
filter = 'receive.port == "in"'
adapter = { type = "http", url = "http://$ECHO/x" }
concurrency = $CONC
enabled = $1
CFG
}
write_cfg false
SLUICE_LOG=warn /usr/bin/time -v $SLUICE serve --config $ROOT/sluice.toml > $ROOT/node.log 2> $ROOT/node.err &
TIMEPID=$!
sleep 1
python3 - "$ROOT/in" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
body = b"x" * 1024
for i in range(n):
    t = os.path.join(d, f".f{i}.tmp")
    with open(t, "wb") as f: f.write(body)
    os.rename(t, os.path.join(d, f"f{i}.txt"))
PY
while true; do
  s=$($SLUICE status --json --config $ROOT/sluice.toml 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["queued"].get("out",0))')
  [ "$s" -ge "$N" ] && break; sleep 0.5
done
write_cfg true
NODE=$(pgrep -P $TIMEPID)
cpu0=$(cpu_ticks $NODE)
start=$(date +%s.%N)
$SLUICE reload --config $ROOT/sluice.toml > /dev/null
if [ -n "${PERF_OUT:-}" ]; then
  perf record -F 999 ${PERF_ARGS:---call-graph dwarf,16384} -o "$PERF_OUT" -p "$NODE" > /dev/null 2>&1 &
  PERFPID=$!
fi
while true; do
  s=$($SLUICE status --json --config $ROOT/sluice.toml 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["queued"].get("out",0))')
  [ "$s" -eq 0 ] && break; sleep 0.2
done
end=$(date +%s.%N)
cpu1=$(cpu_ticks $NODE)
[ -n "${PERFPID:-}" ] && { kill -INT $PERFPID; wait $PERFPID || true; }
TICKS=$(getconf CLK_TCK)
python3 -c "print(f'drained $N in {$end-$start:.2f} s: {$N/($end-$start):.0f} msg/s (concurrency $CONC); node CPU {($cpu1-$cpu0)/$TICKS:.2f} s, {($cpu1-$cpu0)/$TICKS/$N*1e6:.0f} us per message')" | tee $ROOT/result
cat $ROOT/result >&2
pkill -INT -P $TIMEPID || true; wait $TIMEPID || true
grep -E "Maximum resident|User time|System time|Elapsed|Percent of CPU" $ROOT/node.err || true
