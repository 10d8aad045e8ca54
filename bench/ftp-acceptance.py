#!/usr/bin/env python3
"""Issue 17's FTP acceptance runs, with the real binary against third-party
servers on this machine: pyftpdlib (FTP, and FTPS with explicit TLS through
pyOpenSSL; both from PyPI, installed with pip when missing) and OpenSSH's
sshd (Debian's openssh-server).

usage: bench/ftp-acceptance.py PATH/TO/sluice MODE [N]

  big   [MIB=1024]  one file of MIB MiB: FTP -> box -> SFTP, then the same
                    through FTPS (explicit TLS, certificate checked against
                    a CA file). Byte-identical each way; the node's peak RSS
                    (its VmHWM, and GNU time's figure).
  kill  [N=10000]   N small files on the FTP server; two nodes, each with an
                    FTP receive location on that one folder (two readers
                    racing for every file) and a FILE send port to its own
                    out/; node A is killed with SIGKILL twice during the run
                    and restarted. Every file must arrive, none twice across
                    the two, none left on the server (claims included).
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import acceptance  # noqa: E402
from acceptance import Node, free_port, mib, need, same, wait_port  # noqa: E402

SLUICE = os.path.realpath(sys.argv[1])
MODE = sys.argv[2]
ARG = int(sys.argv[3]) if len(sys.argv) > 3 else None
ROOT = tempfile.mkdtemp(prefix="sluice-ftp-acceptance-")
PASSWORD = f"bench-{random.randrange(1 << 30)}"
acceptance.SLUICE = SLUICE
acceptance.ENV = {"BENCH_FTP_PASSWORD": PASSWORD}


FTP_SERVER = r'''
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer
port, root, password, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
auth = DummyAuthorizer()
auth.add_user("bench", password, root, perm="elradfmwMT")
handler = FTPHandler
if tls != "-":
    handler = TLS_FTPHandler
    handler.certfile = tls + "/cert.pem"
    handler.keyfile = tls + "/key.pem"
    handler.tls_control_required = True
    handler.tls_data_required = True
handler.authorizer = auth
handler.banner = "bench"
FTPServer(("127.0.0.1", port), handler).serve_forever()
'''


def ftp_server(root, tls_dir=None):
    port = free_port()
    script = os.path.join(ROOT, "ftp_server.py")
    with open(script, "w") as f:
        f.write(FTP_SERVER)
    proc = subprocess.Popen([sys.executable, script, str(port), root, PASSWORD, tls_dir or "-"],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(ROOT, "ftp.log"), "a"))
    wait_port(port, "the FTP server")
    return proc, port


def sshd(root):
    os.makedirs("/run/sshd", exist_ok=True)
    d = os.path.join(ROOT, "ssh")
    os.makedirs(d)
    for k in ["host", "client"]:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{k}"], check=True)
    shutil.copy(f"{d}/client.pub", f"{d}/authorized_keys")
    port = free_port()
    with open(f"{d}/sshd_config", "w") as f:
        f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
                "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"],
                            stderr=open(os.path.join(ROOT, "sshd.log"), "w"))
    wait_port(port, "sshd")
    host_key = " ".join(open(f"{d}/host.pub").read().split()[:2])
    with open(f"{d}/known_hosts", "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_key}\n")
    user = subprocess.check_output(["id", "-un"], text=True).strip()
    return proc, f"sftp://{user}@127.0.0.1:{port}/{root}", f"{d}/client", f"{d}/known_hosts"


def big(size_mib):
    need("pyftpdlib", "pyftpdlib")
    need("OpenSSL", "pyopenssl")
    served = os.path.join(ROOT, "served")
    os.makedirs(os.path.join(served, "outbox"))
    sftp_root = os.path.join(ROOT, "sftp")
    os.makedirs(sftp_root)
    ssh, sftp_url, key, known = sshd(sftp_root)
    tls = acceptance.certificate(ROOT)
    source = os.path.join(ROOT, "big.bin")
    with open(source, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1048576))
    ok = True
    for scheme in ["ftp", "ftpes"]:
        ftp, port = ftp_server(served, tls if scheme == "ftpes" else None)
        run = os.path.join(ROOT, f"run-{scheme}")
        os.makedirs(run)
        cfg = os.path.join(run, "sluice.toml")
        host = "localhost" if scheme == "ftpes" else "127.0.0.1"
        tls_ca = f', tls_ca = "{tls}/cert.pem"' if scheme == "ftpes" else ""
        with open(cfg, "w") as f:
            f.write(f"""data_dir = "data"
