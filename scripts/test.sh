#!/usr/bin/env bash
# Run Sluice's whole test suite, doing its own set-up first.
#
#   ./scripts/test.sh            # what CI runs (.ci/run)
#
# Checks `cargo fmt` and `cargo clippy -D warnings` first (the tests run
# either way; the script fails if any failed).
#
# Set-up: the tests need the Rust toolchain, `mount` and root (one test puts
# the data directory on a tiny tmpfs to fill the disk for real). Tests of
# adapters for external services (PostgreSQL, RabbitMQ, ...) arrive with
# their issues; this script starts such services when they are installed but
# stopped, and installs them from Debian packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
# Debian packages; waits up to 5 minutes for another apt (an unattended
# upgrade on a fresh machine) to let go of its lock.
apt_install() {
  apt-get -o DPkg::Lock::Timeout=300 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@"
}

command -v cargo >/dev/null || { echo "cargo is missing: install the Rust toolchain (rustup)" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "warning: not root; the full-disk test (tmpfs mount) will fail" >&2
fi

# Services the test suite talks to: "name port start-command debian-package".
# None yet: the core uses only the embedded SQLite box. Later issues add lines.
SERVICES=()

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Command-line tools the end-to-end tests drive: "command debian-package".
# Debian's Chromium and ChromeDriver drive the portal's browser tests.
TOOLS=("gzip gzip" "curl curl" "chromium chromium" "chromedriver chromium-driver" "ssh-keygen openssh-client")
for tool in "${TOOLS[@]}"; do
  read -r cmd pkg <<<"$tool"
  command -v "$cmd" >/dev/null 2>&1 && continue
  say "installing $pkg"
  apt_install "$pkg"
done

# OpenSSH's sshd serves SFTP to the SFTP adapter's tests (each test starts
# its own on a free port); /usr/sbin may not be on a non-root PATH.
if [ ! -x /usr/sbin/sshd ]; then
  say "installing openssh-server"
  apt_install openssh-server
fi

# Dovecot serves IMAP and POP3 to the mail adapters' tests (kit::dovecot
# starts its own on free ports); the system service the package may start
# is not needed.
if [ ! -x /usr/sbin/dovecot ]; then
  say "installing dovecot-core dovecot-imapd dovecot-pop3d"
  apt_install dovecot-core dovecot-imapd dovecot-pop3d
  service dovecot stop >/dev/null 2>&1 || systemctl stop dovecot >/dev/null 2>&1 || true
fi

# vsftpd serves FTPS with implicit TLS to the FTP adapter's tests
# (kit::vsftpd starts its own on free ports, as root: it makes a
# throwaway system user); the system service the package may start is not
# needed.
if [ ! -x /usr/sbin/vsftpd ]; then
  say "installing vsftpd"
  apt_install vsftpd
  service vsftpd stop >/dev/null 2>&1 || systemctl stop vsftpd >/dev/null 2>&1 || true
fi

# Python tools the tests drive, in a virtual environment of their own under
# target/ (pinned versions, from PyPI): schemathesis fuzzes the REST API
# against its OpenAPI document; aiosmtpd is the SMTP server the SMTP
# adapter's tests send to (kit::smtpd).
TOOLS_VENV=target/tools/venv
PY_TOOLS="schemathesis==4.32.5 aiosmtpd==1.4.6"
if [ "$(cat "$TOOLS_VENV/.installed" 2>/dev/null)" != "$PY_TOOLS" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "installing python3-venv"
    apt_install python3-venv
  fi
  say "installing $PY_TOOLS into $TOOLS_VENV"
  rm -rf "$TOOLS_VENV"
  python3 -m venv "$TOOLS_VENV"
  # shellcheck disable=SC2086
  "$TOOLS_VENV/bin/pip" install -q $PY_TOOLS
  echo "$PY_TOOLS" > "$TOOLS_VENV/.installed"
fi
export SLUICE_PYTHON="$PWD/$TOOLS_VENV/bin/python"
export SLUICE_SCHEMATHESIS="$PWD/$TOOLS_VENV/bin/schemathesis"

for svc in "${SERVICES[@]}"; do
  read -r name port start pkg <<<"$svc"
  if port_open "$port"; then continue; fi
  if ! command -v "${start%% *}" >/dev/null 2>&1; then
    say "installing $pkg for $name"
    apt_install "$pkg"
  fi
  say "starting $name"
  eval "$start"
  for _ in $(seq 1 60); do port_open "$port" && break; sleep 1; done
  port_open "$port" || { echo "$name did not start on port $port" >&2; exit 1; }
done

status=0
# Formatting and lints first (STYLE.md); the tests run either way, and the
# script fails if any of the three did.
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && continue
  say "installing the $component component"
  rustup component add "$component"
done
say "cargo fmt --all -- --check"
cargo fmt --all -- --check || { echo "formatting differs: run cargo fmt --all" >&2; status=1; }
say "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings || status=1

say "cargo test --workspace --release"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, whatever failed before it.
cargo test --workspace --release --locked --no-fail-fast 2>&1 | tee "$log" || status=1
# One closing line for the whole run (cargo ends on its last doc-test
# binary, which has no tests): the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
