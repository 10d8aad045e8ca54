#!/usr/bin/env bash
# An HTTP relay, request-response, in Sluice and in Node-RED (the peer), in
# the same run on the same machine: a client POSTs a body (streamed, curl -T)
# to the relay, the relay POSTs it to `sluice dev echo-server` on
# http://127.0.0.1:8481/echo and answers the client with the echo's answer.
#
#   bench/http-relay.sh [SIZE_MIB] [CLIENTS] [EACH_MIB]     (default 1024 64 50)
#
# Scenarios, each run for every tool in $TOOLS (default "sluice nodered") on
# the same input files, each with a fresh relay process under /usr/bin/time -v
# (its peak RSS is the OS's figure):
#   large            one POST of SIZE_MIB MiB of random bytes,
#                    Content-Type: application/octet-stream. Correct: status
#                    200 and the answer byte-identical (SHA-256) to the body.
#   gzip-concurrent  CLIENTS concurrent POSTs, each the gzip of the same
#                    EACH_MIB MiB of base64 text (random bytes, so gzip gets
#                    it to about 3/4), Content-Encoding: gzip, Content-Type
#                    $GZIP_CONTENT_TYPE (default application/octet-stream).
#                    Correct: every answer has status 200 and carries the
#                    original content, in one of two forms, counted apart in
#                    the result:
#                      "decoded"           the decompressed original, not
#                                          labelled gzip (Sluice decodes the
#                                          body on the way in, so it answers
#                                          this);
#                      "gzip_passthrough"  exactly the gzip bytes sent (a relay
#                                          that carries the body as opaque
#                                          bytes: Node-RED; "gzip_labelled"
#                                          counts those answered with
#                                          Content-Encoding: gzip).
#                    Anything else (other bytes, the original labelled gzip)
#                    is "wrong".
# Seconds: wall time from the first request sent to the last answer received
# (answers are written to files and hashed after the clock stops).
#
# Output: one JSON line per (tool, scenario) on stdout; progress and, at the
# end, a table on stderr. A relay that fails (does not start, dies, runs out
# of memory, answers an error or a wrong body, a client times out after
# $REQUEST_TIMEOUT s) is recorded as that result ("ok": false, "error"), and
# the run goes on.
#
# Sluice: `sluice serve` on a copy of examples/http-relay/sluice.toml in the
# scratch folder (it listens on http://127.0.0.1:8480/relay; data_dir "data"
# is beside the copy).
#
# Node-RED: version $NODERED_VERSION (default 4.1.15: the newest 4.x; 5.x needs
# Node.js >= 22.9), installed with npm once into
# ${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}/node-red-VERSION, run with
# `node` under NODE_OPTIONS=$NODERED_NODE_OPTIONS (default
# --max-old-space-size=8192; request bodies are Buffers, outside that heap),
# headless (bench/nodered/settings.js: no editor, no admin API), on
# http://127.0.0.1:$NODERED_PORT/relay (default 1880), with the flow
# bench/nodered/flows.json: `http in` (POST /relay) -> `http request` (POST
# http://127.0.0.1:8481/echo, answer as a binary Buffer) -> `http response`.
# What Node-RED 4.1 does with these requests (read in its source,
# @node-red/nodes/core/network/21-httpin.js and 21-httprequest.js, and tried):
#   - Size: the `http in` node reads an application/octet-stream body with
#     raw-body and no limit, whole, into one Buffer; the `http request` node
#     (got, responseType buffer) reads the echo's answer whole too, and the
#     `http response` node sends it with res.send (Content-Length, ETag). So
#     no 413 for octet-stream, whatever the size: memory grows with the body.
#     The limit that exists, apiMaxLength (default 5mb), is only for JSON and
#     urlencoded bodies, counted after gzip is inflated; above it body-parser
#     fails with PayloadTooLargeError, which the `http in` node logs and
#     answers with a 500 (not a 413). The settings raise it to 2gb anyway.
#     The `http request` timeout (httpRequestTimeout, default 120 s) is raised
#     to an hour.
#   - Content-Encoding: gzip with Content-Type application/octet-stream: not
#     inflated. The gzip bytes go to the echo as they came, with neither
#     Content-Encoding nor Content-Type (the flow does not copy the client's
#     headers), and come back to the client unlabelled, as
#     application/octet-stream: "gzip_passthrough". It does no decompression
#     work, which Sluice does. With a text/* Content-Type, or none, the same
#     gzip bytes are decoded as UTF-8 text and the answer is garbage ("wrong";
#     try GZIP_CONTENT_TYPE=text/plain). JSON and urlencoded bodies would be
#     inflated and parsed by body-parser.
#
# Also: TOOLS (which relays, in order), SLUICE_BENCH_CACHE, NODERED_VERSION,
# NODERED_PORT, NODERED_NODE_OPTIONS, GZIP_CONTENT_TYPE, REQUEST_TIMEOUT.
set -euo pipefail
size_mib=${1:-1024}
clients=${2:-64}
each_mib=${3:-50}
tools=${TOOLS:-sluice nodered}
nodered_version=${NODERED_VERSION:-4.1.15}
nodered_port=${NODERED_PORT:-1880}
nodered_node_options=${NODERED_NODE_OPTIONS:---max-old-space-size=8192}
gzip_content_type=${GZIP_CONTENT_TYPE:-application/octet-stream}
request_timeout=${REQUEST_TIMEOUT:-1800}
cache=${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}
echo_port=8481
sluice_url=http://127.0.0.1:8480/relay
nodered_url=http://127.0.0.1:$nodered_port/relay
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"

