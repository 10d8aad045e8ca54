# Shared by the bench/*.sh scripts. Expects $repo (the repository root).

pid=
work=
# The `sluice serve` under /usr/bin/time (signals go to it, not to time).
node_pid() { [ -n "$pid" ] && pgrep -P "$pid" -f "sluice serve" || true; }
trap 'kill -TERM $(node_pid) 2>/dev/null || true; [ -n "$work" ] && rm -rf "$work"' EXIT

# bench_setup NAME: build the release binary, set $bin, and make the scratch
# folder $work (removed on exit).
bench_setup() {
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
  bin="$repo/target/release/sluice"
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
}

# start_node CONFIG: run `sluice serve --config CONFIG` under /usr/bin/time -v
# (report in $work/sluice.time, log in $work/serve.err); return once it runs.
start_node() {
  : > "$work/serve.err"
  /usr/bin/time -v -o "$work/sluice.time" "$bin" serve --config "$1" 2> "$work/serve.err" &
  pid=$!
  until grep -q "node running" "$work/serve.err" 2>/dev/null; do sleep 0.1; done
}

# stop_node: SIGTERM the node, wait for it; sets run_rss_kib (peak RSS from the OS).
stop_node() {
  kill -TERM "$(node_pid)"
  wait "$pid" || true
  pid=
  run_rss_kib=$(grep "Maximum resident set size" "$work/sluice.time" | awk '{print $NF}')
}

# metrics_address DATA_DIR: where the running node serves /metrics (from its status.json).
metrics_address() {
  until [ -f "$1/status.json" ]; do sleep 0.1; done
  jq -r '.metrics_address // empty' "$1/status.json"
}

# timed_drop EXAMPLE_CONFIG INPUT_FILE OUTPUT_NAME
# Start a node on a copy of EXAMPLE_CONFIG in $work, move INPUT_FILE into its
# in/, wait for out/OUTPUT_NAME and for in/ to empty, stop the node.
# Sets run_secs (drop to output) and run_rss_kib (peak RSS from the OS).
timed_drop() {
  cp "$1" "$work/sluice.toml"
  mkdir -p "$work/in"
  start_node "$work/sluice.toml"
  local start end
  start=$(date +%s.%N)
  mv "$2" "$work/in/"
  until [ -f "$work/out/$3" ]; do sleep 0.2; done
  end=$(date +%s.%N)
  until [ -z "$(ls -A "$work/in")" ]; do sleep 0.2; done
  stop_node
  run_secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
}
