"""A protected GET under load, as a ratio to a bare Flask app in its own process.

Three gunicorns (2 sync workers each, loopback): the bare Flask app of ``benchmarks.app``,
the example authorization server (``benchmarks.app:create_app()``, a SQLite file, its
defaults) and the example inventory (:class:`~flask_m2m.ResourceServer`, the routes of
:func:`create_inventory`). wrk (``-t2 -c16``) loads, in turn over ``--rounds`` rounds, the
bare route and each server's ``require_scope`` route with one token (so, after its first
use, a cached one); medians of the rounds are printed with their ratio to the bare app.

    python benchmarks/protected_wrk.py [--rounds 3] [--duration 4] [--baseline DIR]

``--baseline DIR`` runs the two servers of another checkout too (same database), in the
same rounds, to compare before and after under the same load.

Single rounds vary by ±15 % on a shared machine: compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
NEVER = "1000000000/minute"
AUDIENCE = "http://inventory.test"


def _items() -> dict[str, Any]:
    return {"items": []}


def create_inventory() -> Flask:
    """The example inventory (configured from ``FLASK_*``) with ``/bench/bare`` and
    ``/bench/scoped`` (``require_scope("inventory:read")``)."""
    from example.inventory import create_app
    from flask_m2m import require_scope

    app = create_app()
    app.add_url_rule("/bench/bare", "bench_bare", _items)
    app.add_url_rule("/bench/scoped", "bench_scoped", require_scope("inventory:read")(_items))
    return app


class Gunicorn:
    def __init__(self, spec: str, config: dict[str, str], log: Path, root: Path = ROOT):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        env.update({f"FLASK_{key}": value for key, value in config.items()})
        env["PYTHONPATH"] = str(root)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync",
                 "-b", f"fd://{sock.fileno()}", "--chdir", str(root),
                 "--log-level", "warning", spec],
                env=env, pass_fds=(sock.fileno(),), stdout=out, stderr=out,
            )  # fmt: skip
        sock.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/bench/bare", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gunicorn {spec} exited; see {log}") from None
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn {spec} did not start; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wrk(url: str, token: str | None, duration: int) -> float:
    """Requests per second of ``GET url`` (with the token as Bearer)."""
    env = dict(os.environ, BENCH_METHOD="GET", BENCH_AUTH=f"Bearer {token}" if token else "")
    script = Path(__file__).with_name("wrk.lua")
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{duration}s", "-s", str(script), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    if result["status_errors"] or result["socket_errors"]:
        raise RuntimeError(f"{url}: errors {result}")
    return float(result["requests"]) / (result["duration_us"] / 1e6)


def token(server: str, creds: dict[str, str], **data: str) -> str:
    form = urllib.parse.urlencode({"grant_type": "client_credentials", **data}).encode()
    request = urllib.request.Request(server + "/m2m/token", data=form)
    pair = f"{creds['client_id']}:{creds['client_secret']}"
    import base64

    request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


def register(config: dict[str, str]) -> dict[str, str]:
    """A client of the example server's database, with the inventory as an audience."""
    from example import create_app
    from flask_m2m import get_state
    from flask_m2m.lifecycle import create_client

    app = create_app({key: value for key, value in config.items() if key != "M2M_ISSUER"})
    with app.app_context():
        state = get_state(app)
        model, issued = create_client(
            state, actor="system", name="bench", scopes="read inventory:read",
            audiences=[AUDIENCE],
        )  # fmt: skip
        state.db.session.commit()
        assert issued is not None
        return {"client_id": model.client_id, "client_secret": issued.plaintext}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose two servers run in the same rounds"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gunicorn.log"
        config = {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.db",
            "SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "M2M_TOKEN_RATE_LIMIT": NEVER,
        }
        creds = register(config)
        servers = {"bare": Gunicorn("benchmarks.app:create_bare_app()", {}, log)}
        try:
            servers["as"] = Gunicorn("benchmarks.app:create_app()", config, log)
            roots = {"": ROOT}
            if args.baseline is not None:
                roots[" (baseline)"] = args.baseline
            tokens: dict[str, str | None] = {"bare": None}
            paths = {"bare": "/bench/bare"}
            for suffix, root in roots.items():
                server = servers["as" + suffix] = (
                    servers["as"] if not suffix else Gunicorn(
                        "benchmarks.app:create_app()", config, log, root
                    )
                )  # fmt: skip
                servers["rs" + suffix] = Gunicorn(
                    "benchmarks.protected_wrk:create_inventory()",
                    {"M2M_ISSUER": server.url, "M2M_AUDIENCE": AUDIENCE},
                    log,
                    root,
                )
                tokens["as" + suffix] = token(server.url, creds, scope="read")
                tokens["rs" + suffix] = token(
                    server.url, creds, scope="inventory:read", resource=AUDIENCE
                )
                paths["as" + suffix] = paths["rs" + suffix] = "/bench/scoped"
            for name, server in servers.items():  # warm-up (and the inventory's JWKS fetch)
                wrk(server.url + paths[name], tokens[name], 1)
            runs: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, server in servers.items():
                    runs[name].append(wrk(server.url + paths[name], tokens[name], args.duration))
        finally:
            for server in servers.values():
                server.stop()
    floor = statistics.median(runs["bare"])
    print(f"{args.rounds} rounds x {args.duration} s, wrk -t2 -c16, gunicorn -w2 sync; medians")
    labels = {
        "as": "authorization server, require_scope GET (cached token)",
        "rs": "ResourceServer, require_scope GET (cached token)",
    }
    for name, values in runs.items():
        median = statistics.median(values)
        rounds = " ".join(f"{v:,.0f}" for v in values)
        label = "bare Flask GET" if name == "bare" else labels[name[:2]] + name[2:]
        print(f"{label:<67} {median:8,.0f} req/s  x{median / floor:.2f}  ({rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
