"""A real `jobd serve` on a temporary data directory and a free loopback
port, with a worker and a producer token: for the tests and the bench."""

import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
#: Queues only remote workers serve, one per test that needs its own.
QUEUES = [f"py{i}" for i in range(40)]


def jobd_bin():
    path = os.environ.get("JOBD_BIN") or str(REPO / "target" / "debug" / "jobd")
    if not Path(path).exists():
        raise SystemExit(f"no jobd binary at {path}: cargo build first, or set JOBD_BIN")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, root, queues=None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(32)
        self.config = root / "jobd.toml"
        queues = "\n".join(f"{q} = 0" for q in (queues or QUEUES))
        self.config.write_text(
            f'data_dir = "{root / "data"}"\nlisten = "127.0.0.1:{self.port}"\n'
            f'api_token = "{self.admin_token}"\nscheduler = false\n\n[queues]\n{queues}\n'
        )
        os.chmod(self.config, 0o600)
        self.log = open(root / "jobd.log", "wb")
        self.proc = subprocess.Popen([jobd_bin(), "--config", str(self.config), "serve"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        give_up = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError("jobd serve did not start:\n" + (root / "jobd.log").read_text())
            time.sleep(0.05)
        self.worker_token = self.token("pyworkers", "worker")
        self.producer_token = self.token("flask", "producer")

    def token(self, name, role):
        out = subprocess.run([jobd_bin(), "--config", str(self.config), "token", "add", name, "--role", role],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def jobd(self, *args):
        return subprocess.run([jobd_bin(), "--config", str(self.config), *args],
                              check=True, capture_output=True, text=True).stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
