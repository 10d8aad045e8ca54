#!/usr/bin/env python3
"""Isolated hosts (issue 16), measured with the real binary.

usage: bench/isolation.py PATH/TO/sluice MODE [N]

  leaky  [N=100000]  examples/isolated-host's setup: FILE in (the node) ->
                     chaos port leaking 10 KiB per message in host `leaky`
                     (own process, memory_limit 100MiB). Every file must
                     arrive once, byte-identical; prints the node's peak RSS
                     (GNU time), its RSS over the run, and the recycles.
  kill   [N=30000]   FILE in -> FILE out in an isolated host; the instance is
                     killed with SIGKILL 20 times at random moments (1-3 s
                     apart) while files flow. Nothing may be lost; prints, for
                     each death, the time until the next delivery (from the
                     node's log, `log_messages = true`).
  neighbours [N=20000]  two isolated hosts busy at once: `steady` (FILE ->
                     FILE) and `leaky` (FILE -> chaos): steady's throughput
                     with leaky leaking and recycling, against a run with
                     leaky not leaking. ROUNDS pairs (env, default 3),
                     interleaved (quiet, leaking; leaking, quiet; ...); the
                     leak per message and the limit from LEAK (default
                     64KiB) and LIMIT (default 48MiB); prints each pair's
                     ratio and the ratio of the medians, and each run's CPU
                     time (node, steady instance, the node's whole tree).
                     LEAK=0 runs quiet against quiet: the noise control.
  big    [MIB=1024]  one file of MIB MiB received and sent by an isolated
                     host (its body crosses the channel twice): the node's
                     and the instance's peak RSS.
  cost   [N=150000]  one HTTP send port draining N queued 1 KiB messages to
                     `sluice dev echo-server`: in the node, then in an
                     isolated host, same machine, same run; ROUNDS (env,
                     default 1) rounds, alternating which goes first, and
                     the median ratio.

Files are made in the box's folder tree of a fresh temporary directory.
"""
import json
import os
import random
import resource
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

SLUICE = os.path.realpath(sys.argv[1])
MODE = sys.argv[2]
ROOT = tempfile.mkdtemp(prefix="sluice-isolation-")


def body(i, size=256):
    """File i's bytes: varied, the same every time (checked at the other end)."""
    return random.Random(i).randbytes(size)


