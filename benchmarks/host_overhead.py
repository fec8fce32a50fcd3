"""What flask-m2m adds to a host route that uses none of its features, in-process.

Two apps alike but for ``M2M(app, db)`` (both with Flask-SQLAlchemy and the same ``/ping``
view, memory:// rate limits), each called as a WSGI app in a loop: ``--number`` requests per
repeat, the two apps taking turns over ``--repeat`` repeats, the garbage collector off while
timing. Prints microseconds per request (min and median of the repeats) and the difference.
The clock is the process's CPU time, so that other programs on a busy machine do not count;
``--wall`` uses the wall clock instead. The Python function calls per request (under
cProfile) follow: a count that no other load on the machine disturbs.

    python benchmarks/host_overhead.py [--number 20000] [--repeat 9] [--wall]
    tox -e bench -- --host-overhead
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: What flask-m2m may add to a host route, in microseconds (the goal of the measurement).
GOAL_US = 10.0


def build_app(with_m2m: bool) -> Any:
    """A host app with one plain route; with flask-m2m initialised on it when ``with_m2m``."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench-secret-key-0123456789abcdef",
        SQLALCHEMY_DATABASE_URI="sqlite://",
        RATELIMIT_STORAGE_URI="memory://",
        M2M_ISSUER="https://issuer.test",
    )
    db = SQLAlchemy()
    db.init_app(app)
    if with_m2m:
        from flask_m2m import M2M

        M2M(app, db)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


def wsgi_loop(
    app: Any,
    number: int,
    clock: Callable[[], float] = time.process_time,
    environ: dict[str, Any] | None = None,
) -> float:
    """Seconds (of ``clock``) for ``number`` calls of ``app``'s WSGI callable with ``environ``
    (default: ``GET /ping``), each answered 200."""
    from werkzeug.test import EnvironBuilder

    if environ is None:
        environ = EnvironBuilder(path="/ping", method="GET").get_environ()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        assert status.startswith("200"), status
        return lambda data: None

    call = app.wsgi_app
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        for _ in range(number):
            body: Iterable[bytes] = call(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return clock() - start
    finally:
        if gc_was_on:
            gc.enable()


def measure(
    number: int, repeat: int, clock: Callable[[], float] = time.process_time
) -> dict[str, list[float]]:
    """Microseconds per request of each app, one figure per repeat (the apps alternate)."""
    apps = {"without M2M": build_app(False), "with M2M": build_app(True)}
    for app in apps.values():  # warm-up: imports, routing, first-request work
        wsgi_loop(app, max(1, number // 10), clock)
    runs: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(repeat):
        for name, app in apps.items():
            runs[name].append(wsgi_loop(app, number, clock) / number * 1e6)
    return runs


def calls_per_request(app: Any, number: int = 200) -> float:
    """Python function calls (cProfile) per ``GET /ping`` of ``app``, loop included."""
    import cProfile
    import pstats

    wsgi_loop(app, 1)
    profile = cProfile.Profile()
    profile.enable()
    wsgi_loop(app, number)
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / number  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=9, help="repeats per app (alternating)")
    parser.add_argument("--wall", action="store_true", help="wall clock, not CPU time")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.wall else time.process_time
    runs = measure(args.number, args.repeat, clock)
    kind = "wall-clock" if args.wall else "CPU"
    print(f"GET /ping, {args.repeat} x {args.number} WSGI calls per app; {kind} µs per request")
    print(f"{'app':<12} {'min':>8} {'median':>8}")
    for name, values in runs.items():
        print(f"{name:<12} {min(values):8.2f} {statistics.median(values):8.2f}")
    without, with_ = runs["without M2M"], runs["with M2M"]
    added_min = min(with_) - min(without)
    added_median = statistics.median(with_) - statistics.median(without)
    print(f"{'added':<12} {added_min:8.2f} {added_median:8.2f}")
    counts = {name: calls_per_request(build_app(name == "with M2M")) for name in runs}
    print(
        "Python function calls per request: "
        + ", ".join(f"{name} {count:.0f}" for name, count in counts.items())
    )
    ok = added_min <= GOAL_US
    print(f"{'PASS' if ok else 'FAIL'}  flask-m2m adds <= {GOAL_US:g} µs to a host route (min)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