for t in $tools; do
  case $t in sluice | nodered) ;; *) echo "unknown tool in TOOLS: $t (sluice, nodered)" >&2; exit 2 ;; esac
done

echo_pid=
relay_pid= # the /usr/bin/time running the relay under test
client_pids=()
results=()
# Replaces lib.sh's trap: stop whatever is running (clients, relay, echo
# server), then remove the scratch folder.
cleanup() {
  local p
  for p in "${client_pids[@]}"; do
    pkill -TERM -P "$p" 2>/dev/null || true # its curl
    kill -TERM "$p" 2>/dev/null || true
  done
  [ -n "$relay_pid" ] && stop_relay
  if [ -n "$echo_pid" ]; then
    kill -TERM "$echo_pid" 2>/dev/null || true
    wait "$echo_pid" 2>/dev/null || true
  fi
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
say() { echo "http-relay: $*" >&2; }

# wait_for FILE PATTERN PID SECONDS: until FILE has PATTERN; fails if PID
# (or, for /usr/bin/time, the program under it) ends first, or on timeout.
wait_for() {
  local deadline=$((SECONDS + $4))
  until grep -q "$2" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# The program /usr/bin/time runs (signals go to it, not to time).
relay_child() { pgrep -P "$relay_pid" || true; }

# start_relay TOOL RUN_DIR: start TOOL's relay under /usr/bin/time -v (report
# in RUN_DIR/relay.time, output in RUN_DIR/relay.log); wait until it serves.
# Fails (with $start_error) if it cannot be started.
start_relay() {
  local tool=$1 run=$2
  relay_run=$run
  mkdir -p "$run"
  : > "$run/relay.log"
  start_error=
  relay_child_pid=
  case $tool in
    sluice)
      [ -f "$repo/examples/http-relay/sluice.toml" ] || { start_error="no examples/http-relay/sluice.toml"; return 1; }
      cp "$repo/examples/http-relay/sluice.toml" "$run/sluice.toml"
      /usr/bin/time -v -o "$run/relay.time" "$bin" serve --config "$run/sluice.toml" > "$run/relay.log" 2>&1 &
      relay_pid=$!
      wait_for "$run/relay.log" "node running" "$relay_pid" 60 || start_error="sluice serve did not start (see its log below)"
      ;;
    nodered)
      [ -n "$nodered_red" ] || { start_error="Node-RED $nodered_version could not be installed"; return 1; }
      cp "$repo/bench/nodered/settings.js" "$repo/bench/nodered/flows.json" "$run/"
      NODE_OPTIONS=$nodered_node_options NODERED_PORT=$nodered_port \
        /usr/bin/time -v -o "$run/relay.time" node "$nodered_red" --settings "$run/settings.js" --userDir "$run" \
        > "$run/relay.log" 2>&1 &
      relay_pid=$!
      wait_for "$run/relay.log" "Started flows" "$relay_pid" 120 || start_error="Node-RED did not start (see its log below)"
      ;;
  esac
  if [ -n "$start_error" ]; then
    stop_relay
    tail -n 20 "$run/relay.log" >&2 || true
    return 1
  fi
  relay_child_pid=$(relay_child)
  idle_rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$relay_child_pid/status" 2>/dev/null || true)
}