def write_files(folder, names, size=256, per_second=None):
    os.makedirs(folder, exist_ok=True)
    t0 = time.time()
    for k, (i, name) in enumerate(names):
        tmp = os.path.join(folder, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(body(i, size))
        os.rename(tmp, os.path.join(folder, name))
        if per_second and k % 50 == 49:
            ahead = t0 + (k + 1) / per_second - time.time()
            if ahead > 0:
                time.sleep(ahead)


def status(config):
    out = subprocess.run([SLUICE, "status", "--json", "--config", config], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def host(st, name):
    for h in st.get("hosts", []):
        if h["name"] == name:
            return h
    return None


def count(folder):
    try:
        return sum(1 for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return 0


class Node:
    def __init__(self, config, log_level="warn"):
        self.log = open(os.path.join(ROOT, "node.log"), "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/time", "-v", SLUICE, "serve", "--config", config],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=dict(os.environ, SLUICE_LOG=log_level),
        )
        self.config = config
        deadline = time.time() + 60
        while True:
            try:
                self.pid = int(subprocess.check_output(["pgrep", "-P", str(self.proc.pid)]).split()[0])
                if status(config).get("node"):
                    break
            except subprocess.CalledProcessError:
                pass
            if time.time() > deadline:
                raise SystemExit("the node did not start")
            time.sleep(0.1)

    def rss(self, key="VmRSS:"):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def hwm(self):
        """The node process's own peak RSS so far (the kernel's VmHWM; GNU
        time's figure also counts the host instances it reaped)."""
        return self.rss("VmHWM:")

    def stop(self):
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.close()
        text = open(os.path.join(ROOT, "node.log")).read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        return int(m.group(1)) * 1024 if m else 0, text


def cpu_seconds(pid):
    """User and system CPU time of a live process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def instance_pid(config, name, not_pid=0, within=30):
    deadline = time.time() + within
    while time.time() < deadline:
        h = host(status(config), name)
        if h and h["instances"] and h["instances"][0]["state"] == "running":
            pid = h["instances"][0]["pid"]
            if pid and pid != not_pid:
                return pid
        time.sleep(0.05)
    raise SystemExit(f"no running instance of {name}")


def check_delivered(out, names, size=256):
    bad = [n for i, n in names if open(os.path.join(out, n), "rb").read() != body(i, size)]
    return bad


def leaky(n):
    cfg = os.path.join(ROOT, "sluice.toml")
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "isolated-host", "sluice.toml")
    shutil.copy(example, cfg)
    inbox, out = os.path.join(ROOT, "in"), os.path.join(ROOT, "out")
    names = [(i, f"m{i:06}.xml") for i in range(n)]
    node = Node(cfg, "info")
    base = node.rss()
    t0 = time.time()
    write_files(inbox, names)
    samples = []
    while count(out) < n or count(inbox) > 0:
        samples.append(node.rss())
        time.sleep(1)
        if time.time() - t0 > 3600:
            raise SystemExit("not done in an hour")
    while status(cfg).get("spool", 1) != 0:
        time.sleep(0.5)
    elapsed = time.time() - t0
    samples.append(node.rss())
    h = host(status(cfg), "leaky")
    bad = check_delivered(out, names)
    own_peak = node.hwm()
    peak, text = node.stop()
    twice = text.count("identical copy was already there")
    print(f"leaky: {n} files in {elapsed:.1f} s ({n / elapsed:.0f}/s), {count(out)} in out/, {len(bad)} differ, "
          f"{twice} delivered twice")
    print(f"  node RSS: {mib(base)} at start, {mib(max(samples))} highest sampled (every 1 s), "
          f"{mib(samples[-1])} at the end; its own peak (VmHWM) {mib(own_peak)}; GNU time's maximum "
          f"{mib(peak)} (the largest of the node and the instances it reaped)")
    i = h["instances"][0]
    print(f"  host leaky: {i['recycles']} recycles ({i['memory_recycles']} over memory), {i['restarts']} restarts, "
          f"last instance RSS {mib(i['rss_bytes'])}, last exit: {h['last_exit']}")


def kill(n, kills=20):
    cfg = os.path.join(ROOT, "sluice.toml")
    with open(cfg, "w") as f:
        f.write("""data_dir = "data"
log_messages = true

[hosts.iso]
isolation = "process"

[receive_ports.in.locations.files]
adapter = { type = "file", path = "in", mask = "*", settle = "0s", poll_interval = "100ms" }

[send_ports.out]
host = "iso"
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }
""")
    inbox, out = os.path.join(ROOT, "in"), os.path.join(ROOT, "out")
    names = [(i, f"k{i:06}.dat") for i in range(n)]
    node = Node(cfg, "info")
    pid = instance_pid(cfg, "iso")
    t0 = time.time()
    # Files keep coming while the instance is killed.
    import threading
    # At a pace that outlasts the 20 kills (about 40 s).
    producer = threading.Thread(target=write_files, args=(inbox, names, 256, n / 60))
    producer.start()
    deaths = []
    rng = random.Random(16)
    for k in range(kills):
        time.sleep(rng.uniform(1.0, 3.0))
        os.kill(pid, signal.SIGKILL)
        deaths.append((time.time(), pid))
        pid = instance_pid(cfg, "iso", pid)
    producer.join()
    while count(out) < n or count(inbox) > 0:
        time.sleep(0.5)
        if time.time() - t0 > 1800:
            raise SystemExit("not done in 30 minutes")
    while status(cfg).get("spool", 1) != 0:
        time.sleep(0.5)
    elapsed = time.time() - t0
    h = host(status(cfg), "iso")
    bad = check_delivered(out, names)
    _, text = node.stop()
    # Delivery lines carry their time (UTC) and the instance's pid.
    delivered = []
    for line in text.splitlines():
        if "delivered" in line and "host_instance{" in line:
            at = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            m = re.search(r"pid=(\d+)", line)
            delivered.append((at, int(m.group(1)) if m else 0))
    delivered.sort()
    gaps = []
    for at, dead in deaths:
        nxt = next((t for t, p in delivered if t > at and p != dead), None)
        gaps.append(nxt - at if nxt else float("inf"))
    print(f"kill: {n} files in {elapsed:.1f} s with {kills} SIGKILLs of the instance; {count(out)} in out/, "
          f"{len(bad)} differ; restarts {h['instances'][0]['restarts']}")
    print("  next delivery after each death (s): " + ", ".join(f"{g:.3f}" for g in gaps))
    print(f"  max {max(gaps):.3f} s, median {sorted(gaps)[len(gaps) // 2]:.3f} s; "
          f"{sum(1 for g in gaps if g <= 1.0)}/{len(gaps)} within 1 s")


def big(size):
    """One file of `size` MiB through an isolated host that both receives it
    and sends it: its body crosses the channel twice, a chunk at a time."""
    cfg = os.path.join(ROOT, "sluice.toml")
    with open(cfg, "w") as f:
        f.write("""data_dir = "data"

[hosts.iso]
isolation = "process"

[receive_ports.in.locations.files]
host = "iso"
adapter = { type = "file", path = "in", mask = "*", settle = "1s", poll_interval = "100ms" }

[send_ports.out]
host = "iso"
filter = 'receive.port == "in"'
adapter = { type = "file", path = "out", file_name = "%SourceFileName%", create_folder = true }
""")
    inbox, out = os.path.join(ROOT, "in"), os.path.join(ROOT, "out")
    os.makedirs(inbox)
    node = Node(cfg)
    pid = instance_pid(cfg, "iso")
    block = bytes(range(256)) * 4096
    tmp = os.path.join(inbox, ".big.tmp")
    with open(tmp, "wb") as f:
        for _ in range(size):
            f.write(block)
    t0 = time.time()
    os.rename(tmp, os.path.join(inbox, "big.dat"))
    done = os.path.join(out, "big.dat")
    while not (os.path.exists(done) and status(cfg).get("spool", 1) == 0):
        time.sleep(0.2)
    elapsed = time.time() - t0
    with open(f"/proc/{pid}/status") as f:
        instance_peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    node_peak = node.hwm()
    same = os.path.getsize(done) == size << 20
    with open(done, "rb") as f:
        while same:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            same = chunk == block
    node.stop()
    print(f"big: {size} MiB received and delivered by an isolated host in {elapsed:.1f} s "
          f"({2 * size / elapsed:.0f} MiB/s across the channel, in and out); byte-identical: {same}; "
          f"peak RSS (VmHWM): node {mib(node_peak)}, instance {mib(instance_peak)}")


def neighbours(n):
    leak_per = os.environ.get("LEAK", "64KiB")
    limit = os.environ.get("LIMIT", "48MiB")
    rounds = int(os.environ.get("ROUNDS", "3"))
    runs = 0

    def run(leak):
        nonlocal runs
        runs += 1
        root = os.path.join(ROOT, f"run{runs}-leak-{leak}")
        os.makedirs(root)
        cfg = os.path.join(root, "sluice.toml")
        with open(cfg, "w") as f:
            f.write(f"""data_dir = "data"

[hosts.leaky]
isolation = "process"
memory_limit = "{limit}"

[hosts.steady]
isolation = "process"

[receive_ports.a.locations.to-leaky]
adapter = {{ type = "file", path = "in-leaky", mask = "*", settle = "0s", poll_interval = "100ms" }}

[receive_ports.b.locations.to-steady]
adapter = {{ type = "file", path = "in-steady", mask = "*", settle = "0s", poll_interval = "100ms" }}

[send_ports.leaky]
host = "leaky"
filter = 'receive.port == "a"'
adapter = {{ type = "chaos", path = "out-leaky", file_name = "%SourceFileName%", create_folder = true, leak_per_message = "{leak}" }}

[send_ports.steady]
host = "steady"
filter = 'receive.port == "b"'
adapter = {{ type = "file", path = "out-steady", file_name = "%SourceFileName%", create_folder = true }}
""")
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        node = Node(cfg)
        instance_pid(cfg, "leaky")
        steady_pid = instance_pid(cfg, "steady")
        names = [(i, f"s{i:06}.dat") for i in range(n)]
        # Both inboxes filled first; then both locations take them at once.
        write_files(os.path.join(root, "in-leaky.fill"), [(i, f"l{i:06}.dat") for i in range(n)])
        write_files(os.path.join(root, "in-steady.fill"), names)
        t0 = time.time()
        os.rename(os.path.join(root, "in-leaky.fill"), os.path.join(root, "in-leaky"))
        os.rename(os.path.join(root, "in-steady.fill"), os.path.join(root, "in-steady"))
        out = os.path.join(root, "out-steady")
        while count(out) < n:
            time.sleep(0.05)
        steady = n / (time.time() - t0)
        while count(os.path.join(root, "out-leaky")) < n:
            time.sleep(0.2)
        h = host(status(cfg), "leaky")["instances"][0]
        steady_cpu = cpu_seconds(steady_pid)
        node_cpu = cpu_seconds(node.pid)
        node.stop()
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        print(f"  leak {leak}: steady {steady:.0f} files/s; CPU s: node {node_cpu:.1f}, steady instance "
              f"{steady_cpu:.1f}, all of the node's tree {total:.1f}", flush=True)
        return steady, h["memory_recycles"]

    quiets, leakings = [], []
    for r in range(rounds):
        # Alternate which goes first, so neither always runs on a fresher machine.
        # LEAK=0 makes both runs quiet: the spread of such pairs is the
        # machine's noise, the control for the ratio.
        first_quiet = r % 2 == 0
        a = run("0" if first_quiet else leak_per)
        b = run(leak_per if first_quiet else "0")
        (quiet, r0), (leaking, r1) = (a, b) if first_quiet else (b, a)
        quiets.append(quiet)
        leakings.append(leaking)
        print(f"neighbours round {r + 1}: steady host {quiet:.0f} files/s while leaky runs without leaking "
              f"({r0} recycles), {leaking:.0f} files/s while leaky leaks {leak_per} a message over a "
              f"{limit} limit and recycles ({r1} recycles): {leaking / quiet:.2f}x", flush=True)
    mq, ml = statistics.median(quiets), statistics.median(leakings)
    print(f"neighbours: medians of {rounds} rounds: {mq:.0f} files/s quiet, {ml:.0f} files/s beside "
          f"recycling: {ml / mq:.2f}x")


def cost(n):
    echo = subprocess.Popen([SLUICE, "dev", "echo-server", "--port", "0"], stdout=subprocess.PIPE, text=True)
    address = None
    for line in echo.stdout:
        m = re.search(r"127\.0\.0\.1:\d+", line)
        if m:
            address = m.group(0)
            break
    rounds = int(os.environ.get("ROUNDS", "1"))
    ratios = []
    for r in range(rounds):
        # Alternate which goes first, so neither always runs on a fresher machine.
        order = ["default", "iso"] if r % 2 == 0 else ["iso", "default"]
        ratios.append(cost_round(n, address, order, r))
    echo.kill()
    if rounds > 1:
        print(f"cost: median of {rounds} rounds: {statistics.median(ratios):.2f}x "
              f"(each: {', '.join(f'{x:.2f}' for x in ratios)})")


def cost_round(n, address, order, r):
    results = {}
    for where in order:
        root = os.path.join(ROOT, f"{where}-{r}")
        os.makedirs(root)
        cfg = os.path.join(root, "sluice.toml")

        def write(enabled):
            with open(cfg, "w") as f:
                f.write(f"""data_dir = "data"

[hosts.iso]
isolation = "process"

[receive_ports.in.locations.files]
adapter = {{ type = "file", path = "in", mask = "*", settle = "0s", poll_interval = "100ms" }}

[send_ports.out]
host = "{where}"
filter = 'receive.port == "in"'
adapter = {{ type = "http", url = "http://{address}/x" }}
concurrency = 8
enabled = {enabled}
""")

        write("false")
        node = Node(cfg)
        write_files(os.path.join(root, "in"), [(i, f"c{i:06}.dat") for i in range(n)], 1024)
        while status(cfg).get("queued", {}).get("out", 0) < n:
            time.sleep(0.5)
        write("true")
        # (In the isolated host the reload recycles the instance onto the
        # port's new state: its start is part of the measured drain.)
        before = instance_pid(cfg, "iso") if where == "iso" else 0
        t0 = time.time()
        subprocess.run([SLUICE, "reload", "--config", cfg], capture_output=True, check=True)
        perf = None
        if os.environ.get("PERF_DIR"):
            # Profile the node and (isolated) its instance while they drain.
            pids = [str(node.pid)] + ([str(instance_pid(cfg, "iso", before))] if where == "iso" else [])
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", ",".join(pids), "-o",
                                     os.path.join(os.environ["PERF_DIR"], f"perf-{where}.data"), "--", "sleep", "3"],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(os.environ["PERF_DIR"], f"perf-{where}.err"), "w"))
        # (`sluice status` counts the box: not too often.)
        while status(cfg).get("queued", {}).get("out", 1) != 0:
            time.sleep(0.3)
        rate = n / (time.time() - t0)
        if perf:
            perf.wait()
        peak = node.hwm()
        node.stop()
        results[where] = (rate, peak)
    (a, pa), (b, pb) = results["default"], results["iso"]
    print(f"cost: one HTTP send port draining {n} x 1 KiB: in the node {a:.0f} msg/s (node peak {mib(pa)}), "
          f"in an isolated host {b:.0f} msg/s (node peak {mib(pb)}): {b / a:.2f}x", flush=True)
    return b / a


try:
    n = int(sys.argv[3]) if len(sys.argv) > 3 else None
    {"leaky": lambda: leaky(n or 100_000), "kill": lambda: kill(n or 30_000),
     "neighbours": lambda: neighbours(n or 20_000), "cost": lambda: cost(n or 150_000),
     "big": lambda: big(n or 1024)}[MODE]()
finally:
    subprocess.run(["pkill", "-f", f"host-instance.*{ROOT}"], capture_output=True)
    shutil.rmtree(ROOT, ignore_errors=True)
