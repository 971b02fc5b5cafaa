"""A webhook receiver for the notification tests: Python's http.server on
loopback.  Each POST is checked the way a receiver should check jobd's
webhooks — HMAC-SHA256 over "<timestamp>.<body>" with the shared secret
(from $WEBHOOK_SECRET), compared in constant time, the timestamp within
five minutes — and written to OUT/N.json: the path, the headers, the body,
whether the signature held, and the status answered.

    WEBHOOK_SECRET=... python3 server.py PORT OUT [--fail-first N] [--fail-code 503] [--cert C --key K]

--fail-first N answers the first N requests with --fail-code (and records
them too); --cert and --key serve HTTPS.  Prints "ready" when it listens;
stops on SIGTERM.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-code", type=int, default=503)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    secret = os.environ["WEBHOOK_SECRET"].encode()
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            stamp = self.headers.get("X-Jobd-Timestamp", "")
            given = self.headers.get("X-Jobd-Signature", "")
            want = "sha256=" + hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
            valid = hmac.compare_digest(given, want) and fresh
            with lock:
                state["seen"] += 1
                n = state["seen"]
            status = a.fail_code if n <= a.fail_first else (200 if valid else 401)
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body) if body else None,
                "valid": valid,
                "status": status,
            }
            base = os.path.join(a.out, str(n))
            with open(base + ".tmp", "w") as f:
                json.dump(record, f)
            os.rename(base + ".tmp", base + ".json")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    server.shutdown()


if __name__ == "__main__":
    main()
