#!/usr/bin/env python3
"""Issue 17's POP3 and IMAP acceptance runs: the real binary takes mails
from Dovecot 2.3 (Debian's; started by the compliance kit's fixture as a
program, `cargo run --example dovecot`), over TLS (pop3s://, imaps://),
with the attachment as the message's body (`body = "attachment"`) written
out by a FILE send port, so each attachment can be compared byte for byte.

usage: bench/mail-acceptance.py PATH/TO/sluice PATH/TO/dovecot-example MODE [N] [MIB]

  many [N=1000] [MIB=1]  N mails, each with a MIB MiB attachment (base64),
                         in a POP3 mailbox, then the same in an IMAP folder:
                         each run timed from the node's start until every
                         attachment is written and the mailbox empty (drain
                         included), peak RSS, every attachment identical.
                         Then the peers on the same server and mails:
                         Python's poplib (RETR, parsed by its email package,
                         written, DELE) and imaplib (FETCH BODY.PEEK[],
                         parsed, written, STORE \\Deleted, EXPUNGE), one
                         connection each: mails/s side by side.
  big  [MIB=100]         one mail with a MIB MiB attachment, by POP3 and by
                         IMAP: the node's peak RSS, the attachment identical.
"""
import base64
import email
import email.policy
import hashlib
import imaplib
import json
import os
import poplib
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import acceptance  # noqa: E402
from acceptance import Node, mib  # noqa: E402

SLUICE = os.path.realpath(sys.argv[1])
DOVECOT = os.path.realpath(sys.argv[2])
MODE = sys.argv[3]
ARGS = [int(a) for a in sys.argv[4:]]
# Dovecot's sockets want a short path; as root, a folder others may search.
ROOT = tempfile.mkdtemp(prefix="sl-mail-", dir="/tmp")
os.chmod(ROOT, 0o755)
PASSWORD = f"bench-{os.getpid()}-pw"
acceptance.SLUICE = SLUICE
acceptance.ENV = {"BENCH_MAIL_PASSWORD": PASSWORD}
USERS = ["pop", "imap", "peerpop", "peerimap"]


def dovecot(tls):
    d = os.path.join(ROOT, "dc")
    os.makedirs(d)
    args = [DOVECOT, d, "--tls", f"{tls}/cert.pem", f"{tls}/key.pem"]
    for u in USERS:
        args += ["--user", f"{u}:{PASSWORD}"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=open(os.path.join(ROOT, "dovecot.err"), "a"), text=True)
    info = json.loads(proc.stdout.readline())
    return proc, info


def deliver(info, user, raw, n):
    """Put mail `raw` into `user`'s INBOX as a delivery agent would (tmp/, then new/)."""
    maildir = info["maildirs"][user]
    name = f"{int(time.time())}.M{n}P{os.getpid()}.bench"
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(raw)
    if os.getuid() == 0:
        os.chown(tmp, info["mail_uid"], info["mail_gid"])
    os.rename(tmp, os.path.join(maildir, "new", name))


def mailbox(info, user):
    maildir = info["maildirs"][user]
    return len(os.listdir(os.path.join(maildir, "new"))) + len(os.listdir(os.path.join(maildir, "cur")))


