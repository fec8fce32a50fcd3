"""Load benchmark of flask-m2m: every case side by side in one run, as ratios to a floor.

Each configuration runs in its own gunicorn (2 sync workers, loopback, a SQLite file in a
temporary directory, memory:// rate limits set so high they never trigger). Every round
measures, server by server, the floor (``/bench/bare``: a route with no flask-m2m code) and
then that server's cases; the table shows the medians over the rounds. See
docs/benchmarks.md.

    python benchmarks/run.py [--duration 10] [--rounds 3] [--skip-scaling] [--micro]
    python benchmarks/run.py --host-overhead   (what flask-m2m adds to a route of the app)
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET_KEY = "bench-secret-key-0123456789abcdef"
ISSUER = "http://bench.test"
NEVER = "1000000000/minute"  # a rate limit no benchmark reaches
THREADS, CONNECTIONS = 2, 16
TOKEN_BODY = "grant_type=client_credentials&scope=read"
BULK = 100_000


# -- servers ---------------------------------------------------------------------------------
@dataclass
class Server:
    """One gunicorn (2 sync workers) serving ``spec`` with ``config`` (``M2M_*`` etc.)."""

    name: str
    spec: str = "benchmarks.app:create_app()"
    config: dict[str, str] = field(default_factory=dict)
    #: client ids and secrets, tokens: filled in by :func:`prepare`
    data: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        env.update({f"FLASK_{key}": value for key, value in self.config.items()})
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self, log: Path) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync",
                 "-b", f"fd://{sock.fileno()}", "--chdir", str(ROOT),
                 "--log-level", "warning", self.spec],
                env=self.env(), pass_fds=(sock.fileno(),), stdout=out, stderr=out,
            )  # fmt: skip
        sock.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/bench/bare", timeout=2) as response:
                    if response.status == 200 and len(self.workers()) == 2:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.name} exited; see {log}")
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn for {self.name} did not start; see {log}")

    def workers(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def rss_mib(self) -> float:
        """Mean VmRSS of the workers, in MiB."""
        sizes = []
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return statistics.mean(sizes) if sizes else float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def m2m_config(db: Path, alg: str = "RS256", **extra: str) -> dict[str, str]:
    return {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}",
        "SECRET_KEY": SECRET_KEY,
        "RATELIMIT_STORAGE_URI": "memory://",
        "M2M_ISSUER": ISSUER,
        "M2M_SIGNING_ALG": alg,
        "M2M_TOKEN_RATE_LIMIT": NEVER,
        "M2M_FAILED_AUTH_RATE_LIMIT": NEVER,
        "M2M_MANAGEMENT_RATE_LIMIT": NEVER,
        **extra,
    }


def prepare(server: Server, clients: int = 10, revoked: int = 0) -> None:
    """Create the database: the signing key, the benchmark and admin clients (with the
    service functions), and ``clients - 2`` more clients plus ``revoked`` revoked-token rows
    (bulk-inserted with SQLAlchemy core)."""
    from sqlalchemy import insert

    from example import create_app, db
    from flask_m2m import get_state
    from flask_m2m import lifecycle as service

    config: dict[str, Any] = {k: v for k, v in server.config.items()}
    config["M2M_REUSE_TOKENS"] = config.get("M2M_REUSE_TOKENS") == "true"
    app = create_app(config)
    with app.app_context():
        state = get_state(app)
        state.keys.signing_key()
        bench, secret = service.create_client(
            state, actor="cli:bench", name="bench", scopes="read write"
        )
        admin, admin_secret = service.create_client(
            state, actor="cli:bench", name="admin", scopes="m2m:admin"
        )
        db.session.commit()
        server.data.update(
            client_id=bench.client_id, secret=secret.plaintext,
            admin_id=admin.client_id, admin_secret=admin_secret.plaintext,
        )  # fmt: skip
        models, now = state.models, int(time.time())
        tables = (models.client, models.client_secret, models.revoked_token)
        for start in range(0, max(clients - 2, revoked), 10_000):
            stop = min(start + 10_000, clients - 2)
            if start < stop:
                db.session.execute(
                    insert(tables[0].__table__),
                    [{"client_id": f"bulk_{i:06d}", "name": f"bulk {i}", "scope": "read"}
                     for i in range(start, stop)],
                )  # fmt: skip
                db.session.execute(
                    insert(tables[1].__table__),
                    [{"id": f"sec_bulk{i:06d}", "client_id": f"bulk_{i:06d}",
                      "secret_hash": "hmac-sha256$" + os.urandom(32).hex()}
                     for i in range(start, stop)],
                )  # fmt: skip
            stop = min(start + 10_000, revoked)
            if start < stop:
                db.session.execute(
                    insert(tables[2].__table__),
                    [{"jti": f"bulk{i:06d}", "client_id": bench.client_id,
                      "expires_at": now + 86400} for i in range(start, stop)],
                )  # fmt: skip
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def fetch_token(server: Server, client_id: str, secret: str, scope: str) -> str:
    request = urllib.request.Request(
        server.url + "/m2m/token",
        data=f"grant_type=client_credentials&scope={quote_plus(scope)}".encode(),
        headers={"Authorization": basic(client_id, secret)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


# -- load ------------------------------------------------------------------------------------
@dataclass
class Case:
    """One measured request on one server."""

    label: str
    server: Server
    path: str
    method: str = "GET"
    body: str = ""
    auth: Callable[[], str] = lambda: ""


def run_wrk(case: Case, duration: float) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_METHOD": case.method,
        "BENCH_BODY": case.body,
        "BENCH_AUTH": case.auth(),
    }
    script = Path(__file__).with_name("wrk.lua")
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s",
         "--timeout", "10s", "-s", str(script), case.server.url + case.path],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = [line for line in out.splitlines() if line.startswith("{")][-1]
    raw = json.loads(line)
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50": raw["p50_us"] / 1000,
        "p99": raw["p99_us"] / 1000,
        "errors": raw["status_errors"] + raw["socket_errors"],
    }


def run_python(case: Case, duration: float) -> dict[str, float]:
    """Fallback load generator: CONNECTIONS threads, one keep-alive connection each. Bound
    by the GIL and sharing the 2 cores with the server, it saturates far less than wrk."""
    host, port = case.server.url.removeprefix("http://").split(":")
    headers = {"Authorization": case.auth()} if case.auth() else {}
    if case.body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request(case.method, case.path, body=case.body or None, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    errors[0] += 1
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
            except OSError:
                errors[0] += 1
                conn.close()
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / elapsed, "p50": pick(0.5), "p99": pick(0.99),
            "errors": errors[0]}  # fmt: skip


# -- report ----------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the data-size part")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    parser.add_argument("--micro", action="store_true", help="run only the micro-benchmarks")
    parser.add_argument(
        "--host-overhead", action="store_true", help="run only benchmarks/host_overhead.py"
    )
    args = parser.parse_args()
    if args.host_overhead:
        from benchmarks import host_overhead

        return host_overhead.main([])
    if args.micro:
        import pytest

        return int(pytest.main(["-p", "no:cacheprovider", str(ROOT / "benchmarks/test_micro.py")]))
    load = run_wrk
    if args.python_load or shutil.which("wrk") is None:
        print("wrk not found or --python-load: using the Python load generator (GIL-bound, "
              "shares the cores with the server: lower figures, compressed ratios).")  # fmt: skip
        load = run_python

    tmp = Path(tempfile.mkdtemp(prefix="m2m-bench-"))
    servers: list[Server] = [Server("bare app", spec="benchmarks.app:create_bare_app()")]
    cases: dict[str, list[Case]] = {"bare app": []}

    def add(name: str, config: dict[str, str], clients: int = 10, revoked: int = 0) -> Server:
        server = Server(name, config=config)
        prepare(server, clients, revoked)
        servers.append(server)
        cases[name] = []
        return server

    def token_case(label: str, server: Server) -> Case:
        return Case(label, server, "/m2m/token", "POST", TOKEN_BODY,
                    lambda: basic(server.data["client_id"], server.data["secret"]))  # fmt: skip

    def bearer(server: Server, key: str) -> Callable[[], str]:
        return lambda: "Bearer " + server.data[key]

    print(f"Preparing databases in {tmp} ...", flush=True)
    rs = add("RS256", m2m_config(tmp / "rs.db", "RS256"))
    cases["RS256"] += [
        token_case("token RS256", rs),
        Case("route without require_scope", rs, "/bench/plain"),
        Case("route with require_scope", rs, "/bench/scoped", auth=bearer(rs, "read_token")),
    ]
    for alg in ("ES256", "EdDSA"):
        server = add(alg, m2m_config(tmp / f"{alg}.db", alg))
        cases[alg].append(token_case(f"token {alg}", server))
    opaque = add("opaque", m2m_config(tmp / "opaque.db", "ES256", M2M_TOKEN_FORMAT="opaque"))
    cases["opaque"].append(token_case("token opaque (SQLite)", opaque))
    reuse = add("reuse", m2m_config(tmp / "reuse.db", "ES256", M2M_REUSE_TOKENS="true"))
    cases["reuse"].append(token_case("token ES256, reuse on", reuse))
    if not args.skip_scaling:
        # No state cache: every token request looks its client up and every require_scope
        # request its revocation state, in the 10-row or the 100,000-row tables.
        uncached = {"M2M_STATE_CACHE_SECONDS": "0"}
        small = add("10 clients", m2m_config(tmp / "small.db", "ES256", **uncached), clients=10)
        hundred_config = m2m_config(tmp / "hundred.db", "ES256", **uncached)
        hundred = add("100 clients", hundred_config, clients=100)
        large = add("100k clients", m2m_config(tmp / "large.db", "ES256", **uncached), BULK, BULK)
        for server, size in ((small, "10 clients"), (large, "100k clients")):
            cases[server.name] += [
                token_case(f"token ES256, {size}", server),
                Case(f"require_scope, {'0' if server is small else '100k'} revoked", server,
                     "/bench/scoped", auth=bearer(server, "read_token")),
            ]  # fmt: skip
        for server, size in ((hundred, "100"), (large, "100k")):
            cases[server.name].append(
                Case(f"client list, {size} clients", server, "/m2m/clients?limit=50",
                     auth=bearer(server, "admin_token"))
            )  # fmt: skip

    log = tmp / "gunicorn.log"
    results: dict[str, list[dict[str, float]]] = {}
    ratios: dict[str, list[float]] = {}
    try:
        for server in servers:
            print(f"Starting {server.name} ...", flush=True)
            server.start(log)
            if "client_id" in server.data:
                d = server.data
                d["read_token"] = fetch_token(server, d["client_id"], d["secret"], "read")
                d["admin_token"] = fetch_token(
                    server, d["admin_id"], d["admin_secret"], "m2m:admin"
                )
        all_cases = [(s, [Case("floor", s, "/bench/bare"), *cases[s.name]]) for s in servers]
        for _, group in all_cases:  # warm-up: caches, keys, connections
            for case in group:
                load(case, 1)
        for number in range(1, args.rounds + 1):
            print(f"Round {number}/{args.rounds} ...", flush=True)
            for server, group in all_cases:
                floor = None
                for case in group:
                    result = load(case, args.duration)
                    key = f"{server.name}|{case.label}"
                    results.setdefault(key, []).append(result)
                    if floor is None:
                        floor = result["rps"]
                    ratios.setdefault(key, []).append(result["rps"] / floor)
        rss = {server.name: server.rss_mib() for server in servers}
    finally:
        for server in servers:
            server.stop()

    print()
    print(f"{args.rounds} rounds x {args.duration:g} s, wrk -t{THREADS} -c{CONNECTIONS}; medians")
    header = f"{'server':<13} {'case':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} " \
             f"{'errors':>6} {'floor':>6} {'RSS MiB':>8} {'RSS/bare':>8}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for server, group in all_cases:
        for case in group:
            key = f"{server.name}|{case.label}"
            runs = results[key]
            first = case.label == "floor"
            mem = rss[server.name]
            shown = f"{mem:8.1f} {mem / rss['bare app']:8.2f}" if first else ""
            rps, p50, p99 = (median([r[k] for r in runs]) for k in ("rps", "p50", "p99"))
            errors = sum(r["errors"] for r in runs)
            print(f"{server.name if first else '':<13} {case.label:<30} {rps:8.0f} {p50:7.2f} "
                  f"{p99:7.2f} {errors:6.0f} {median(ratios[key]):6.0%} {shown}")  # fmt: skip

    def ratio(server: str, label: str) -> float:
        return median(ratios[f"{server}|{label}"])

    def paired(a: str, b: str) -> float:
        """Median over the rounds of (rps of a) / (rps of b), each as a ratio to its floor."""
        return median([x / y for x, y in zip(ratios[a], ratios[b], strict=True)])

    targets = [
        ("token ES256 >= 60 % of floor", ratio("ES256", "token ES256") >= 0.60),
        ("token EdDSA >= 60 % of floor", ratio("EdDSA", "token EdDSA") >= 0.60),
        ("token RS256 >= 40 % of floor", ratio("RS256", "token RS256") >= 0.40),
        ("token opaque (SQLite) >= 35 % of floor",
         ratio("opaque", "token opaque (SQLite)") >= 0.35),
        ("require_scope >= 90 % of the same route without it",
         paired("RS256|route with require_scope", "RS256|route without require_scope") >= 0.90),
        ("zero errors", all(r["errors"] == 0 for runs in results.values() for r in runs)),
        ("worker RSS <= 1.5x bare app",
         max(v for k, v in rss.items() if k != "bare app") <= 1.5 * rss["bare app"]),
    ]  # fmt: skip
    if not args.skip_scaling:
        p50 = {k: median([r["p50"] for r in v]) for k, v in results.items()}
        targets += [
            ("token endpoint within 10 % from 10 to 100k clients",
             paired("100k clients|token ES256, 100k clients",
                    "10 clients|token ES256, 10 clients") >= 0.90),
            ("require_scope within 10 % from 0 to 100k revoked tokens",
             paired("100k clients|require_scope, 100k revoked",
                    "10 clients|require_scope, 0 revoked") >= 0.90),
            ("client list p50 flat (within 10 %) from 100 to 100k clients",
             p50["100k clients|client list, 100k clients"]
             <= 1.10 * p50["100 clients|client list, 100 clients"]),
        ]  # fmt: skip
    print()
    for name, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
