"""What a protected GET costs, in-process, through each app's WSGI callable.

Five cases, each ``GET`` answering ``{"items": []}``:

- ``bare``: a Flask app with that one route and no extension (the floor);
- ``as-plain`` / ``as-scoped``: the example authorization server (SQLite file, its defaults),
  the route without and with ``require_scope("read")`` (Bearer, a token already verified);
- ``rs-plain`` / ``rs-scoped``: the example inventory (:class:`~flask_m2m.ResourceServer`),
  the route without and with ``require_scope("inventory:read")``, its JWK set fetched once
  from the authorization server served over HTTP on 127.0.0.1.

Prints, per case, the Python function calls per request under cProfile (a count that other
load on the machine does not disturb) and the CPU microseconds per request (min and median
of ``--repeat`` alternating runs of ``--number`` calls, the garbage collector off).
``--profile CASE`` prints that case's cProfile instead (``--top`` lines, by internal time);
``--metrics`` turns the server's Prometheus metrics on. Instructions per request, which other
load does not change (the two ``Ir`` totals of ``-n 100`` and ``-n 300``: their difference
over 200)::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.%p \
        python benchmarks/protected_overhead.py --callgrind as-scoped --number 100

    python benchmarks/protected_overhead.py [--number 5000] [--repeat 7]
    python benchmarks/protected_overhead.py --profile as-scoped
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.host_overhead import wsgi_loop  # noqa: E402

CASES = ("bare", "as-plain", "as-scoped", "rs-plain", "rs-scoped")


def _items() -> dict[str, Any]:
    return {"items": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Case:
    """One app and the WSGI environ of its request."""

    def __init__(self, app: Any, path: str, token: str | None = None, host: str = "localhost"):
        from werkzeug.test import EnvironBuilder

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.app = app
        self.environ = EnvironBuilder(
            path=path, method="GET", headers=headers, base_url=f"http://{host}"
        ).get_environ()

    def loop(self, number: int, clock: Callable[[], float] = time.process_time) -> float:
        """Seconds of ``clock`` for ``number`` calls of the app's WSGI callable."""
        return wsgi_loop(self.app, number, clock, self.environ)


def build_cases(tmp: str, metrics: bool = False) -> tuple[dict[str, Case], Any]:
    """The five cases, and the HTTP server of the authorization server (to stop)."""
    import threading

    from flask import Flask
    from helpers.apps import register
    from helpers.http import basic_auth
    from werkzeug.serving import make_server

    from example import create_app
    from example.inventory import create_app as create_inventory
    from flask_m2m import require_scope

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the JWKS fetch's access log
    bare = Flask("bare")
    bare.add_url_rule("/bench/bare", "bench_bare", _items)

    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    audience = "http://inventory.test"
    app = create_app(
        {
            "M2M_ISSUER": issuer,
            "M2M_TOKEN_RATE_LIMIT": "1000000000/minute",
            "M2M_METRICS_ENABLED": metrics,
        },
        instance_path=tmp,
    )
    app.add_url_rule("/bench/plain", "bench_plain", _items)
    app.add_url_rule("/bench/scoped", "bench_scoped", require_scope("read")(_items))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    creds = register(app, "read inventory:read", audiences=[audience])

    def token(**data: str) -> str:
        response = app.test_client().post(
            "/m2m/token",
            data={"grant_type": "client_credentials", **data},
            headers=basic_auth(creds["client_id"], creds["client_secret"]),
        )
        assert response.status_code == 200, response.get_json()
        return str(response.get_json()["access_token"])

    rs = create_inventory({"M2M_ISSUER": issuer, "M2M_AUDIENCE": audience})
    rs.add_url_rule("/bench/plain", "bench_plain", _items)
    rs.add_url_rule("/bench/scoped", "bench_scoped", require_scope("inventory:read")(_items))
    cases = {
        "bare": Case(bare, "/bench/bare"),
        "as-plain": Case(app, "/bench/plain", host=f"127.0.0.1:{port}"),
        "as-scoped": Case(app, "/bench/scoped", token(scope="read"), host=f"127.0.0.1:{port}"),
        "rs-plain": Case(rs, "/bench/plain"),
        "rs-scoped": Case(rs, "/bench/scoped", token(scope="inventory:read", resource=audience)),
    }
    for case in cases.values():  # warm-up: imports, routing, JWKS fetch, token cache
        case.loop(200)
    return cases, server


def calls_per_request(case: Case, number: int = 500) -> float:
    profile = cProfile.Profile()
    profile.enable()
    case.loop(number)
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / number  # type: ignore[attr-defined]


def _instrumented(case: Case, number: int) -> None:
    """``number`` calls with callgrind's instrumentation on (``callgrind_control -i``)."""
    import os
    import subprocess

    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    case.loop(number)
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=5000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats per case (alternating)")
    parser.add_argument("--profile", choices=CASES, help="print this case's cProfile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--metrics", action="store_true", help="M2M_METRICS_ENABLED on the server")
    parser.add_argument(
        "--callgrind", choices=CASES, help="under callgrind --instr-atstart=no: measure this case"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cases, server = build_cases(tmp, args.metrics)
        try:
            if args.callgrind:
                _instrumented(cases[args.callgrind], args.number)
                return 0
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                cases[args.profile].loop(args.number)
                profile.disable()
                stats = pstats.Stats(profile).strip_dirs().sort_stats(args.sort)
                print(f"{stats.total_calls / args.number:.1f} calls per request")  # type: ignore[attr-defined]
                stats.print_stats(args.top)
                return 0
            counts = {name: calls_per_request(case) for name, case in cases.items()}
            runs: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.repeat):
                for name, case in cases.items():
                    runs[name].append(case.loop(args.number) / args.number * 1e6)
            print(f"{args.repeat} x {args.number} WSGI calls per case; CPU µs per request")
            print(f"{'case':<10} {'calls':>7} {'min µs':>8} {'median':>8} {'+min vs bare':>13}")
            floor = min(runs["bare"])
            for name, values in runs.items():
                print(
                    f"{name:<10} {counts[name]:7.0f} {min(values):8.1f} "
                    f"{statistics.median(values):8.1f} {min(values) - floor:13.1f}"
                )
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