[receive_ports.ftp.locations.outbox]
adapter = {{ type = "ftp", url = "{scheme}://bench@{host}:{port}/outbox", password_env = "BENCH_FTP_PASSWORD", poll_interval = "500ms"{tls_ca} }}
[send_ports.sftp]
filter = 'receive.port == "ftp"'
adapter = {{ type = "sftp", url = "{sftp_url}/{scheme}", private_key_file = "{key}", known_hosts = "{known}", file_name = "%SourceFileName%", create_folder = true }}
""")
        node = Node(cfg)
        t0 = time.time()
        shutil.copy(source, os.path.join(served, "big.part"))
        os.rename(os.path.join(served, "big.part"), os.path.join(served, "outbox", "big.bin"))
        target = os.path.join(sftp_root, scheme, "big.bin")
        deadline = time.time() + 60 + size_mib
        while not (os.path.exists(target) and node.spool() == 0):
            if time.time() > deadline:
                node.stop()
                ftp.terminate()
                print(open(os.path.join(run, "node.log")).read()[-3000:])
                raise SystemExit(f"{scheme}: not through within {deadline - t0:.0f} s")
            time.sleep(0.5)
        secs = time.time() - t0
        hwm = node.hwm()
        rss = node.stop()
        ftp.terminate()
        identical = same(source, target)
        left = os.listdir(os.path.join(served, "outbox"))
        ok = ok and identical and not left and hwm <= 64 * 1048576
        print(f"{scheme}:// -> box -> sftp://, one {size_mib} MiB file: {secs:.1f} s "
              f"({size_mib / secs:.0f} MiB/s, copying onto the server and the first two polls included); "
              f"byte-identical: {identical}; left on the FTP server: {left}; node peak RSS (VmHWM) {mib(hwm)}, "
              f"GNU time {mib(rss)}", flush=True)
        os.remove(target)
    ssh.terminate()
    return ok


def kill(n):
    need("pyftpdlib", "pyftpdlib")
    served = os.path.join(ROOT, "served")
    outbox = os.path.join(served, "outbox")
    fill = os.path.join(served, "fill")
    os.makedirs(fill)
    bodies = {}
    for i in range(n):
        name = f"f{i:06}.dat"
        body = random.Random(i).randbytes(64 + i % 4000)
        bodies[name] = body
        with open(os.path.join(fill, name), "wb") as f:
            f.write(body)
    ftp, port = ftp_server(served)
    nodes = {}
    cfgs = {}
    for who in ["a", "b"]:
        run = os.path.join(ROOT, f"node-{who}")
        os.makedirs(run)
        cfgs[who] = os.path.join(run, "sluice.toml")
        with open(cfgs[who], "w") as f:
            f.write(f"""data_dir = "data"
[receive_ports.ftp.locations.outbox]
adapter = {{ type = "ftp", url = "ftp://bench@127.0.0.1:{port}/outbox", password_env = "BENCH_FTP_PASSWORD", poll_interval = "300ms", max_connections = 4 }}
[send_ports.out]
filter = 'receive.port == "ftp"'
adapter = {{ type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }}
""")
        nodes[who] = Node(cfgs[who])
    outs = {w: os.path.join(ROOT, f"node-{w}", "out") for w in nodes}

    def delivered():
        return sum(len(os.listdir(o)) if os.path.exists(o) else 0 for o in outs.values())

    t0 = time.time()
    os.rename(fill, outbox)
    kills = 0
    for at in [0.2, 0.5]:
        while delivered() < at * n:
            time.sleep(0.05)
        nodes["a"].kill9()
        kills += 1
        print(f"killed node a (SIGKILL) at {delivered()} files delivered", flush=True)
        nodes["a"] = Node(cfgs["a"])
    deadline = time.time() + 600
    while True:
        left = os.listdir(outbox)
        if delivered() >= n and not left and all(nd.spool() == 0 for nd in nodes.values()):
            break
        if time.time() > deadline:
            raise SystemExit(f"gave up: {delivered()} delivered, {len(left)} left on the server: {left[:5]}")
        time.sleep(0.5)
    secs = time.time() - t0
    for nd in nodes.values():
        nd.stop()
    ftp.terminate()
    got = {w: set(os.listdir(o)) if os.path.exists(o) else set() for w, o in outs.items()}
    both = got["a"] & got["b"]
    union = got["a"] | got["b"]
    missing = set(bodies) - union
    differ = [nm for nm in union if open(os.path.join(outs["a" if nm in got["a"] else "b"], nm), "rb").read() != bodies[nm]]
    print(f"{n} files FTP -> two nodes racing on one folder -> FILE, node a killed {kills} times: "
          f"{secs:.1f} s ({n / secs:.0f} files/s); node a took {len(got['a'])}, node b {len(got['b'])}; "
          f"taken by both: {len(both)}; missing: {len(missing)}; differ: {len(differ)}; "
          f"left on the server: {len(os.listdir(outbox))}", flush=True)
    return not both and not missing and not differ and not os.listdir(outbox)


try:
    ok = {"big": lambda: big(ARG or 1024), "kill": lambda: kill(ARG or 10_000)}[MODE]()
finally:
    shutil.rmtree(ROOT, ignore_errors=True)
sys.exit(0 if ok else 1)
