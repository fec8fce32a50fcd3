"""What one ``POST /m2m/token`` costs in-process: the example app's WSGI callable, called in a
loop with a prepared environ (client_credentials, client_secret_basic), as gunicorn calls it.

Deterministic figures first (Python function calls per request under cProfile, database
round trips per request), then CPU microseconds per request (min and median of the repeats;
on a shared machine only a rough figure). ``--profile`` prints the top functions by
cumulative time; ``--loop N`` only runs N requests after the warm-up (for
``valgrind --tool=callgrind``: the difference of two runs with different N, divided by
their difference, is the instructions per request).

    python benchmarks/profile_token.py [--alg ES256] [--opaque] [--reuse] [--pg URL]
    python benchmarks/profile_token.py --alg ES256 --profile [--top 40]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/profile_token.py --alg ES256 --loop 2000
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

NEVER = "1000000000/minute"
BODY = b"grant_type=client_credentials&scope=read"


def build(tmp: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The example app as the benchmark configures it, and the environ of a token request."""
    from example import create_app, db
    from flask_m2m import get_state
    from flask_m2m import lifecycle as service

    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": args.database_url or f"sqlite:///{tmp}/token.db",
        "SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "RATELIMIT_STORAGE_URI": args.ratelimit_uri,
        "M2M_ISSUER": "http://bench.test",
        "M2M_SIGNING_ALG": args.alg,
        "M2M_TOKEN_RATE_LIMIT": NEVER,
        "M2M_FAILED_AUTH_RATE_LIMIT": NEVER,
        "M2M_MANAGEMENT_RATE_LIMIT": NEVER,
        "M2M_TOKEN_FORMAT": "opaque" if args.opaque else "jwt",
        "M2M_REUSE_TOKENS": args.reuse,
    }
    app = create_app(config, instance_path=tmp)
    with app.app_context():
        state = get_state(app)
        state.keys.signing_key()
        client, secret = service.create_client(
            state, actor="cli:bench", name="bench", scopes="read write"
        )
        db.session.commit()
        client_id, plaintext = client.client_id, secret.plaintext
        db.session.remove()
    basic = base64.b64encode(f"{client_id}:{plaintext}".encode()).decode()
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/m2m/token",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": "Basic " + basic,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(BODY)),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    return app, environ


def caller(app: Any, environ: dict[str, Any]) -> Callable[[], None]:
    """One request through ``app``'s WSGI callable, its body read as a server would."""
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(s)
        return None

    def once() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(BODY)
        result = app(env, start_response)
        try:
            b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if status.pop() != "200 OK":
            raise SystemExit("token request failed")

    return once


def count_round_trips(app: Any, once: Callable[[], None], number: int) -> float:
    """Database round trips per request (as ``tests/test_round_trips.py`` counts them)."""
    from helpers.round_trips import RoundTrips

    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    with RoundTrips(engine) as trips:
        for _ in range(number):
            once()
    return trips.count / number


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alg", default="ES256")
    parser.add_argument("--opaque", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--database-url", help="default: a SQLite file")
    parser.add_argument("--ratelimit-uri", default="memory://")
    parser.add_argument("-n", "--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--loop", type=int, help="only run this many requests (callgrind)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, environ = build(tmp, args)
        once = caller(app, environ)
        for _ in range(200):
            once()
        if args.loop is not None:
            for _ in range(args.loop):
                once()
            return
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.number):
            once()
        profiler.disable()
        stats = pstats.Stats(profiler)
        calls = stats.total_calls / args.number  # type: ignore[attr-defined]
        trips = count_round_trips(app, once, 200)
        if args.profile:
            stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
        samples = []
        gc.disable()
        try:
            for _ in range(args.repeat):
                start = time.process_time()
                for _ in range(args.number):
                    once()
                samples.append((time.process_time() - start) / args.number * 1e6)
        finally:
            gc.enable()
        kind = "opaque" if args.opaque else args.alg
        print(
            f"{kind}{' reuse' if args.reuse else ''}: {calls:.0f} calls/request, "
            f"{trips:g} round trips/request, CPU µs/request min {min(samples):.0f} "
            f"median {statistics.median(samples):.0f}"
        )


if __name__ == "__main__":
    main()
