#!/usr/bin/env bash
# Slow and hostile clients beside a normal load (issue 11): `sluice bench
# hostile` sends an open-loop load of 1 KiB POSTs (RATE/s, default 500, on up
# to 64 keep-alive connections from 127.0.0.1; latency from each request's
# scheduled send time) to an HTTP one-way receive location, while SLOW
# connections (default 1000) misbehave, each opened again when the server
# closes it. Target: the normal load's p99 under 100 ms with no errors, the
# node's RSS at most 64 MiB, its open files bounded.
#
#   bench/hostile.sh [DURATION_S] [SLOW]      (default 30 1000)
#
# Scenarios (SCENARIOS, default "baseline headers body idle"), each on a fresh
# node under /usr/bin/time -v (peak RSS is the OS's figure), the slow
# connections opened during 2 s before the normal load starts:
#   baseline   the normal load alone
#   headers    slowloris: a request line, then one header byte every 5 s
#   body       whole headers with Content-Length: 1048576, then one body
#              byte every 5 s
#   idle       connect, send nothing
#   MODE-1src  (not run by default) MODE with every slow connection from one
#              address, SLOW_ONE_SOURCE (default 127.0.1.1)
# Slow connections come from SLOW_SOURCE (default 127.0.1.0/24: spread over
# 254 loopback addresses, so a cap of connections per client address does not
# simply refuse them).
#
# Sluice: `sluice serve` with an HTTP one-way receive location on
# 127.0.0.1:PORT/in (header_timeout, idle_timeout... at their defaults; add
# keys with ADAPTER_EXTRA, e.g. ADAPTER_EXTRA='max_connections = 2000') and a
# FILE send port writing out/.
# Node-RED (the peer, TOOLS="sluice nodered", the default; installed with npm
# as bench/http-relay.sh does, into
# ${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}/node-red-VERSION): the flow
# bench/nodered/hostile-flows.json, `http in` POST /in -> `http response`
# 202, settings bench/nodered/settings.js, on 127.0.0.1:$NODERED_PORT. It
# stores nothing (Sluice answers 202 only once the body is durably in its
# box), so it is the cheaper job; what compares is how each copes with the
# slow connections.
#
# The open-file soft limit of this shell (so of the servers) is raised to its
# hard limit (NOFILE overrides); each result records the server's limit.
#
# Output: one JSON line per (tool, scenario) on stdout; progress and a table
# on stderr. Also: RATE, TOOLS, SCENARIOS, SLOW_SOURCE, SLOW_ONE_SOURCE,
# ADAPTER_EXTRA, NODERED_VERSION, NODERED_PORT, NOFILE, SLUICE_BENCH_CACHE.
set -euo pipefail
duration=${1:-30}
slow=${2:-1000}
rate=${RATE:-500}
tools=${TOOLS:-sluice nodered}
scenarios=${SCENARIOS:-baseline headers body idle}
slow_source=${SLOW_SOURCE:-127.0.1.0/24}
slow_one_source=${SLOW_ONE_SOURCE:-127.0.1.1}
adapter_extra=${ADAPTER_EXTRA:-}
nodered_version=${NODERED_VERSION:-4.1.15}
nodered_port=${NODERED_PORT:-1880}
cache=${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"

for t in $tools; do
  case $t in sluice | nodered) ;; *) echo "unknown tool in TOOLS: $t (sluice, nodered)" >&2; exit 2 ;; esac
done
for s in $scenarios; do
  case ${s%-1src} in baseline | headers | body | idle) ;; *) echo "unknown scenario: $s" >&2; exit 2 ;; esac
done

