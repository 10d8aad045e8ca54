#!/usr/bin/env python3
"""Issue 17's SMTP acceptance runs: the real binary mails files through
aiosmtpd (a third party's SMTP server, from PyPI: the tools environment
scripts/test.sh makes, or SLUICE_PYTHON) over STARTTLS with a login, the
server being crates/sluice-adapters/src/kit/smtpd.py (it writes every mail
it takes to disk; recipients named refuse* get 550).

usage: bench/smtp-acceptance.py PATH/TO/sluice MODE [N] [MIB]

  many [N=1000] [MIB=1]  N files of MIB MiB, each mailed as an attachment to
                         ok@; one of them to ok2@ and refuse@ together. Every
                         mail accepted, every attachment identical (decoded by
                         Python's email package), the refused recipient's
                         message suspended with the server's answer and ok2@
                         served once. Then the peer: Python's smtplib sends
                         the same N mails (built by its email package) to the
                         same server over STARTTLS, one connection, as fast
                         as it can: mails/s side by side.
  big  [MIB=100]         one file of MIB MiB, mailed as an attachment: the
                         node's peak RSS, the attachment identical.
"""
import concurrent.futures
import email
import email.policy
import hashlib
import json
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import acceptance  # noqa: E402
from acceptance import Node, mib  # noqa: E402

SLUICE = os.path.realpath(sys.argv[1])
MODE = sys.argv[2]
ARGS = [int(a) for a in sys.argv[3:]]
ROOT = tempfile.mkdtemp(prefix="sluice-smtp-acceptance-")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.environ.get("SLUICE_PYTHON", os.path.join(REPO, "target/tools/venv/bin/python"))
PASSWORD = f"bench-{os.getpid()}-pw"
acceptance.SLUICE = SLUICE
acceptance.ENV = {"BENCH_SMTP_PASSWORD": PASSWORD}


def smtpd(tls):
    mails = os.path.join(ROOT, "server")
    os.makedirs(mails, exist_ok=True)
    proc = subprocess.Popen([PYTHON, os.path.join(REPO, "crates/sluice-adapters/src/kit/smtpd.py"), "--dir", mails,
                             "--cert", f"{tls}/cert.pem", "--key", f"{tls}/key.pem", "--auth", f"bench:{PASSWORD}"],
                            stdout=subprocess.PIPE, stderr=open(os.path.join(ROOT, "smtpd.log"), "a"), text=True)
    port = int(proc.stdout.readline())
    return proc, port, mails


def setup():
    """A certificate, the server, and a node's folder and config for it."""
    tls = acceptance.certificate(ROOT)
    server, port, mails = smtpd(tls)
    run = os.path.join(ROOT, "run")
    os.makedirs(run)
    return tls, server, port, mails, run, config(run, port, tls)


def taken(mails):
    return sum(1 for n in os.listdir(mails) if n.endswith(".json"))


def config(run, port, tls, extra_ports=""):
    cfg = os.path.join(run, "sluice.toml")
    common = (f'url = "smtp://localhost:{port}", tls_ca = "{tls}/cert.pem", username = "bench", '
              f'password_env = "BENCH_SMTP_PASSWORD", from = "Bench <bench@sluice.example>", attach = true')
    with open(cfg, "w") as f:
        f.write(f"""data_dir = "data"
[receive_ports.in.locations.in]
adapter = {{ type = "file", path = "in", mask = "*" }}
[send_ports.mail]
filter = 'receive.port == "in" and file.name != "mixed.bin"'
adapter = {{ type = "smtp", {common}, to = "ok@x.example", subject = "File %SourceFileName%" }}
concurrency = 8
{extra_ports}""")
        f.write(f"""
[send_ports.mixed]
filter = 'file.name == "mixed.bin"'
adapter = {{ type = "smtp", {common}, to = "ok2@x.example, refuse@x.example" }}
""")
    os.makedirs(os.path.join(run, "in"))
    return cfg