# stop_relay: SIGTERM the relay (SIGKILL after 30 s), wait for it. Sets
# relay_rss (peak RSS, KiB, or null) and relay_died (true when it had ended
# before being stopped).
stop_relay() {
  local child=${relay_child_pid:-$(relay_child)}
  relay_died=false
  relay_child_pid=
  if [ -z "$child" ] || ! kill -0 "$child" 2>/dev/null; then
    relay_died=true
  else
    kill -TERM "$child" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$child" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$child" 2>/dev/null || true
  fi
  wait "$relay_pid" 2>/dev/null || true
  relay_pid=
  relay_rss=$(grep -s "Maximum resident set size" "$relay_run/relay.time" | awk '{print $NF}' || true)
  relay_rss=${relay_rss:-null}
}

# post URL OUT FILE [CURL ARGS...]: one streamed POST of FILE (curl -T, with
# Content-Length); answer in OUT.body, headers in OUT.headers, status in
# OUT.code, curl's exit code in OUT.rc. Never fails.
post() {
  local url=$1 out=$2 file=$3 rc=0
  shift 3
  curl -sS --max-time "$request_timeout" -X POST -T "$file" -D "$out.headers" -o "$out.body" \
    -w '%{http_code}' "$@" "$url" > "$out.code" 2> "$out.err" || rc=$?
  echo "$rc" > "$out.rc"
}

# classify OUT: the form of one gzip-scenario answer: decoded,
# gzip_passthrough, gzip_labelled (passthrough with Content-Encoding: gzip),
# wrong, or "status_CODE" / "curl_RC" for a failed exchange.
classify() {
  local out=$1 code rc sum labelled=false
  rc=$(cat "$out.rc")
  code=$(cat "$out.code" 2>/dev/null || true)
  [ "$rc" = 0 ] || { echo "curl_$rc"; return; }
  [ "$code" = 200 ] || { echo "status_$code"; return; }
  grep -qi '^content-encoding:[[:space:]]*gzip' "$out.headers" && labelled=true
  sum=$(sha "$out.body")
  if [ "$sum" = "$plain_sum" ] && [ "$labelled" = false ]; then echo decoded
  elif [ "$sum" = "$gz_sum" ] && [ "$labelled" = true ]; then echo gzip_labelled
  elif [ "$sum" = "$gz_sum" ]; then echo gzip_passthrough
  else echo wrong
  fi
}

# record JSON: print one result line and keep it for the table.
record() {
  echo "$1"
  results+=("$1")
}

# error_result TOOL SCENARIO REQUESTS BODY_BYTES ERROR: the line for a relay
# that could not be started.
error_result() {
  record "$(jq -cn --arg tool "$1" --arg version "$(tool_version "$1")" --arg scenario "$2" \
    --argjson requests "$3" --argjson body "$4" --arg error "$5" \
    '{bench:"http-relay",tool:$tool,version:$version,scenario:$scenario,requests:$requests,
      body_bytes:$body,bytes:($requests*$body),seconds:null,peak_rss_kib:null,ok:false,error:$error}')"
}

tool_version() {
  case $1 in
    sluice) echo "$sluice_version" ;;
    nodered) echo "node-red $nodered_version (node $(node --version 2>/dev/null || echo none), $nodered_node_options)" ;;
  esac
}