server_pid= # the /usr/bin/time running the server under test
client_pid= # the `sluice bench hostile` running
results=()
# Replaces lib.sh's trap: stop the client and the server, remove the scratch folder.
cleanup() {
  if [ -n "$client_pid" ]; then
    kill -TERM "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
  fi
  [ -n "$server_pid" ] && stop_server
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "hostile [${SECONDS}s]: $*" >&2; }
ulimit -Sn "${NOFILE:-$(ulimit -Hn)}" 2>/dev/null || say "could not raise the open-file limit (now $(ulimit -Sn))"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for FILE PATTERN PID SECONDS: until FILE has PATTERN; fails if PID ends
# first, or on timeout.
wait_for() {
  local deadline=$((SECONDS + $4))
  until grep -q "$2" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# start_server TOOL RUN_DIR: start TOOL under /usr/bin/time -v (report in
# RUN_DIR/server.time, log in RUN_DIR/server.log), wait until it serves; sets
# url, child (the server's own pid) and nofile (its open-file limit).
start_server() {
  local tool=$1 run=$2 port
  mkdir -p "$run"
  : > "$run/server.log"
  server_run=$run
  case $tool in
    sluice)
      port=$(free_port)
      cat > "$run/sluice.toml" <<TOML
data_dir = "data"
[receive_ports.web.locations.web-in]
adapter = { type = "http", address = "127.0.0.1:$port", path = "/in"${adapter_extra:+, $adapter_extra} }
[send_ports.out]
filter = 'receive.port == "web"'
adapter = { type = "file", path = "out", create_folder = true }
TOML
      /usr/bin/time -v -o "$run/server.time" "$bin" serve --config "$run/sluice.toml" > "$run/server.log" 2>&1 &
      server_pid=$!
      wait_for "$run/server.log" "node running" "$server_pid" 60 || { tail -n 20 "$run/server.log" >&2; return 1; }
      ;;
    nodered)
      port=$nodered_port
      cp "$repo/bench/nodered/settings.js" "$run/"
      cp "$repo/bench/nodered/hostile-flows.json" "$run/flows.json"
      NODERED_PORT=$port /usr/bin/time -v -o "$run/server.time" node "$nodered_red" --settings "$run/settings.js" \
        --userDir "$run" > "$run/server.log" 2>&1 &
      server_pid=$!
      wait_for "$run/server.log" "Started flows" "$server_pid" 120 || { tail -n 20 "$run/server.log" >&2; return 1; }
      ;;
  esac
  url=http://127.0.0.1:$port/in
  child=$(pgrep -P "$server_pid")
  nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$child/limits")
}

# stop_server: SIGTERM the server (SIGKILL after 30 s), wait for it; sets
# peak_rss_kib (the OS's figure) and died (true if it had ended by itself).
stop_server() {
  local c
  c=$(pgrep -P "$server_pid" || true)
  died=false
  if [ -z "$c" ]; then
    died=true
  else
    kill -TERM "$c" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$c" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$c" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  peak_rss_kib=$(grep -s "Maximum resident set size" "$server_run/server.time" | awk '{print $NF}' || true)
  peak_rss_kib=${peak_rss_kib:-null}
}

tool_version() {
  case $1 in
    sluice) echo "$sluice_version" ;;
    nodered) echo "node-red $nodered_version (node $(node --version 2>/dev/null || echo none))" ;;
  esac
}

