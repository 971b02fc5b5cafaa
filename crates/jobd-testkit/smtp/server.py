"""A real SMTP server for the e-mail tests: aiosmtpd (Debian's
python3-aiosmtpd) on loopback.  Each message it accepts is written to
OUT/N.eml with OUT/N.json (the envelope: sender and recipients).

    python3 server.py PORT OUT [--fail-first N] [--fail-code 451] [--reject RCPT]...
                              [--tls starttls|implicit --cert CERT --key KEY]

--fail-first N answers the first N messages' DATA with --fail-code (a
temporary 451, or a permanent 550); --reject answers RCPT TO for that
address with 550.  --tls starttls offers STARTTLS and requires it before
MAIL; --tls implicit speaks TLS from the first byte.  Prints "ready" when it
listens; stops on SIGTERM.
"""

import argparse
import json
import os
import signal
import ssl

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, fail_first, fail_code, reject):
        self.out, self.fail_first, self.fail_code, self.reject = out, fail_first, fail_code, set(reject)
        self.seen = 0
        self.saved = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.fail_first:
            if self.fail_code.startswith("4"):
                return f"{self.fail_code} 4.3.0 try again later"
            return f"{self.fail_code} 5.7.1 message refused"
        self.saved += 1
        base = os.path.join(self.out, str(self.saved))
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        os.rename(base + ".tmp", base + ".json")
        return "250 2.0.0 queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-code", default="451")
    ap.add_argument("--reject", action="append", default=[])
    ap.add_argument("--tls", choices=["starttls", "implicit"])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    tls = {}
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        tls = {"ssl_context": ctx} if a.tls == "implicit" else {"tls_context": ctx, "require_starttls": True}
    # SIGTERM is waited for here; the server's thread never gets it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    controller = Controller(Handler(a.out, a.fail_first, a.fail_code, a.reject), hostname="127.0.0.1", port=a.port, **tls)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    controller.stop()


if __name__ == "__main__":
    main()
