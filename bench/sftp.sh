#!/usr/bin/env bash
# SFTP through the node, against OpenSSH's sshd on this machine, beside
# OpenSSH's own `sftp` client moving the same files in the same run (the
# peer: one connection, put / get, no claim, no rename, no box).
#
#   1. FILE -> box -> SFTP send port: COUNT files of SIZE bytes dropped into
#      in/ at once, timed until all are on the server and the box is empty.
#   2. SFTP receive location -> box -> FILE: COUNT files waiting on the
#      server, timed until all are in out/ and the server's folder is empty.
#   3. One file of BIG_MIB MiB each way: the node's peak RSS.
# Every file is compared with its source. Prints files/s (and the peer's),
# the node's CPU per file and its peak RSS (/usr/bin/time -v).
#
#   bench/sftp.sh [COUNT] [SIZE_BYTES] [BIG_MIB]     (default 2000 1024 256)
# (SLUICE_BIN=PATH: run that binary instead of building one.)
set -euo pipefail
count=${1:-2000}
size=${2:-1024}
big_mib=${3:-256}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
need_tools "jq jq" "ssh-keygen openssh-client" "sftp openssh-client"
[ -x /usr/sbin/sshd ] || need_tools "/usr/sbin/sshd openssh-server"
bench_setup sluice-sftp

port=$(free_port)
ssh-keygen -q -t ed25519 -N "" -f "$work/host"
ssh-keygen -q -t ed25519 -N "" -f "$work/client"
cp "$work/client.pub" "$work/authorized_keys"
mkdir -p /run/sshd "$work/served"
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/host
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
CFG
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2> "$work/sshd.log" &
servers+=($!)
wait_port "$port"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host.pub")" > "$work/known_hosts"
user=$(id -un)
url="sftp://$user@127.0.0.1:$port/$work/served"
sftp_peer() { sftp -q -b "$1" -i "$work/client" -o UserKnownHostsFile="$work/known_hosts" -P "$port" "$user@127.0.0.1" > /dev/null; }
now() { date +%s.%N; }
machine="$(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ *//"), Linux $(uname -r); $("$bin" --version); $(/usr/sbin/sshd -V 2>&1 | head -1)"
echo "--- sftp ($machine)"

