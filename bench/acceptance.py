"""What the acceptance runs (bench/*-acceptance.py) share: a node of the real
binary run under GNU time, its peak RSS and its box's spool; free ports;
a throwaway TLS certificate; Python packages installed when missing.

Set SLUICE (the binary) and ENV (extra environment for the node) first."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

SLUICE = None
ENV = {}


def need(module, package):
    try:
        __import__(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what):
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"{what} did not listen")
            time.sleep(0.1)


def certificate(root):
    """A self-signed end-entity certificate for localhost and 127.0.0.1 (rustls
    refuses a CA-flagged one as a server's): the folder with cert.pem, key.pem."""
    d = os.path.join(root, "tls")
    os.makedirs(d)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d


class Node:
    def __init__(self, config):
        self.dir = os.path.dirname(config)
        self.config = config
        self.log = open(os.path.join(self.dir, "node.log"), "a")
        self.time = os.path.join(self.dir, "time.txt")
        self.proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", self.time, SLUICE, "serve", "--config", config],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=dict(os.environ, **ENV,
                                              SLUICE_LOG=os.environ.get("SLUICE_LOG", "warn")))
        deadline = time.time() + 30
        while True:
            try:
                self.pid = int(subprocess.check_output(["pgrep", "-P", str(self.proc.pid)]).split()[0])
                break
            except subprocess.CalledProcessError:
                if time.time() > deadline:
                    raise SystemExit("the node did not start")
                time.sleep(0.05)

    def hwm(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(timeout=120)
        text = open(self.time).read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        return int(m.group(1)) * 1024 if m else 0

    def cpu(self):
        """User plus system CPU seconds, as GNU time reported them (after stop)."""
        text = open(self.time).read()
        return sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))

    def status(self):
        out = subprocess.run([SLUICE, "status", "--json", "--config", self.config],
                             capture_output=True, text=True)
        return out.stdout

    def spool(self):
        m = re.search(r'"spool":\s*(\d+)', self.status())
        return int(m.group(1)) if m else -1


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0