# run_large TOOL URL
run_large() {
  local tool=$1 url=$2 run="$work/$1-large"
  say "$tool: large, ${size_mib} MiB"
  start_relay "$tool" "$run" || { error_result "$tool" large 1 "$large_bytes" "$start_error"; return; }
  local start end rc code sum="" resp_bytes=null
  start=$(now)
  # In the background, so that a signal to this script is handled at once.
  post "$url" "$run/answer" "$work/large.bin" -H "Content-Type: application/octet-stream" &
  client_pids=($!)
  wait "${client_pids[0]}" || true
  end=$(now)
  client_pids=()
  stop_relay
  rc=$(cat "$run/answer.rc")
  code=$(cat "$run/answer.code" 2>/dev/null || true)
  if [ -f "$run/answer.body" ]; then
    sum=$(sha "$run/answer.body")
    resp_bytes=$(stat -c %s "$run/answer.body")
    rm -f "$run/answer.body"
  fi
  local identical=false error=""
  [ "$sum" = "$large_sum" ] && identical=true
  if [ "$rc" != 0 ]; then error="curl exit $rc: $(head -c 300 "$run/answer.err")"
  elif [ "$code" != 200 ]; then error="status $code"
  elif [ "$identical" = false ]; then error="answer differs from the body sent"
  fi
  [ "$relay_died" = true ] && error="${error:+$error; }relay died: $(head -n 1 "$run/relay.time" 2>/dev/null)"
  record "$(jq -cn --arg tool "$tool" --arg version "$(tool_version "$tool")" --argjson body "$large_bytes" \
    --arg seconds "$(secs "$start" "$end")" --argjson rss "$relay_rss" --argjson idle "${idle_rss_kib:-null}" \
    --arg status "$code" --argjson resp "$resp_bytes" --argjson identical "$identical" \
    --argjson died "$relay_died" --arg error "$error" \
    '{bench:"http-relay",tool:$tool,version:$version,scenario:"large",requests:1,body_bytes:$body,
      bytes:$body,seconds:($seconds|tonumber),peak_rss_kib:$rss,idle_rss_kib:$idle,
      ok:($error==""),status:$status,response_bytes:$resp,identical:$identical,relay_died:$died}
     + (if $error=="" then {} else {error:$error} end)')"
}

# run_gzip TOOL URL
run_gzip() {
  local tool=$1 url=$2 run="$work/$1-gzip"
  say "$tool: gzip-concurrent, $clients x ${each_mib} MiB (gzip: $gz_bytes bytes each)"
  start_relay "$tool" "$run" || { error_result "$tool" gzip-concurrent "$clients" "$plain_bytes" "$start_error"; return; }
  local start end i
  client_pids=()
  start=$(now)
  for i in $(seq 1 "$clients"); do
    post "$url" "$run/answer-$i" "$work/each.gz" \
      -H "Content-Type: $gzip_content_type" -H "Content-Encoding: gzip" &
    client_pids+=($!)
  done
  for i in "${client_pids[@]}"; do wait "$i" || true; done
  end=$(now)
  client_pids=()
  stop_relay
  local forms=()
  for i in $(seq 1 "$clients"); do
    forms+=("$(classify "$run/answer-$i")")
    rm -f "$run/answer-$i.body"
  done
  local error=""
  [ "$relay_died" = true ] && error="relay died: $(head -n 1 "$run/relay.time" 2>/dev/null)"
  local first_err
  first_err=$(cat "$run"/answer-*.err 2>/dev/null | head -n 1 | head -c 300 || true)
  record "$(printf '%s\n' "${forms[@]}" | jq -cRn --arg tool "$tool" --arg version "$(tool_version "$tool")" \
    --argjson requests "$clients" --argjson body "$plain_bytes" --argjson gz "$gz_bytes" \
    --arg content_type "$gzip_content_type" \
    --arg seconds "$(secs "$start" "$end")" --argjson rss "$relay_rss" --argjson idle "${idle_rss_kib:-null}" \
    --argjson died "$relay_died" --arg error "$error" --arg curl_error "$first_err" '
    [inputs] as $f
    | ($f | map(select(. == "decoded" or . == "gzip_passthrough" or . == "gzip_labelled")) | length) as $good
    | {bench:"http-relay",tool:$tool,version:$version,scenario:"gzip-concurrent",requests:$requests,
       body_bytes:$body,gzip_bytes:$gz,content_type:$content_type,bytes:($requests*$body),
       seconds:($seconds|tonumber),peak_rss_kib:$rss,idle_rss_kib:$idle,
       ok:($good == $requests and $error == ""),
       answers:($f | group_by(.) | map({key:.[0], value:length}) | from_entries),
       relay_died:$died}
    + (if $error != "" then {error:$error}
       elif $good != $requests then {error:("\($requests - $good) of \($requests) answers not correct"
            + (if $curl_error != "" then "; curl: " + $curl_error else "" end))}
       else {} end)')"
}