random_files "$work/sources" "$count" "$size"
dir="$work/run"
mkdir -p "$dir"
cat > "$dir/sluice.toml" <<CFG
data_dir = "data"
[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in", mask = "*" }
[receive_ports.remote.locations.outbox]
adapter = { type = "sftp", url = "$url/outbox", private_key_file = "$work/client", known_hosts = "$work/known_hosts", poll_interval = "200ms" }
[send_ports.up]
filter = 'receive.port == "in"'
adapter = { type = "sftp", url = "$url/inbound", private_key_file = "$work/client", known_hosts = "$work/known_hosts", file_name = "%SourceFileName%", create_folder = true }
[send_ports.down]
filter = 'receive.port == "remote"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }
CFG

compare() { # compare DIR_A DIR_B: how many files of A differ from or are missing in B
  local n=0 f
  for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || n=$((n + 1)); done
  echo "$n"
}

# 1. send
mkdir -p "$dir/in" "$work/served/outbox"
cp -r "$work/sources" "$dir/stage"
start_node "$dir/sluice.toml" "$dir"
node=$(node_pid)
c0=$(cpu_ticks "$node"); t0=$(now)
rmdir "$dir/in" && mv "$dir/stage" "$dir/in"
until [ "$(visible_files "$work/served/inbound")" = "$count" ]; do sleep 0.2; done
until [ "$("$bin" status --json --config "$dir/sluice.toml" | jq '.spool')" = 0 ]; do sleep 0.2; done
t1=$(now); c1=$(cpu_ticks "$node")
send_differ=$(compare "$work/sources" "$work/served/inbound")
send_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
send_cpu=$((c1 - c0))

# 2. receive (the same node)
cp -r "$work/sources" "$work/served/outbox.fill"
rmdir "$work/served/outbox"
c0=$(cpu_ticks "$node"); t0=$(now)
mv "$work/served/outbox.fill" "$work/served/outbox"
until [ "$(visible_files "$dir/out")" = "$count" ] && [ -z "$(ls -A "$work/served/outbox")" ]; do sleep 0.2; done
until [ "$("$bin" status --json --config "$dir/sluice.toml" | jq '.spool')" = 0 ]; do sleep 0.2; done
t1=$(now); c1=$(cpu_ticks "$node")
recv_differ=$(compare "$work/sources" "$dir/out")
recv_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
recv_cpu=$((c1 - c0))
stop_node
small_rss=$run_rss_kib

# The peer: OpenSSH's sftp client, put then get of the same files.
mkdir -p "$work/served/peer" "$work/peer-got"
echo "put $work/sources/* $work/served/peer/" > "$work/put.batch"
echo "get $work/served/peer/* $work/peer-got/" > "$work/get.batch"
t0=$(now); sftp_peer "$work/put.batch"; t1=$(now)
peer_put=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(now); sftp_peer "$work/get.batch"; t1=$(now)
peer_get=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
peer_differ=$(( $(compare "$work/sources" "$work/served/peer") + $(compare "$work/sources" "$work/peer-got") ))

hz=$(getconf CLK_TCK)
awk -v n="$count" -v s="$send_secs" -v r="$recv_secs" -v pp="$peer_put" -v pg="$peer_get" \
  -v sc="$send_cpu" -v rc="$recv_cpu" -v hz="$hz" -v rss="$small_rss" \
  -v sd="$send_differ" -v rd="$recv_differ" -v pd="$peer_differ" 'BEGIN {
  printf "FILE -> SFTP: %d files of '"$size"' bytes in %.1f s: %.0f files/s (node CPU %.0f us per file); OpenSSH sftp put: %.0f files/s; ratio %.2f; %d differ\n", n, s, n / s, sc / hz / n * 1e6, n / pp, (n / s) / (n / pp), sd
  printf "SFTP -> FILE: %d files of '"$size"' bytes in %.1f s: %.0f files/s (node CPU %.0f us per file); OpenSSH sftp get: %.0f files/s; ratio %.2f; %d differ\n", n, r, n / r, rc / hz / n * 1e6, n / pg, (n / r) / (n / pg), rd
  printf "node peak RSS %.1f MiB; the peer: %d differ\n", rss / 1024, pd }'

# 3. one big file each way
rm -rf "$dir/data" "$dir/in" "$dir/out" "$work/served/inbound" "$work/served/outbox"
mkdir -p "$dir/in" "$work/served/outbox"
head -c "$((big_mib * 1048576))" /dev/urandom > "$work/big.bin"
start_node "$dir/sluice.toml" "$dir"
t0=$(now)
cp "$work/big.bin" "$dir/in/.big.tmp" && mv "$dir/in/.big.tmp" "$dir/in/big.bin"
until [ -f "$work/served/inbound/big.bin" ]; do sleep 0.2; done
t1=$(now)
cp "$work/big.bin" "$work/served/big.tmp" && mv "$work/served/big.tmp" "$work/served/outbox/big.bin"
until [ -f "$dir/out/big.bin" ] && [ -z "$(ls -A "$work/served/outbox")" ]; do sleep 0.2; done
t2=$(now)
stop_node
big_same=0
cmp -s "$work/big.bin" "$work/served/inbound/big.bin" && cmp -s "$work/big.bin" "$dir/out/big.bin" && big_same=1
awk -v m="$big_mib" -v a="$t0" -v b="$t1" -v c="$t2" -v rss="$run_rss_kib" -v same="$big_same" 'BEGIN {
  printf "one %d MiB file: out in %.1f s (%.0f MiB/s), in in %.1f s (%.0f MiB/s, the two polls included); node peak RSS %.1f MiB; byte-identical both ways: %s\n", m, b - a, m / (b - a), c - b, m / (c - b), rss / 1024, same ? "yes" : "NO" }'
[ "$send_differ" = 0 ] && [ "$recv_differ" = 0 ] && [ "$big_same" = 1 ]
