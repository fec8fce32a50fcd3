"""Prometheus metrics: off by default; counters, histograms and the key-age gauge; summed over
the workers of a multi-worker gunicorn (prometheus_client's multiprocess mode)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from helpers.servers import create_client_cli, example_env, gunicorn_servers
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
GRANT = {"grant_type": "client_credentials"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metered_app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory(M2M_METRICS_ENABLED=True, M2M_TOKEN_RATE_LIMIT="2/minute")


def test_metrics_are_off_by_default(app: Flask) -> None:
    assert app.test_client().get("/metrics").status_code == 404
    assert "m2m_metrics" not in app.view_functions


def test_token_and_require_scope_metrics(metered_app: Flask) -> None:
    c = metered_app.test_client()
    before = samples(c.get("/metrics").get_data(as_text=True))
    client = register(metered_app, scopes="read")
    cid = client["client_id"]
    assert (
        c.post("/m2m/token", data=GRANT, headers=basic_auth(cid, "m2ms_wrong")).status_code == 401
    )
    unknown = basic_auth("m2m_" + "x" * 24, "m2ms_wrong")
    assert c.post("/m2m/token", data=GRANT, headers=unknown).status_code == 401
    assert (
        c.post(
            "/m2m/token",
            data={"grant_type": "password"},
            headers=basic_auth(cid, client["client_secret"]),
        ).status_code
        == 400
    )
    token = fetch_token(c, client)
    fetch_token(c, client)
    assert (
        c.post(
            "/m2m/token", data=GRANT, headers=basic_auth(cid, client["client_secret"])
        ).status_code
        == 429
    )
    assert c.get("/api/read", headers=bearer(token)).status_code == 200
    assert c.post("/api/write", headers=bearer(token)).status_code == 403
    assert c.get("/api/read", headers=bearer("nonsense")).status_code == 401

    response = c.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    after = samples(response.get_data(as_text=True))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("m2m_tokens_issued_total", client_id=cid) == 2
    assert delta("m2m_token_requests_refused_total", reason="invalid_secret", client_id=cid) == 1
    assert delta("m2m_token_requests_refused_total", reason="unknown_client", client_id="") == 1
    assert delta("m2m_token_requests_refused_total", reason="rate_limited", client_id=cid) == 1
    assert (
        delta("m2m_token_requests_refused_total", reason="unsupported_grant_type", client_id="")
        == 1
    )
    assert delta("m2m_rate_limit_hits_total", limit="token", mode="enforce") == 1
    assert delta("m2m_token_request_seconds_count") == 6
    assert delta("m2m_require_scope_seconds_count", outcome="ok") == 1
    assert delta("m2m_require_scope_seconds_count", outcome="insufficient_scope") == 1
    assert delta("m2m_require_scope_seconds_count", outcome="invalid_token") == 1
    assert 0 <= value(after, "m2m_signing_key_age_seconds") < 60
    # No secret, hash or token ever appears among the labels.
    text = response.get_data(as_text=True)
    assert client["client_secret"] not in text and token not in text


@pytest.fixture
def gunicorn_with_metrics(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """The example app under gunicorn with 2 workers and multiprocess metrics."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("from flask_m2m.metrics import gunicorn_child_exit as child_exit\n")
    env = example_env(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'metrics.db'}",
        SECRET_KEY="metrics-test-secret-key-0123456789",
        M2M_METRICS_ENABLED=True,
        M2M_TOKEN_RATE_LIMIT="100000/minute",
    )
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    client = create_client_cli(env, "metrics", "read")  # tables and client before the workers
    with gunicorn_servers(tmp_path) as start:
        server = start(env, 2, 1, "--config", str(config))
        yield server.url, metrics_dir, client


@pytest.mark.slow
def test_metrics_summed_over_gunicorn_workers(
    gunicorn_with_metrics: tuple[str, Path, dict[str, Any]],
) -> None:
    base, metrics_dir, client = gunicorn_with_metrics
    auth = (client["client_id"], client["client_secret"])

    def get_token(_: int) -> int:
        return requests.post(base + "/m2m/token", data=GRANT, auth=auth, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(get_token, range(60))) == {200}
    # Both workers served requests and wrote their own files ...
    pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2
    # ... and any worker's scrape adds them up.
    for _ in range(4):
        scrape = samples(requests.get(base + "/metrics", timeout=10).text)
        assert value(scrape, "m2m_tokens_issued_total", client_id=client["client_id"]) == 60
        assert value(scrape, "m2m_token_request_seconds_count") == 60
        assert value(scrape, "m2m_signing_key_age_seconds") >= 0
