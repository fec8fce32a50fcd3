"""Load benchmark of flask-m2m: every case side by side in one run, as ratios to a bare
Flask app and to plain Authlib.

Each configuration runs in its own gunicorn (2 sync workers, loopback, a SQLite file in a
temporary directory, memory:// rate limits set so high they never trigger); the floor is a
bare Flask app (no extension) in its own gunicorn, and the peer a minimal Authlib server
(benchmarks/peer_authlib.py). Every round measures the floor, then every server's cases; the
table shows the medians over the rounds. See docs/benchmarks.md.

    python benchmarks/run.py [--duration 5] [--rounds 3] [--skip-scaling]
                             [--skip-production] [--skip-host-overhead] [--python-load]
    python benchmarks/run.py --micro           (only the micro-benchmarks)
    python benchmarks/run.py --host-overhead   (only what flask-m2m adds to a host route)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import proofs  # noqa: E402
from benchmarks.load import CONNECTIONS, THREADS, Case, Result, run_python, run_wrk  # noqa: E402
from benchmarks.report import (  # noqa: E402
    BARE,
    FLOOR_GET,
    FLOOR_TOKEN,
    IN_APP,
    Measurements,
    print_table,
    targets,
)
from benchmarks.servers import (  # noqa: E402
    ISSUER,
    PG_URL,
    REDIS_URL,
    RS_AUDIENCE,
    Server,
    basic,
    fetch_token,
    m2m_config,
    post_token,
    prepare,
    prepare_peer,
    production_reachable,
    reset_schema,
)

TOKEN_BODY = "grant_type=client_credentials&scope=read"
BULK = 100_000
#: Rounds and duration of the in-process host-overhead measure run at the end.
HOST_OVERHEAD_ARGS = ["--number", "5000", "--repeat", "9"]
Load = Callable[[Case, float, Path], Result]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the data-size part")
    parser.add_argument(
        "--skip-production", action="store_true", help="skip the PostgreSQL + Redis rows"
    )
    parser.add_argument(
        "--skip-host-overhead", action="store_true", help="skip the in-process host measure"
    )
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    parser.add_argument("--micro", action="store_true", help="run only the micro-benchmarks")
    parser.add_argument(
        "--host-overhead", action="store_true", help="run only benchmarks/host_overhead.py"
    )
    return parser.parse_args(argv)


class Plan:
    """The servers and their cases, in the order each round measures them."""

    def __init__(self, tmp: Path, duration: float) -> None:
        self.tmp = tmp
        self.servers: list[Server] = []
        self.cases: list[Case] = []
        #: the client's keys: the private_key_jwt client's and the DPoP key
        self.client_key = proofs.new_key("bench-client-1")
        self.dpop_key = proofs.new_key()
        # Proofs are signed just before each measurement; their iat must stay within the
        # window (default 300 s) until the last one is sent.
        window = max(300, int(duration) + 120)
        self.dpop_config = {"M2M_DPOP_PROOF_MAX_AGE": str(window)} if window > 300 else {}

    def add(self, server: Server, *, in_app_floor: bool = False) -> Server:
        self.servers.append(server)
        if in_app_floor:
            self.cases.append(Case(IN_APP, server, "/bench/bare"))
        return server

    def case(self, case: Case) -> Case:
        self.cases.append(case)
        return case

    # -- the servers ---------------------------------------------------------------------
    def bare(self) -> None:
        bare = self.add(Server(BARE, spec="benchmarks.app:create_bare_app()"))
        auth = basic("client-id-of-22-chars-", "x" * 43)
        self.case(Case(FLOOR_TOKEN.split("|")[1], bare, "/bench/token", "POST", TOKEN_BODY,
                       lambda: auth, kind="token"))  # fmt: skip
        self.case(Case(FLOOR_GET.split("|")[1], bare, "/bench/bare",
                       auth=lambda: "Bearer " + "x" * 600))  # fmt: skip

    def peers(self) -> dict[str, str]:
        """The plain-Authlib servers; returns the key of each peer case by name."""
        keys = {}
        for alg in ("RS256", "ES256", "opaque"):
            server = self.add(
                Server(f"Authlib {alg}", spec="benchmarks.peer_authlib:create_app()", peer=True)
            )
            prepare_peer(server, alg, self.tmp)
            label = f"token {alg}" + (" (SQLite)" if alg == "opaque" else "")
            keys[f"token {alg}"] = self.case(
                self.token_case(label, server, "/oauth/token")
            ).key
            if alg == "RS256":
                keys["GET"] = self.case(
                    Case("protected GET (JWT validator)", server, "/api/items",
                         auth=self.bearer(server, "read_token"))
                ).key  # fmt: skip
        return keys

    def example(self, peer: dict[str, str]) -> Server:
        """The example app with its defaults (RS256) and the ES256, EdDSA, opaque, reuse
        variants; returns the RS256 one."""
        rs = self.add(
            Server("RS256 (default)", config=m2m_config(str(self.tmp / "rs.db"), "RS256",
                                                        **self.dpop_config)),
            in_app_floor=True,
        )  # fmt: skip
        prepare(rs, client_jwks=proofs.public_jwks(self.client_key))

        def token_url() -> str:
            return rs.url + "/m2m/token"

        def scoped_url() -> str:
            return rs.url + "/bench/scoped"

        self.case(self.token_case("token RS256", rs, peer=peer["token RS256"]))
        self.case(Case("route without require_scope", rs, "/bench/plain"))
        self.case(Case("require_scope GET, cached token", rs, "/bench/scoped",
                       auth=self.bearer(rs, "read_token"), peer=peer["GET"]))  # fmt: skip
        self.case(Case(
            "token, private_key_jwt (ES256 assertion)", rs, "/m2m/token", "POST", kind="token",
            single_use=lambda: proofs.assertion_body(
                self.client_key, rs.data["keyed_id"], ISSUER),
        ))  # fmt: skip
        dpop_token = self.token_case("token RS256, DPoP-bound", rs)
        dpop_token.single_use = lambda: proofs.dpop_proof(self.dpop_key, "POST", token_url())
        dpop_token.single_use_in = "DPoP"
        self.case(dpop_token)
        self.case(Case(
            "require_scope GET, DPoP, cached token", rs, "/bench/scoped",
            auth=lambda: "DPoP " + rs.data["dpop_token"], single_use_in="DPoP",
            single_use=lambda: proofs.dpop_proof(
                self.dpop_key, "GET", scoped_url(), rs.data["dpop_token"]),
        ))  # fmt: skip
        for alg in ("ES256", "EdDSA"):
            server = self.add(Server(alg, config=m2m_config(str(self.tmp / f"{alg}.db"), alg)))
            prepare(server)
            self.case(self.token_case(f"token {alg}", server, peer=peer.get(f"token {alg}", "")))
        opaque_config = m2m_config(str(self.tmp / "opaque.db"), "ES256", M2M_TOKEN_FORMAT="opaque")
        opaque = self.add(Server("opaque", config=opaque_config))
        prepare(opaque)
        self.case(self.token_case("token opaque (SQLite)", opaque, peer=peer["token opaque"]))
        reuse_config = m2m_config(str(self.tmp / "reuse.db"), "ES256", M2M_REUSE_TOKENS="true")
        reuse = self.add(Server("reuse", config=reuse_config))
        prepare(reuse)
        self.case(self.token_case("token ES256, reuse on", reuse))
        return rs

    def resource_server(self, issuer: Server) -> None:
        """The example inventory trusting ``issuer`` (its JWKS over HTTP, cached)."""

        def point_at_issuer(server: Server) -> None:
            server.config["M2M_JWKS_URI"] = issuer.url + "/m2m/jwks.json"

        config = {"M2M_ISSUER": ISSUER, "M2M_AUDIENCE": RS_AUDIENCE, **self.dpop_config}
        rs = self.add(
            Server("ResourceServer", spec="benchmarks.app:create_resource_app()",
                   config=config, setup=point_at_issuer),
            in_app_floor=True,
        )  # fmt: skip

        def scoped_url() -> str:
            return rs.url + "/bench/scoped"

        self.case(Case("require_scope GET, cached token", rs, "/bench/scoped",
                       auth=lambda: "Bearer " + issuer.data["rs_token"]))  # fmt: skip
        self.case(Case(
            "require_scope GET, DPoP, cached token", rs, "/bench/scoped",
            auth=lambda: "DPoP " + issuer.data["rs_dpop_token"], single_use_in="DPoP",
            single_use=lambda: proofs.dpop_proof(
                self.dpop_key, "GET", scoped_url(), issuer.data["rs_dpop_token"]),
        ))  # fmt: skip

    def scaling(self) -> None:
        # No state cache: every token request looks its client up and every require_scope
        # request its revocation state, in the 10-row or the 100,000-row tables.
        uncached = {"M2M_STATE_CACHE_SECONDS": "0"}
        small = self.add(
            Server("10 clients", config=m2m_config(str(self.tmp / "small.db"), "ES256", **uncached))
        )
        prepare(small, clients=10)
        hundred_config = m2m_config(str(self.tmp / "hundred.db"), "ES256", **uncached)
        hundred = self.add(Server("100 clients", config=hundred_config))
        prepare(hundred, clients=100)
        large_config = m2m_config(str(self.tmp / "large.db"), "ES256", **uncached)
        large = self.add(Server("100k clients", config=large_config))
        prepare(large, BULK, BULK)
        for server, size in ((small, "10 clients"), (large, "100k clients")):
            self.case(self.token_case(f"token ES256, {size}", server))
            self.case(Case(f"require_scope, {'0' if server is small else '100k'} revoked",
                           server, "/bench/scoped", auth=self.bearer(server, "read_token")))
        self.case(Case("client list, 100 clients", hundred, "/m2m/clients?limit=50",
                       auth=self.bearer(hundred, "admin_token")))  # fmt: skip
        self.case(Case("client list, 100k clients", large, "/m2m/clients?limit=50",
                       auth=self.bearer(large, "admin_token")))  # fmt: skip

    def production(self, peer: dict[str, str]) -> None:
        """Two instances (two gunicorns) on one PostgreSQL database (a schema per algorithm)
        with the rate limits in Redis."""
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        for alg in ("RS256", "ES256"):
            url = reset_schema(PG_URL, f"bench_{alg.lower()}")
            config = m2m_config(url, alg, RATELIMIT_STORAGE_URI=REDIS_URL)
            first = self.add(Server(f"PG+Redis {alg}", config=config))
            second = self.add(Server(f"PG+Redis {alg} #2", config=config, data=first.data))
            prepare(first)
            self.case(self.token_case(f"token {alg}", first, peer=peer[f"token {alg}"],
                                      more=(second,)))  # fmt: skip
            if alg == "RS256":
                self.case(Case("require_scope GET, cached token", first, "/bench/scoped",
                               auth=self.bearer(first, "read_token"), peer=peer["GET"],
                               more=(second,)))  # fmt: skip

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def bearer(server: Server, key: str) -> Callable[[], str]:
        return lambda: "Bearer " + server.data[key]

    @staticmethod
    def token_case(
        label: str, server: Server, path: str = "/m2m/token", peer: str = "",
        more: tuple[Server, ...] = (),
    ) -> Case:  # fmt: skip
        return Case(label, server, path, "POST", TOKEN_BODY, kind="token", peer=peer, more=more,
                    auth=lambda: basic(server.data["client_id"], server.data["secret"]))

    def fetch_tokens(self, server: Server, rs_issuer: Server | None) -> None:
        """The tokens a server's cases send, once it runs."""
        d = server.data
        if server.peer:
            answer = post_token(server.url + "/oauth/token", TOKEN_BODY,
                                {"Authorization": basic(d["client_id"], d["secret"])})
            d["read_token"] = str(answer["access_token"])  # fmt: skip
            return
        if "admin_id" not in d or "read_token" in d:
            return
        d["read_token"] = fetch_token(server, d["client_id"], d["secret"], "read")
        d["admin_token"] = fetch_token(server, d["admin_id"], d["admin_secret"], "m2m:admin")
        if server is rs_issuer:
            resource = f"&resource={quote_plus(RS_AUDIENCE)}"
            d["rs_token"] = fetch_token(server, d["client_id"], d["secret"], "read", resource)
            for key, extra in (("dpop_token", ""), ("rs_dpop_token", resource)):
                proof = proofs.dpop_proof(self.dpop_key, "POST", server.url + "/m2m/token")
                answer = post_token(
                    server.url + "/m2m/token", TOKEN_BODY + extra,
                    {"Authorization": basic(d["client_id"], d["secret"]), "DPoP": proof},
                )  # fmt: skip
                assert answer["token_type"] == "DPoP", answer
                d[key] = str(answer["access_token"])


