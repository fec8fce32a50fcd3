"""Profile one hot path in-process with cProfile (Flask test client, SQLite file database).

    python benchmarks/profile_hot.py token --alg ES256 [-n 2000] [--opaque] [--reuse]
    python benchmarks/profile_hot.py scoped
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.apps import fetch_token, make_app, register  # noqa: E402
from helpers.http import basic_auth, bearer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["token", "scoped"])
    parser.add_argument("--alg", default="ES256")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--opaque", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, _ = make_app(
            f"sqlite:///{tmp}/profile.db",
            M2M_SIGNING_ALG=args.alg,
            M2M_TOKEN_FORMAT="opaque" if args.opaque else "jwt",
            M2M_REUSE_TOKENS=args.reuse,
            M2M_TOKEN_RATE_LIMIT="1000000000/minute",
        )
        credentials = register(app)
        client = app.test_client()
        token = fetch_token(client, credentials, "read")
        if args.case == "token":
            headers = basic_auth(credentials["client_id"], credentials["client_secret"])

            def once() -> None:
                data = {"grant_type": "client_credentials", "scope": "read"}
                assert client.post("/m2m/token", data=data, headers=headers).status_code == 200
        else:

            def once() -> None:
                assert client.get("/api/read", headers=bearer(token)).status_code == 200

        for _ in range(50):
            once()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.n):
            once()
        profiler.disable()
        stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
        stats.print_stats(args.top)


if __name__ == "__main__":
    main()