bench_setup sluice-http-relay
sluice_version="$("$bin" --version) ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown))"

nodered_red=
if [[ " $tools " == *" nodered "* ]]; then
  nodered_dir="$cache/node-red-$nodered_version"
  if [ ! -f "$nodered_dir/node_modules/node-red/red.js" ]; then
    say "installing node-red@$nodered_version into $nodered_dir"
    mkdir -p "$nodered_dir"
    npm install --prefix "$nodered_dir" --no-audit --no-fund --omit=optional "node-red@$nodered_version" >&2 || true
  fi
  [ -f "$nodered_dir/node_modules/node-red/red.js" ] && nodered_red="$nodered_dir/node_modules/node-red/red.js"
fi

say "making the inputs"
large_bytes=$((size_mib * 1024 * 1024))
head -c "$large_bytes" /dev/urandom > "$work/large.bin"
large_sum=$(sha "$work/large.bin")
plain_bytes=$((each_mib * 1024 * 1024))
head -c $((plain_bytes * 3 / 4)) /dev/urandom | base64 -w 76 > "$work/each.txt"
truncate -s "$plain_bytes" "$work/each.txt"
gzip -6 -n -c "$work/each.txt" > "$work/each.gz"
plain_sum=$(sha "$work/each.txt")
gz_sum=$(sha "$work/each.gz")
gz_bytes=$(stat -c %s "$work/each.gz")
rm -f "$work/each.txt"

"$bin" dev echo-server --port "$echo_port" > "$work/echo.out" 2> "$work/echo.err" &
echo_pid=$!
wait_for "$work/echo.out" "echo server listening" "$echo_pid" 30 \
  || { echo "the echo server did not start:" >&2; cat "$work/echo.err" >&2; exit 1; }

for tool in $tools; do
  case $tool in sluice) run_large sluice "$sluice_url" ;; nodered) run_large nodered "$nodered_url" ;; esac
done
rm -f "$work/large.bin"
for tool in $tools; do
  case $tool in sluice) run_gzip sluice "$sluice_url" ;; nodered) run_gzip nodered "$nodered_url" ;; esac
done

{
  echo
  printf '%-8s %-16s %9s %10s %9s %14s  %s\n' tool scenario requests "MiB each" seconds "peak RSS MiB" result
  for r in "${results[@]}"; do
    jq -r '[.tool, .scenario, (.requests|tostring), (.body_bytes/1048576|tostring),
            (if .seconds == null then "-" else (.seconds|tostring) end),
            (if .peak_rss_kib == null then "-" else (.peak_rss_kib/1024*10|round/10|tostring) end),
            (if .ok then "ok" else "FAILED" end
             + (if .answers then " " + (.answers|to_entries|map("\(.key) \(.value)")|join(", ")) else "" end)
             + (if .error then ": " + .error else "" end))] | @tsv' <<< "$r" \
      | awk -F'\t' '{ printf "%-8s %-16s %9s %10s %9s %14s  %s\n", $1, $2, $3, $4, $5, $6, $7 }'
  done
} >&2