# run TOOL SCENARIO
run() {
  local tool=$1 scenario=$2 run="$work/$1-$2" mode source n=$slow
  mode=${scenario%-1src}
  source=$slow_source
  [ "$mode" != "$scenario" ] && source=$slow_one_source
  [ "$mode" = baseline ] && { n=0; mode=headers; }
  say "$tool: $scenario ($n slow connections, ${rate}/s for ${duration}s)"
  if ! start_server "$tool" "$run"; then
    [ -n "$server_pid" ] && stop_server
    record "$(jq -cn --arg tool "$tool" --arg scenario "$scenario" \
      '{bench:"hostile",tool:$tool,scenario:$scenario,ok:false,error:"the server did not start"}')"
    return
  fi
  local rc=0
  say "$tool: $scenario: server running"
  # In the background, so that a signal to this script is handled at once.
  "$bin" bench hostile --url "$url" --slow "$n" --slow-mode "$mode" --slow-source "$source" \
    --rate "$rate" --duration "${duration}s" --pid "$child" --json > "$run/result.json" 2> "$run/bench.err" &
  client_pid=$!
  wait "$client_pid" || rc=$?
  client_pid=
  say "$tool: $scenario: load done, stopping the server"
  stop_server
  if [ "$rc" != 0 ] || ! jq -e . "$run/result.json" > /dev/null 2>&1; then
    cat "$run/bench.err" >&2
    record "$(jq -cn --arg tool "$tool" --arg scenario "$scenario" --arg e "$(tail -n 1 "$run/bench.err")" \
      '{bench:"hostile",tool:$tool,scenario:$scenario,ok:false,error:$e}')"
    return
  fi
  sed -n '/^normal/,$p' "$run/bench.err" >&2
  record "$(jq -c --arg tool "$tool" --arg version "$(tool_version "$tool")" --arg scenario "$scenario" \
    --argjson rss "$peak_rss_kib" --argjson died "$died" --argjson nofile "${nofile:-null}" \
    '{bench:"hostile",tool:$tool,version:$version,scenario:$scenario,
      peak_rss_kib:$rss,server_died:$died,nofile_limit:$nofile,
      normal:.normal,slow:.slow,node:(.node|del(.series)),series:.node.series}
     | . + {targets:{p99_under_100ms:((.normal.p99_ms // 1e9) < 100),
                     no_errors:(.normal.errors == 0 and .normal.ok == .normal.sent),
                     rss_at_most_64mib:(($rss // 1e12) <= 65536)}}' "$run/result.json")"
}

# record JSON: print one result line and keep it for the table.
record() {
  echo "$1"
  results+=("$1")
}

bench_setup sluice-hostile
sluice_version="$("$bin" --version) ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ", changed"))"

nodered_red=
if [[ " $tools " == *" nodered "* ]]; then
  nodered_dir="$cache/node-red-$nodered_version"
  if [ ! -f "$nodered_dir/node_modules/node-red/red.js" ]; then
    say "installing node-red@$nodered_version into $nodered_dir"
    mkdir -p "$nodered_dir"
    npm install --prefix "$nodered_dir" --no-audit --no-fund --omit=optional "node-red@$nodered_version" >&2 || true
  fi
  if [ -f "$nodered_dir/node_modules/node-red/red.js" ]; then
    nodered_red="$nodered_dir/node_modules/node-red/red.js"
  else
    say "Node-RED $nodered_version could not be installed; leaving it out"
    tools=${tools//nodered/}
  fi
fi

for tool in $tools; do
  for scenario in $scenarios; do
    run "$tool" "$scenario"
  done
done

{
  echo
  printf '%-8s %-12s %6s %6s %6s %8s %8s %8s %6s %8s %8s %7s %7s  %s\n' \
    tool scenario sent ok errors "p50 ms" "p99 ms" "max ms" "slow" closed reopens "fds" "RSS MiB" targets
  for r in "${results[@]}"; do
    jq -r 'if .ok == false then [.tool, .scenario, "FAILED: " + .error] | @tsv else
      [.tool, .scenario, (.normal.sent|tostring), (.normal.ok|tostring), (.normal.errors|tostring),
       (.normal.p50_ms // "-" | tostring), (.normal.p99_ms // "-" | tostring), (.normal.max_ms // "-" | tostring),
       (.slow.connections|tostring), (.slow.closed_by_server|tostring), (.slow.reopens|tostring),
       (.node.max_fds // "-" | tostring),
       (if .peak_rss_kib == null then "-" else (.peak_rss_kib/1024*10|round/10|tostring) end),
       (if .tool != "sluice" then "(peer)" + (if .server_died then " DIED" else "" end) else
        [(if .targets.p99_under_100ms then "p99" else "P99!" end),
         (if .targets.no_errors then "errors" else "ERRORS!" end),
         (if .targets.rss_at_most_64mib then "rss" else "RSS!" end),
         (if .server_died then "DIED" else empty end)] | join(" ") end)] | @tsv end' <<< "$r" \
      | awk -F'\t' 'NF == 3 { printf "%-8s %-12s %s\n", $1, $2, $3; next }
          { printf "%-8s %-12s %6s %6s %6s %8s %8s %8s %6s %8s %8s %7s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 }'
  done
  for tool in $tools; do
    printf '%s\n' "${results[@]}" | jq -rs --arg tool "$tool" '
      map(select(.tool == $tool and .peak_rss_kib != null)) | select(length > 0)
      | "\($tool): max peak RSS over the runs \((map(.peak_rss_kib) | max) / 1024 * 10 | round / 10) MiB, most open files \(map(.node.max_fds // 0) | max) (limit \(.[0].nofile_limit))"'
  done
  echo "(Sluice's targets: normal p99 < 100 ms, no errors, peak RSS <= 64 MiB; \"!\" marks a miss. closed: slow"
  echo " connections the server closed; fds: the server's most open files, sampled each second; RSS: peak, from the OS)"
} >&2
