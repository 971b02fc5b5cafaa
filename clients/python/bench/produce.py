"""The latency bench's producer, a process of its own (as a web app would
be): N jobs at a steady rate, each carrying the time it was enqueued."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobd import Client  # noqa: E402

url, token, queue, rate, n = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
client = Client(url, token)
start = time.perf_counter()
for i in range(n):
    pause = start + i / rate - time.perf_counter()
    if pause > 0:
        time.sleep(pause)
    client.enqueue(queue, "ping", {"t": time.time()})
print(f"{n / (time.perf_counter() - start):.1f}")
