"""Does the token endpoint answer a wrong secret for a known client id as fast as any secret
for an unknown one? (If not, timing tells an attacker which ids exist.)

Run: ``python benchmarks/client_id_timing.py [--rounds 3000]``. It serves a fresh app (SQLite
file, test configuration) in-process with the Flask test client, interleaves the two kinds of
request and prints the median and 90th percentile of each, in microseconds. The tests assert
equal *work* (tests/test_client_authentication.py); this script shows the resulting times.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()

    from helpers.apps import make_app, register

    with tempfile.TemporaryDirectory() as folder:
        app, _ = make_app(f"sqlite:///{folder}/timing.db", RATELIMIT_ENABLED=False)
        known = register(app)["client_id"]
        unknown = "m2m_" + "Z" * 24
        web = app.test_client()
        times: dict[str, list[float]] = {"known id, wrong secret": [], "unknown id": []}

        def attempt(client_id: str) -> float:
            raw = f"{client_id}:m2ms_{'w' * 64}".encode()
            headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
            start = time.perf_counter()
            form = {"grant_type": "client_credentials"}
            response = web.post("/m2m/token", data=form, headers=headers)
            elapsed = time.perf_counter() - start
            assert response.status_code == 401, response.status_code
            return elapsed

        for _ in range(200):  # warm-up: caches, imports, the JIT-less interpreter's own caches
            attempt(known), attempt(unknown)
        for _ in range(args.rounds):
            times["known id, wrong secret"].append(attempt(known))
            times["unknown id"].append(attempt(unknown))
    print(f"{'request':<24} {'median µs':>10} {'p90 µs':>10}   ({args.rounds} rounds each)")
    for name, values in times.items():
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        print(f"{name:<24} {statistics.median(values) * 1e6:>10.0f} {p90 * 1e6:>10.0f}")


if __name__ == "__main__":
    main()
