"""Load generation: wrk (``-t2 -c16`` in all, split over the instances of a case), or a
Python fallback. A case with single-use credentials gets a fresh list before each run."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.proofs import write_list
from benchmarks.servers import Server

THREADS, CONNECTIONS = 2, 16
#: Values a wrk thread keeps unsent (at most one request per connection may follow its stop).
MARGIN = CONNECTIONS
Result = dict[str, float]


@dataclass
class Case:
    """One measured request on one server (or spread over several instances)."""

    label: str
    server: Server
    path: str
    method: str = "GET"
    body: str = ""
    auth: Callable[[], str] = lambda: ""
    #: which floor of the bare app the case is compared with: "token" (POST) or "get"
    kind: str = "get"
    #: more instances of the same configuration, loaded together with ``server``
    more: tuple[Server, ...] = ()
    #: a fresh single-use value per request (see benchmarks/proofs.py), and where it goes:
    #: "body" or the name of a header
    single_use: Callable[[], str] | None = None
    single_use_in: str = "body"
    #: the key (``server|label``) of the plain-Authlib case it is compared with
    peer: str = ""
    #: requests per second expected (sizes the single-use lists; updated after each run)
    rate_hint: float = 2000.0
    #: requests of the runs discarded because the single-use list ran out
    short_runs: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.server.name}|{self.label}"

    @property
    def instances(self) -> tuple[Server, ...]:
        return (self.server, *self.more)


def _single_use_count(case: Case, duration: float) -> int:
    """Values to generate: half again what the expected rate needs, plus the margins."""
    return int(case.rate_hint * duration * 1.5) + MARGIN * THREADS + 200


def _single_use_list(case: Case, count: int, workdir: Path) -> Path | None:
    if case.single_use is None:
        return None
    return write_list(workdir / "single-use.txt", count, case.single_use)


def run_wrk(case: Case, duration: float, workdir: Path) -> Result:
    """One wrk run per instance, in parallel, the threads and connections shared out.

    wrk always reports the full duration, even when a thread stopped early because its
    single-use list ran out: such a run is discarded and repeated with a list twice as long.
    """
    for _attempt in range(4):
        count = _single_use_count(case, duration)
        listed = _single_use_list(case, count, workdir)
        result = _run_wrk_once(case, duration, listed)
        if listed is None:
            return result
        case.rate_hint = result["rps"]
        # A thread stops MARGIN values before its end, losing up to its connections' requests.
        if result["requests"] < count - MARGIN * THREADS - 2 * CONNECTIONS:
            return result
        case.short_runs.append(result["requests"])
        case.rate_hint = 2 * max(case.rate_hint, count / max(1.0, duration))
    raise RuntimeError(f"{case.key}: the single-use list kept running out")


def _run_wrk_once(case: Case, duration: float, listed: Path | None) -> Result:
    instances = case.instances
    threads = max(1, THREADS // len(instances))
    connections = CONNECTIONS // len(instances)
    script = Path(__file__).with_name("wrk.lua")
    env = {
        **os.environ,
        "BENCH_METHOD": case.method,
        "BENCH_BODY": case.body,
        "BENCH_AUTH": case.auth(),
        "BENCH_LIST": str(listed or ""),
        "BENCH_LIST_KIND": case.single_use_in,
        "BENCH_THREADS": str(threads),
        "BENCH_MARGIN": str(MARGIN),
    }
    procs = [
        subprocess.Popen(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
             "--timeout", "10s", "-s", str(script), server.url + case.path],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for server in instances
    ]
    raws = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed for {case.key}: {err.strip()}")
        raws.append(json.loads([line for line in out.splitlines() if line.startswith("{")][-1]))
    return {
        "rps": sum(raw["requests"] / (raw["duration_us"] / 1e6) for raw in raws),
        "p50": max(raw["p50_us"] for raw in raws) / 1000,
        "p99": max(raw["p99_us"] for raw in raws) / 1000,
        "errors": sum(raw["status_errors"] + raw["socket_errors"] for raw in raws),
        "requests": sum(raw["requests"] for raw in raws),
    }


def run_python(case: Case, duration: float, workdir: Path) -> Result:
    """Fallback load generator: CONNECTIONS threads, one keep-alive connection each. Bound
    by the GIL and sharing the 2 cores with the server, it saturates far less than wrk."""
    listed = _single_use_list(case, _single_use_count(case, duration), workdir)
    values = iter(listed.read_text().splitlines()) if listed else itertools.repeat("")
    lock = threading.Lock()
    auth = case.auth()
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + duration

    def worker(server: Server) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < deadline:
            headers = {"Authorization": auth} if auth else {}
            with lock:
                value = next(values, None)
            if value is None:
                return
            body = value if listed and case.single_use_in == "body" else case.body
            if listed and case.single_use_in != "body":
                headers[case.single_use_in] = value
            if body:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            start = time.perf_counter()
            try:
                conn.request(case.method, case.path, body=body or None, headers=headers)
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

    instances = case.instances
    threads = [
        threading.Thread(target=worker, args=(instances[n % len(instances)],))
        for n in range(CONNECTIONS)
    ]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    if listed is not None:  # a list that ran out only shortened the run: the rate holds
        case.rate_hint = 2 * len(latencies) / elapsed
    return {"rps": len(latencies) / elapsed, "p50": pick(0.5), "p99": pick(0.99),
            "errors": errors[0], "requests": len(latencies)}  # fmt: skip
