"""A real SMTP server for Sluice's tests: aiosmtpd (PyPI, a third party's
SMTP implementation), with STARTTLS or implicit TLS, AUTH, and recipients
whose local part picks the answer:

  refuse*  550 5.1.1 (refused for good)     later*  451 4.7.1 (always put off)
  flaky*   451 the first time, then 250      baddata* 554 after DATA
  anything else: 250

Each mail taken is written to DIR as N.eml (the content as received, dot
stuffing undone) and N.json (the envelope), N counting from 1; the port it
listens on is printed on stdout.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0
        self.seen = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if local.startswith("later"):
            return "451 4.7.1 <%s>: Try again later" % address
        if local.startswith("flaky"):
            tries = self.seen.get(address, 0)
            self.seen[address] = tries + 1
            if tries == 0:
                return "451 4.3.0 <%s>: Busy, try again" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@")[0].lower().startswith("baddata") for r in envelope.rcpt_tos):
            return "554 5.6.0 Message refused by policy"
        self.count += 1
        n = self.count
        base = os.path.join(self.folder, str(n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(base + ".json.tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "tls": session.ssl is not None,
                       "auth": session.auth_data if isinstance(session.auth_data, str) else None}, f)
        # The mail first: a reader goes by the .json files.
        os.rename(base + ".eml.tmp", base + ".eml")
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued as Q%d" % n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--implicit", action="store_true", help="TLS from the first byte (smtps)")
    p.add_argument("--no-starttls", action="store_true", help="do not offer STARTTLS")
    p.add_argument("--auth", help="USER:PASSWORD required to send")
    a = p.parse_args()
    context = None
    if a.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
    user, password = (a.auth.split(":", 1) if a.auth else (None, None))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    handler = Handler(a.dir)

    def factory():
        return SMTP(handler,
                    hostname="sluice-test-smtpd",
                    data_size_limit=1 << 31,
                    tls_context=None if (a.implicit or a.no_starttls) else context,
                    require_starttls=False,
                    authenticator=authenticator if user else None,
                    auth_required=user is not None,
                    auth_require_tls=not a.no_starttls,
                    timeout=60)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=context if a.implicit else None)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