def measure(plan: Plan, load: Load, args: argparse.Namespace) -> dict[str, list[Result]]:
    """Warm every case up, then run the rounds; every case once per round, in plan order."""
    work = plan.tmp
    for case in plan.cases:  # warm-up: caches, keys, connections
        load(case, 1, work)
        case.short_runs.clear()
    results: dict[str, list[Result]] = {}
    for number in range(1, args.rounds + 1):
        print(f"Round {number}/{args.rounds} ...", flush=True)
        for case in plan.cases:
            results.setdefault(case.key, []).append(load(case, args.duration, work))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.host_overhead:
        from benchmarks import host_overhead

        return host_overhead.main([])
    if args.micro:
        import pytest

        return int(pytest.main(["-p", "no:cacheprovider", str(ROOT / "benchmarks/test_micro.py")]))
    load: Load = run_wrk
    if args.python_load or shutil.which("wrk") is None:
        print("wrk not found or --python-load: using the Python load generator (GIL-bound, "
              "shares the cores with the server: lower figures, compressed ratios).")  # fmt: skip
        load = run_python

    tmp = Path(tempfile.mkdtemp(prefix="m2m-bench-"))
    print(f"Preparing databases in {tmp} ...", flush=True)
    plan = Plan(tmp, args.duration)
    plan.bare()
    peer = plan.peers()
    issuer = plan.example(peer)
    plan.resource_server(issuer)
    if not args.skip_scaling:
        plan.scaling()
    production_note = "PostgreSQL + Redis rows: skipped (--skip-production)"
    if not args.skip_production:
        why = production_reachable()
        if why is None:
            plan.production(peer)
            production_note = ""
        else:
            production_note = f"PostgreSQL + Redis rows: skipped, {why}"
    if production_note:
        print(production_note, flush=True)

    log = tmp / "gunicorn.log"
    try:
        for server in plan.servers:
            print(f"Starting {server.name} ...", flush=True)
            server.start(log)
            plan.fetch_tokens(server, issuer)
        results = measure(plan, load, args)
        rss = {server.name: server.rss_mib() for server in plan.servers}
    finally:
        for server in plan.servers:
            server.stop()

    print()
    m = Measurements(plan.cases, results)
    print_table(m, rss, f"{args.rounds} rounds x {args.duration:g} s, wrk -t{THREADS} "
                        f"-c{CONNECTIONS} (split over the instances); medians")  # fmt: skip
    if production_note:
        print(production_note)
    found = targets(m, rss, plan.servers, not args.skip_scaling)
    if not args.skip_host_overhead:
        from benchmarks import host_overhead

        print()
        print("What flask-m2m adds to a host route (in-process, benchmarks/host_overhead.py):")
        found.append(
            ("host overhead <= 10 µs per request", host_overhead.main(HOST_OVERHEAD_ARGS) == 0)
        )
    print()
    for name, ok in found:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok in found) else 1


if __name__ == "__main__":
    sys.exit(main())
