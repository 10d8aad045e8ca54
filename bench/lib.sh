# Shared by the bench/*.sh scripts. Expects $repo (the repository root).

pid=
work=
# The `sluice serve` under /usr/bin/time (signals go to it, not to time).
node_pid() { [ -n "$pid" ] && pgrep -P "$pid" || true; }
# Servers a script started in the background (pids), killed on exit too.
servers=()
bench_cleanup() {
  kill -TERM $(node_pid) 2>/dev/null || true
  local p
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$work" ] && rm -rf "$work"
}
trap bench_cleanup EXIT

# free_port: a free TCP port of 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: return once something listens on 127.0.0.1:PORT.
wait_port() {
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do sleep 0.1; done
}

# start_pyftpdlib ROOT: pyftpdlib (a third-party FTP server, pip-installed
# when missing) serving ROOT to user `bench` on a free port, log in
# $work/ftp.log; sets ftp_port, ftp_password and ftp_pid, returns once it
# listens.
start_pyftpdlib() {
  python3 -c 'import pyftpdlib' 2>/dev/null || python3 -m pip install -q pyftpdlib
  ftp_port=$(free_port)
  ftp_password="bench-$RANDOM$RANDOM"
  python3 -m pyftpdlib -i 127.0.0.1 -p "$ftp_port" -u bench -P "$ftp_password" -w -d "$1" \
    > "$work/ftp.log" 2>&1 &
  ftp_pid=$!
  servers+=("$ftp_pid")
  wait_port "$ftp_port"
}

# bench_setup NAME: build the release binary, set $bin, and make the scratch
# folder $work (removed on exit). SLUICE_BIN=PATH: that binary instead (to
# compare builds), nothing built.
bench_setup() {
  if [ -n "${SLUICE_BIN:-}" ]; then
    bin=$(realpath "$SLUICE_BIN")
  else
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/sluice"
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
}

# start_node CONFIG [DIR]: run `sluice serve --config CONFIG` under
# /usr/bin/time -v (report in DIR/sluice.time, log in DIR/serve.err; DIR is
# $work unless given); return once it runs, fail if it ends first.
start_node() {
  node_dir=${2:-$work}
  : > "$node_dir/serve.err"
  /usr/bin/time -v -o "$node_dir/sluice.time" "$bin" serve --config "$1" 2> "$node_dir/serve.err" &
  pid=$!
  until grep -q "node running" "$node_dir/serve.err" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$node_dir/serve.err" >&2; echo "the node did not start" >&2; return 1; }
    sleep 0.1
  done
}

# stop_node: SIGTERM the node, wait for it; sets run_rss_kib (peak RSS from the OS).
stop_node() {
  kill -TERM "$(node_pid)"
  wait "$pid" || true
  pid=
  run_rss_kib=$(grep "Maximum resident set size" "$node_dir/sluice.time" | awk '{print $NF}')
}

# need_tools "COMMAND PACKAGE"...: install each Debian PACKAGE whose COMMAND is missing.
need_tools() {
  local t cmd pkg
  for t in "$@"; do
    read -r cmd pkg <<<"$t"
    command -v "$cmd" >/dev/null 2>&1 && continue
    echo "installing $pkg" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
  done
}

# random_files DIR COUNT SIZE: COUNT files of SIZE random bytes in DIR
# (made if missing), named f0000000, f0000001, ...
random_files() {
  mkdir -p "$1"
  head -c "$(($2 * $3))" /dev/urandom > "$1/.all.bin"
  split -b "$3" -a 7 -d "$1/.all.bin" "$1/f"
  rm "$1/.all.bin"
}

# visible_files DIR: how many files DIR holds whose names do not start with
# a dot (0 if DIR does not exist yet).
visible_files() { find "$1" -maxdepth 1 -type f ! -name '.*' 2>/dev/null | wc -l; }

# cpu_ticks PID: user + system CPU the process has used, in clock ticks
# (`getconf CLK_TCK` a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# stop_bg PID: SIGTERM a background job of this shell (if PID is set) and wait for it.
stop_bg() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
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
