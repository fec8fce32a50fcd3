"""Real gunicorn servers of the example app, for the multi-instance and concurrency tests.

Each server runs ``gunicorn 'example:create_app()'`` in a subprocess on a free 127.0.0.1 port,
configured through ``FLASK_*`` variables exactly as a deployment would be; its stderr goes
to a file so the tests can assert that no request raised.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def example_env(**flask_config: Any) -> dict[str, str]:
    """The environment for the example app: this process's, without any ``FLASK_*`` of its
    own, plus ``FLASK_<KEY>`` for each key (JSON-encoded unless a string, as
    ``from_prefixed_env`` reads them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    for key, value in flask_config.items():
        env[f"FLASK_{key}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def flask_cli(env: dict[str, str], *args: str) -> str:
    """Run ``flask --app example ARGS`` with ``env``; its stdout (fails the test on an error)."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_client_cli(env: dict[str, str], name: str, scope: str, *extra: str) -> dict[str, Any]:
    """``flask m2m create-client --json``: the new client's id, secret and fields."""
    out = flask_cli(env, "m2m", "create-client", "--name", name, "--scope", scope, "--json", *extra)
    result: dict[str, Any] = json.loads(out)
    return result


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something other than None or False; fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """The (unverified) header (0) or claims (1) of a compact JWT."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


class Gunicorn:
    """``gunicorn 'example:create_app()'`` (or another ``app``) on 127.0.0.1, started and
    stopped by the tests; it is up once ``ready_path`` answers 200."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        workers: int = 2,
        threads: int = 1,
        options: tuple[str, ...] = (),
        app: str = "example:create_app()",
        ready_path: str = "/m2m/jwks.json",
    ):
        self.env = env
        self.app = app
        self.ready_path = ready_path
        self.options = options
        self.log = log
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Gunicorn:
        """Start the server (on the same port as before, after a stop) and wait until it
        answers."""
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--bind", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "10",
            "--no-control-socket",
            *self.options,
            self.app,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.output()
            try:
                return requests.get(self.url + self.ready_path, timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or still booting
                return False

        poll(ready, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful shutdown), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def output(self) -> str:
        """Everything the server logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def gunicorn_servers(log_dir: Path) -> Iterator[Callable[..., Gunicorn]]:
    """``with gunicorn_servers(dir) as start``: ``start(env, workers=2, threads=1, *options)``
    starts a server (``options``: more gunicorn arguments); on leaving, every server is
    stopped, and none may have logged a traceback."""
    servers: list[Gunicorn] = []

    def start(
        env: dict[str, str], workers: int = 2, threads: int = 1, *options: str
    ) -> Gunicorn:
        log = log_dir / f"gunicorn-{len(servers)}.log"
        server = Gunicorn(env, log, workers, threads, options)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.output(), server.output()
