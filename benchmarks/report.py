"""The table and the targets of the load benchmark (medians over the rounds)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.load import Case, Result
from benchmarks.servers import Server

BARE = "bare Flask"
FLOOR_TOKEN = f"{BARE}|floor: constant JSON (POST)"
FLOOR_GET = f"{BARE}|floor: constant JSON (GET)"
IN_APP = "in-app floor (/bench/bare)"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Measurements:
    """Every round's result per case key, and the ratios derived from them."""

    cases: list[Case]
    results: dict[str, list[Result]]

    def rps(self, key: str) -> list[float]:
        return [r["rps"] for r in self.results[key]]

    def per_round(self, key: str, reference: str) -> list[float]:
        """(rps of ``key``) / (rps of ``reference``), one figure per round."""
        return [a / b for a, b in zip(self.rps(key), self.rps(reference), strict=True)]

    def bare(self, case: Case) -> float:
        """Median over the rounds of the case's rate over the bare floor of its kind."""
        return median(self.per_round(case.key, FLOOR_TOKEN if case.kind == "token" else FLOOR_GET))

    def in_app(self, case: Case) -> float | None:
        floor = f"{case.server.name}|{IN_APP}"
        if floor not in self.results or case.key == floor:
            return None
        return median(self.per_round(case.key, floor))

    def authlib(self, case: Case) -> float | None:
        return median(self.per_round(case.key, case.peer)) if case.peer else None

    def get(self, key: str) -> Case:
        return next(case for case in self.cases if case.key == key)


def print_table(m: Measurements, rss: dict[str, float], header_note: str) -> None:
    print(header_note)
    header = (
        f"{'server':<22} {'case':<46} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'x bare':>6} {'x in-app':>8} {'x Authlib':>9} {'RSS MiB':>7}"
    )
    print(header)
    print("-" * len(header))
    shown: set[str] = set()
    previous = ""
    for case in m.cases:
        runs = m.results[case.key]
        name = case.server.name
        first, previous = name != previous, name
        with_rss = first and name not in shown
        shown.add(name)
        rps, p50, p99 = (median([r[k] for r in runs]) for k in ("rps", "p50", "p99"))
        errors = sum(r["errors"] for r in runs)
        in_app, authlib = m.in_app(case), m.authlib(case)
        label = case.label + (f" (x{len(case.instances)} instances)" if case.more else "")
        print(
            f"{name if first else '':<22} {label:<46} {rps:7.0f} {p50:7.2f} {p99:7.2f} "
            f"{errors:6.0f} {m.bare(case):6.2f} "
            f"{'' if in_app is None else f'{in_app:.2f}':>8} "
            f"{'' if authlib is None else f'{authlib:.2f}':>9} "
            f"{f'{rss[name]:.1f}' if with_rss and name in rss else '':>7}"
        )
    for case in m.cases:
        if case.short_runs:
            print(
                f"note: {case.key}: {len(case.short_runs)} run(s) used up their single-use "
                "list and were repeated with a longer one"
            )


def targets(
    m: Measurements, rss: dict[str, float], servers: list[Server], scaling: bool
) -> list[tuple[str, bool]]:
    """(name, holds) of every target; see docs/benchmarks.md."""

    def bare(key: str) -> float:
        return m.bare(m.get(key))

    def authlib(key: str) -> float:
        value = m.authlib(m.get(key))
        assert value is not None
        return value

    def paired(a: str, b: str) -> float:
        return median(m.per_round(a, b))

    token_rs, token_es = "RS256 (default)|token RS256", "ES256|token ES256"
    token_opaque = "opaque|token opaque (SQLite)"
    ours = [s for s in servers if not s.peer and s.name != BARE]
    found: list[tuple[str, bool]] = [
        ("token RS256 >= 0.33 x bare floor", bare(token_rs) >= 0.33),
        ("token ES256 >= 0.60 x bare floor", bare(token_es) >= 0.60),
        ("token EdDSA >= 0.60 x bare floor", bare("EdDSA|token EdDSA") >= 0.60),
        ("token opaque (SQLite) >= 0.35 x bare floor", bare(token_opaque) >= 0.35),
        ("token RS256 >= 1.5 x plain Authlib RS256", authlib(token_rs) >= 1.5),
        ("token ES256 >= 1.5 x plain Authlib ES256", authlib(token_es) >= 1.5),
        ("token opaque >= 1.5 x plain Authlib opaque (SQLite)", authlib(token_opaque) >= 1.5),
        ("require_scope GET, cached token, authorization server >= 0.90 x bare floor",
         bare("RS256 (default)|require_scope GET, cached token") >= 0.90),
        ("require_scope GET, cached token, ResourceServer >= 0.90 x bare floor",
         bare("ResourceServer|require_scope GET, cached token") >= 0.90),
        ("require_scope >= 90 % of the same route without it (in-app, existing)",
         paired("RS256 (default)|require_scope GET, cached token",
                "RS256 (default)|route without require_scope") >= 0.90),
        ("zero errors", all(r["errors"] == 0 for runs in m.results.values() for r in runs)),
        ("worker RSS <= 1.5x bare Flask (flask-m2m servers)",
         max(rss[s.name] for s in ours) <= 1.5 * rss[BARE]),
    ]  # fmt: skip
    if scaling:
        p50 = {k: median([r["p50"] for r in v]) for k, v in m.results.items()}
        found += [
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
    return found