def mail_with(name, attachment):
    """A mail of a short text and `attachment` named `name`, in base64 lines of 76."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    head = (f"From: partner@example.com\r\nTo: orders@example.com\r\nSubject: {name}\r\n"
            f"Message-ID: <{name}@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n--b0\r\nContent-Type: text/plain\r\n\r\n"
            f"{name} attached.\r\n--b0\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    return head.encode() + encoded + b"--b0--\r\n"


def config(run, tls, proto, url):
    path = os.path.join(run, "sluice.toml")
    with open(path, "w") as f:
        f.write(f'''data_dir = "data"

[receive_ports.mail.locations.{proto}]
adapter = {{ type = "{proto}", url = "{url}", password_env = "BENCH_MAIL_PASSWORD", tls_ca = "{tls}/cert.pem", body = "attachment", parts = "body", poll_interval = "1s" }}

[send_ports.out]
filter = 'receive.port == "mail"'
adapter = {{ type = "file", path = "out", file_name = "%property:mail.subject%", create_folder = true }}
''')
    return path


def fill(info, user, n, size_mib):
    """N mails with attachments of random bytes: their digests by name."""
    digests = {}
    for i in range(n):
        name = f"f{i:05}.bin"
        body = os.urandom(size_mib * 1048576)
        digests[name] = hashlib.sha256(body).hexdigest()
        deliver(info, user, mail_with(name, body), i)
    return digests


def check(out, digests):
    bad = []
    for name, digest in digests.items():
        p = os.path.join(out, name)
        if not os.path.exists(p):
            bad.append(name)
            continue
        with open(p, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                bad.append(name)
    extra = [x for x in os.listdir(out) if x not in digests] if os.path.isdir(out) else []
    return bad, extra


def run_node(info, tls, proto, user, url, digests):
    run = os.path.join(ROOT, proto)
    os.makedirs(run)
    cfg = config(run, tls, proto, url)
    out = os.path.join(run, "out")
    n = len(digests)
    t0 = time.time()
    node = Node(cfg)
    deadline = time.time() + 120 + n * 2
    while True:
        done = os.path.isdir(out) and len(os.listdir(out)) >= n
        if done and mailbox(info, user) == 0 and node.spool() == 0:
            break
        if time.time() > deadline:
            node.stop()
            raise SystemExit(f"{proto}: not through in time: {len(os.listdir(out)) if os.path.isdir(out) else 0} written")
        time.sleep(0.1)
    secs = time.time() - t0
    hwm = node.hwm()
    rss = node.stop()
    cpu = node.cpu()
    bad, extra = check(out, digests)
    return secs, hwm, rss, cpu, bad, extra


def peer_pop(info, tls, user, n):
    context = ssl.create_default_context(cafile=f"{tls}/cert.pem")
    out = os.path.join(ROOT, "peer-pop")
    os.makedirs(out)
    t0 = time.time()
    p = poplib.POP3_SSL("localhost", info["pop3s"], context=context)
    p.user(user)
    p.pass_(PASSWORD)
    count = len(p.list()[1])
    for i in range(1, count + 1):
        raw = b"\r\n".join(p.retr(i)[1])
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for part in msg.iter_attachments():
            with open(os.path.join(out, part.get_filename()), "wb") as f:
                f.write(part.get_content())
        p.dele(i)
    p.quit()
    return time.time() - t0, len(os.listdir(out))


def peer_imap(info, tls, user, n):
    context = ssl.create_default_context(cafile=f"{tls}/cert.pem")
    out = os.path.join(ROOT, "peer-imap")
    os.makedirs(out)
    t0 = time.time()
    m = imaplib.IMAP4_SSL("localhost", info["imaps"], ssl_context=context)
    m.login(user, PASSWORD)
    m.select("INBOX")
    uids = m.uid("SEARCH", None, "UNDELETED")[1][0].split()
    for uid in uids:
        data = m.uid("FETCH", uid, "(BODY.PEEK[])")[1]
        msg = email.message_from_bytes(data[0][1], policy=email.policy.default)
        for part in msg.iter_attachments():
            with open(os.path.join(out, part.get_filename()), "wb") as f:
                f.write(part.get_content())
        m.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        m.expunge()
    m.logout()
    return time.time() - t0, len(os.listdir(out))


def many(n, size_mib):
    tls = acceptance.certificate(ROOT)
    server, info = dovecot(tls)
    ok = True
    try:
        for proto, user, url, peer_user, peer in [
            ("pop3", "pop", f"pop3s://pop@localhost:{info['pop3s']}", "peerpop", peer_pop),
            ("imap", "imap", f"imaps://imap@localhost:{info['imaps']}/INBOX", "peerimap", peer_imap),
        ]:
            digests = fill(info, user, n, size_mib)
            secs, hwm, rss, cpu, bad, extra = run_node(info, tls, proto, user, url, digests)
            total = n * size_mib
            print(f"sluice {proto}: {n} mails with a {size_mib} MiB attachment (base64), {url.split('://')[0]}://"
                  f" -> box -> FILE: {secs:.1f} s, {n / secs:.1f} mails/s ({total / secs:.1f} MiB/s of attachments),"
                  f" node start and drain included; node peak RSS (VmHWM) {mib(hwm)}, GNU time {mib(rss)};"
                  f" node CPU {cpu:.1f} s ({100 * cpu / secs:.0f}% of one core)", flush=True)
            print(f"  every attachment identical: {not bad} (bad {bad[:3]}), extra files {extra[:3]},"
                  f" mailbox empty: {mailbox(info, user) == 0}", flush=True)
            ok &= not bad and not extra and mailbox(info, user) == 0
            fill(info, peer_user, n, size_mib)
            peer_secs, got = peer(info, tls, peer_user, n)
            ratio = (n / secs) / (got / peer_secs) if got else float("nan")
            print(f"peer: Python {'poplib' if proto == 'pop3' else 'imaplib'}, {got} of the same mails from the same"
                  f" server over TLS, one connection: {peer_secs:.1f} s, {got / peer_secs:.1f} mails/s;"
                  f" sluice / peer = {ratio:.2f}", flush=True)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return ok


def big(size_mib):
    tls = acceptance.certificate(ROOT)
    server, info = dovecot(tls)
    ok = True
    try:
        for proto, user, url in [("pop3", "pop", f"pop3s://pop@localhost:{info['pop3s']}"),
                                 ("imap", "imap", f"imaps://imap@localhost:{info['imaps']}/INBOX")]:
            body = os.urandom(size_mib * 1048576)
            digests = {"big.bin": hashlib.sha256(body).hexdigest()}
            deliver(info, user, mail_with("big.bin", body), 0)
            del body
            secs, hwm, rss, cpu, bad, extra = run_node(info, tls, proto, user, url, digests)
            print(f"sluice {proto}: one mail with a {size_mib} MiB attachment: {secs:.1f} s, node peak RSS (VmHWM)"
                  f" {mib(hwm)}, GNU time {mib(rss)}; identical: {not bad}", flush=True)
            ok &= not bad and not extra
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return ok


def main():
    try:
        if MODE == "many":
            ok = many(ARGS[0] if ARGS else 1000, ARGS[1] if len(ARGS) > 1 else 1)
        elif MODE == "big":
            ok = big(ARGS[0] if ARGS else 100)
        else:
            raise SystemExit(__doc__)
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(ROOT, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