def attachment(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    # The attachment alone is the mail's whole content (no text part).
    if not msg.is_multipart() and msg.get_content_disposition() == "attachment":
        return msg, msg.get_filename(), msg.get_content()
    for part in msg.iter_attachments():
        return msg, part.get_filename(), part.get_content()
    return msg, None, None


def many(n, size_mib):
    tls, server, port, mails, run, cfg = setup()
    staged = os.path.join(ROOT, "staged")
    os.makedirs(staged)
    digests = {}
    for i in range(n):
        name = "mixed.bin" if i == n // 2 else f"f{i:05}.bin"
        body = os.urandom(size_mib * 1048576)
        digests[name] = hashlib.sha256(body).hexdigest()
        with open(os.path.join(staged, name), "wb") as f:
            f.write(body)
    node = Node(cfg)
    t0 = time.time()
    for name in digests:
        os.rename(os.path.join(staged, name), os.path.join(run, "in", name))
    deadline = time.time() + 120 + n * size_mib
    while True:
        status = node.status()
        if taken(mails) >= n and re.search(r'"spool":\s*1\b', status) and re.search(r'"suspended":\s*1\b', status):
            break
        if time.time() > deadline:
            node.stop()
            server.terminate()
            raise SystemExit(f"not through in time: {taken(mails)} taken; {status}")
        time.sleep(0.2)
    secs = time.time() - t0
    hwm = node.hwm()
    suspended = subprocess.run([SLUICE, "suspended", "list", "--config", cfg], capture_output=True, text=True).stdout
    rss = node.stop()
    cpu = node.cpu()
    server.terminate()
    # Every mail, read back by Python's email package.
    bad, seen, to_of = [], {}, {}
    for j in range(1, taken(mails) + 1):
        msg, name, content = attachment(os.path.join(mails, f"{j}.eml"))
        env = json.load(open(os.path.join(mails, f"{j}.json")))
        seen[name] = seen.get(name, 0) + 1
        to_of[name] = env["rcpt_tos"]
        if content is None or hashlib.sha256(content).hexdigest() != digests.get(name):
            bad.append(name)
    missing = [x for x in digests if x not in seen]
    twice = [x for x, c in seen.items() if c > 1]
    refused_ok = "550 5.1.1 <refuse@x.example>" in suspended and "delivered to ok2@x.example" in suspended
    ok = not bad and not missing and not twice and to_of.get("mixed.bin") == ["ok2@x.example"] and refused_ok
    total = n * size_mib
    print(f"sluice: {n} mails of {size_mib} MiB (attached, base64) FILE -> box -> smtp:// STARTTLS + AUTH -> aiosmtpd: "
          f"{secs:.1f} s, {n / secs:.1f} mails/s ({total / secs:.1f} MiB/s of attachments), drain included; "
          f"node peak RSS (VmHWM) {mib(hwm)}, GNU time {mib(rss)}; node CPU {cpu:.1f} s ({100 * cpu / secs:.0f}% of one core)",
          flush=True)
    print(f"  every attachment identical: {not bad} (bad {bad[:3]}), missing {missing[:3]}, twice {twice[:3]}; "
          f"mixed.bin to {to_of.get('mixed.bin')}; refused recipient suspended with the server's answer: {refused_ok}",
          flush=True)
    # The peer: smtplib, same server, same mails, as many connections as
    # the port has (8), one thread each.
    shutil.rmtree(mails)
    server, port, mails = smtpd(tls)
    context = ssl.create_default_context(cafile=f"{tls}/cert.pem")
    names = list(digests)

    def send(share):
        with smtplib.SMTP("localhost", port) as s:
            s.starttls(context=context)
            s.login("bench", PASSWORD)
            for name in share:
                m = EmailMessage()
                m["From"] = "bench@sluice.example"
                m["To"] = "ok@x.example"
                m["Subject"] = f"File {name}"
                m.add_attachment(os.urandom(size_mib * 1048576), maintype="application", subtype="octet-stream",
                                 filename=name)
                s.send_message(m)

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, [names[k::8] for k in range(8)]))
    peer = time.time() - t0
    got = taken(mails)
    server.terminate()
    print(f"peer: Python smtplib, {got} mails of the same size (built in memory) to the same server, 8 connections: "
          f"{peer:.1f} s, {got / peer:.1f} mails/s; sluice / peer = {(n / secs) / (got / peer):.2f}", flush=True)
    return ok


def big(size_mib):
    tls, server, port, mails, run, cfg = setup()
    source = os.path.join(ROOT, "big.bin")
    h = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(size_mib):
            chunk = os.urandom(1048576)
            h.update(chunk)
            f.write(chunk)
    node = Node(cfg)
    t0 = time.time()
    os.rename(source, os.path.join(run, "in", "big.bin"))
    deadline = time.time() + 120 + size_mib
    while not (taken(mails) == 1 and node.spool() == 0):
        if time.time() > deadline:
            node.stop()
            server.terminate()
            raise SystemExit("not through in time")
        time.sleep(0.2)
    secs = time.time() - t0
    hwm = node.hwm()
    rss = node.stop()
    server.terminate()
    _, name, content = attachment(os.path.join(mails, "1.eml"))
    identical = content is not None and hashlib.sha256(content).hexdigest() == h.hexdigest()
    size = os.path.getsize(os.path.join(mails, "1.eml"))
    print(f"sluice: one {size_mib} MiB file mailed as an attachment ({mib(size)} of mail) over STARTTLS: {secs:.1f} s; "
          f"attachment identical: {identical}; node peak RSS (VmHWM) {mib(hwm)}, GNU time {mib(rss)}", flush=True)
    return identical and hwm <= 64 * 1048576


try:
    if MODE == "many":
        good = many(ARGS[0] if ARGS else 1000, ARGS[1] if len(ARGS) > 1 else 1)
    elif MODE == "big":
        good = big(ARGS[0] if ARGS else 100)
    else:
        raise SystemExit(__doc__)
finally:
    shutil.rmtree(ROOT, ignore_errors=True)
print("OK" if good else "FAILED")
sys.exit(0 if good else 1)
