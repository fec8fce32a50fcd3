"""The client helper (``flask_m2m.client``) against the example app served over real HTTP.

Token requests are counted on the server: every request by path (``before_request``) and every
token issued (the ``token_issued`` signal).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from flask import Flask, request
from helpers.apps import RATELIMIT_STORAGE_URI, close_app, make_app, register
from helpers.console import console_app
from helpers.http import LiveServer, basic_auth

from example import worker
from flask_m2m import signals
from flask_m2m.client import (
    ClientCredentials,
    ClientCredentialsAuth,
    DiscoveryError,
    TokenError,
)

ROOT = Path(__file__).resolve().parent.parent


class Served:
    """The example app on a live server, with server-side counters."""

    def __init__(self, app: Flask, server: LiveServer):
        self.app = app
        self.url = server.url
        self.hits: Counter[str] = Counter()  # requests per path
        self.issued: list[str] = []  # client ids of the tokens issued
        self.token_forms: list[dict[str, str]] = []
        self.resources: list[list[str]] = []  # the resource parameters of each token request
        self._lock = threading.Lock()
        app.before_request(self._count)
        signals.token_issued.connect(self._on_issued, sender=app)

    def _count(self) -> None:
        with self._lock:
            self.hits[request.path] += 1
            if request.path == "/m2m/token":
                self.token_forms.append(dict(request.form))
                self.resources.append(request.form.getlist("resource"))

    def _on_issued(self, sender: Flask, **kwargs: Any) -> None:
        with self._lock:
            self.issued.append(kwargs["client_id"])

    def reset(self) -> None:
        with self._lock:
            self.hits.clear()
            self.issued.clear()
            self.token_forms.clear()
            self.resources.clear()

    @property
    def token_requests(self) -> int:
        return self.hits["/m2m/token"]

    def register(self, scopes: str = "read write", **kwargs: Any) -> dict[str, Any]:
        return register(self.app, scopes, **kwargs)

    def credentials(self, client: dict[str, Any], **kwargs: Any) -> ClientCredentials:
        kwargs.setdefault("token_endpoint", f"{self.url}/m2m/token")
        return ClientCredentials(
            client_id=client["client_id"], client_secret=client["client_secret"], **kwargs
        )

    def revoke(self, client: dict[str, Any], token: str) -> None:
        response = httpx.post(
            f"{self.url}/m2m/revoke",
            data={"token": token},
            headers=basic_auth(client["client_id"], client["client_secret"]),
        )
        assert response.status_code == 200


@pytest.fixture(scope="module")
def _example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The example app on 127.0.0.1 with no token-state cache, so revocations show at once."""
    config = {
        "M2M_STATE_CACHE_SECONDS": 0,
        "M2M_ACCESS_TOKEN_EXPIRES_IN_MIN": 1,
        "RATELIMIT_STORAGE_URI": RATELIMIT_STORAGE_URI,
        "RATELIMIT_KEY_PREFIX": f"m2m-test-{uuid.uuid4().hex}",
    }
    with console_app(tmp_path_factory.mktemp("example"), **config) as app:
        server = LiveServer(app)
        served = Served(app, server)
        served.credentials(served.register()).token()  # the server makes its signing key now
        yield served
        server.stop()
        signals.token_issued.disconnect(served._on_issued, sender=app)


@pytest.fixture(scope="module")
def _foreign_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app, db = make_app(f"sqlite:///{tmp_path_factory.mktemp('foreign') / 'foreign.db'}")
    server = LiveServer(app)
    served = Served(app, server)
    yield served
    server.stop()
    signals.token_issued.disconnect(served._on_issued, sender=app)
    close_app(app, db, drop_tables=True)


@pytest.fixture
def served(_example_server: Served) -> Served:
    """The example app, served for the whole module; its counters start at zero."""
    _example_server.reset()
    return _example_server


@pytest.fixture
def foreign(_foreign_server: Served) -> Served:
    """Another flask-m2m app (own database and keys, issuer https://issuer.test): it refuses
    every token of ``served``."""
    _foreign_server.reset()
    return _foreign_server


def test_token_reused(served: Served) -> None:
    creds = served.credentials(served.register())
    with httpx.Client(base_url=served.url, auth=ClientCredentialsAuth(creds)) as http:
        statuses = [http.get("/api/whoami").status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert (served.token_requests, len(served.issued), creds.fetch_count) == (1, 1, 1)
    assert served.hits["/api/whoami"] == 10


def test_headers_and_scope(served: Served) -> None:
    client = served.register()
    creds = served.credentials(client, scope="read", audience="https://api.example")
    auth = ClientCredentialsAuth(creds)
    whoami = httpx.get(f"{served.url}/api/whoami", headers=creds.headers())
    assert whoami.json() == {"client_id": client["client_id"], "scopes": ["read"]}
    # 403 insufficient_scope is not a reason to renew
    assert httpx.post(f"{served.url}/api/items", json={"name": "x"}, auth=auth).status_code == 403
    assert (creds.fetch_count, auth.retry_count) == (1, 0)
    assert served.token_forms == [
        {"grant_type": "client_credentials", "scope": "read", "audience": "https://api.example"}
    ]


def test_one_token_per_scopes_and_resource(served: Served) -> None:
    """``resource=`` (RFC 8707 §2, one parameter per resource): one cached token per scopes
    and resources, each with its ``aud``; sync and async share the cache."""
    inventory, billing = "https://inventory.test", "https://billing.test"
    client = served.register("read write", audiences=[inventory, billing])
    creds = served.credentials(client, resource=inventory)
    first = creds.token()
    assert creds.token(resource=inventory) == first
    assert asyncio.run(creds.atoken()) == first
    others = [
        creds.token(resource=billing),
        creds.token(resource=[inventory, billing]),
        creds.token(resource=()),  # no resource: the server's default audience
        creds.token(scope="read"),
    ]
    assert len({first, *others}) == 5
    assert [creds.token(resource=billing), creds.token(scope="read")] == [others[0], others[3]]
    assert creds.fetch_count == served.token_requests == 5
    assert served.resources == [[inventory], [billing], [inventory, billing], [], [inventory]]
    auds = [_claims(t)["aud"] for t in (first, *others)]
    assert auds[:3] == [inventory, billing, [inventory, billing]]
    assert auds[4] == inventory
    headers = ClientCredentialsAuth(creds, resource=billing)
    with requests.Session() as session:
        session.auth = headers
        prepared = session.prepare_request(requests.Request("GET", served.url))
    assert prepared.headers["Authorization"] == f"Bearer {others[0]}"
    with pytest.raises(TokenError) as refused:
        creds.token(resource="https://elsewhere.test")
    assert refused.value.error == "invalid_target"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


def test_client_secret_post(served: Served) -> None:
    creds = served.credentials(served.register(), auth_method="client_secret_post")
    assert (
        httpx.get(f"{served.url}/api/items", auth=ClientCredentialsAuth(creds)).status_code == 200
    )
    assert set(served.token_forms[0]) == {"grant_type", "client_id", "client_secret"}


def test_renewed_shortly_before_expiry(served: Served) -> None:
    # 2-second tokens, renewed 1 second before they expire (the server has its keys already)
    creds = served.credentials(served.register(access_token_expires_in=2), leeway=1)
    first = creds.token()
    assert creds.token() == first
    time.sleep(1.1)
    second = creds.token()
    assert second != first
    assert creds.token() == second
    assert (served.token_requests, creds.fetch_count) == (2, 2)
    with httpx.Client(auth=ClientCredentialsAuth(creds)) as http:
        assert http.get(f"{served.url}/api/whoami").status_code == 200


def test_leeway_as_share_of_lifetime(served: Served) -> None:
    creds = served.credentials(served.register(access_token_expires_in=2), leeway="75%")
    first = creds.token()
    time.sleep(0.6)  # past 25 % of the lifetime
    assert creds.token() != first
    assert creds.fetch_count == 2


@pytest.mark.parametrize("leeway", ["abc", "100%", "-5%", -1])
def test_bad_leeway(leeway: Any) -> None:
    with pytest.raises(ValueError, match="leeway"):
        ClientCredentials("http://127.0.0.1:1/t", client_id="a", client_secret="b", leeway=leeway)


def test_401_renews_once_and_retries(served: Served) -> None:
    client = served.register()
    creds = served.credentials(client)
    auth = ClientCredentialsAuth(creds)
    with httpx.Client(base_url=served.url, auth=auth) as http:
        assert http.get("/api/whoami").status_code == 200
        served.revoke(client, creds.token())
        response = http.get("/api/whoami")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert (creds.fetch_count, auth.retry_count, len(served.issued)) == (2, 1, 2)


def test_persistent_401_is_returned(served: Served, foreign: Served) -> None:
    creds = served.credentials(served.register())
    auth = ClientCredentialsAuth(creds)
    response = httpx.get(f"{foreign.url}/api/whoami", auth=auth)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert foreign.hits["/api/whoami"] == 2  # the request and one retry, no more
    assert (creds.fetch_count, auth.retry_count, served.token_requests) == (2, 1, 2)


def test_no_retry_when_disabled(served: Served, foreign: Served) -> None:
    creds = served.credentials(served.register())
    auth = ClientCredentialsAuth(creds, retry_on_401=False)
    assert httpx.get(f"{foreign.url}/api/whoami", auth=auth).status_code == 401
    assert (foreign.hits["/api/whoami"], creds.fetch_count) == (1, 1)


def test_threads_share_one_token_request(served: Served) -> None:
    creds = served.credentials(served.register())
    auth = ClientCredentialsAuth(creds)
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def call(http: httpx.Client) -> None:
        barrier.wait()
        statuses.append(http.get("/api/whoami").status_code)

    with httpx.Client(base_url=served.url, auth=auth) as http:
        threads = [threading.Thread(target=call, args=(http,)) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert statuses == [200] * 50
    assert (served.token_requests, len(served.issued), creds.fetch_count) == (1, 1, 1)


def test_threads_after_revocation_renew_once(served: Served) -> None:
    client = served.register()
    creds = served.credentials(client)
    served.revoke(client, creds.token())
    barrier = threading.Barrier(20)
    tokens: list[str] = []

    def renew(old: str) -> None:
        barrier.wait()
        tokens.append(creds.renew(old))

    old = creds.token()
    threads = [threading.Thread(target=renew, args=(old,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(tokens)) == 1 and old not in tokens
    assert creds.fetch_count == 2


def test_async_httpx(served: Served) -> None:
    client = served.register()
    creds = served.credentials(client)
    auth = ClientCredentialsAuth(creds)

    async def main() -> tuple[list[int], httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, auth=auth) as http:
            responses = await asyncio.gather(*(http.get("/api/whoami") for _ in range(20)))
            served.revoke(client, await creds.atoken())
            return [r.status_code for r in responses], await http.get("/api/items")

    statuses, after_revoke = asyncio.run(main())
    assert statuses == [200] * 20
    assert after_revoke.status_code == 200
    assert [r.status_code for r in after_revoke.history] == [401]
    assert (creds.fetch_count, auth.retry_count, served.token_requests) == (2, 1, 2)


def test_async_discovery_and_persistent_401(served: Served, foreign: Served) -> None:
    creds = served.credentials(served.register(), token_endpoint=None, issuer=served.url)
    auth = ClientCredentialsAuth(creds)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(auth=auth) as http:
            return await http.get(f"{foreign.url}/api/whoami")

    assert asyncio.run(main()).status_code == 401
    assert creds.token_endpoint == f"{served.url}/m2m/token"
    assert (creds.fetch_count, auth.retry_count, foreign.hits["/api/whoami"]) == (2, 1, 2)


def test_requests_flavour(served: Served, foreign: Served) -> None:
    client = served.register()
    creds = served.credentials(client)
    auth = ClientCredentialsAuth(creds)
    with requests.Session() as session:
        session.auth = auth
        statuses = [session.get(f"{served.url}/api/whoami").status_code for _ in range(10)]
        assert statuses == [200] * 10
        assert creds.fetch_count == 1
        served.revoke(client, creds.token())
        posted = session.post(f"{served.url}/api/items", json={"name": "from requests"})
        assert posted.status_code == 201, posted.text
        assert [r.status_code for r in posted.history] == [401]
        assert posted.json()["name"] == "from requests"  # the body was sent again
        assert (creds.fetch_count, auth.retry_count) == (2, 1)
        assert session.get(f"{foreign.url}/api/whoami").status_code == 401
    assert (creds.fetch_count, auth.retry_count, foreign.hits["/api/whoami"]) == (3, 2, 2)
    assert requests.get(f"{served.url}/api/items", auth=auth).status_code == 200


def test_discovery(served: Served) -> None:
    creds = served.credentials(served.register(), token_endpoint=None, issuer=served.url + "/")
    assert creds.token_endpoint is None
    assert httpx.get(f"{served.url}/api/whoami", auth=ClientCredentialsAuth(creds)).is_success
    assert creds.token_endpoint == f"{served.url}/m2m/token"
    assert served.hits["/.well-known/oauth-authorization-server"] == 1
    creds.invalidate()
    creds.token()  # the endpoint is discovered once
    assert served.hits["/.well-known/oauth-authorization-server"] == 1


def test_discovery_refuses_metadata_of_another_issuer(served: Served, foreign: Served) -> None:
    # foreign's metadata says issuer https://issuer.test, not the URL it was fetched from
    creds = foreign.credentials(served.register(), token_endpoint=None, issuer=foreign.url)
    with pytest.raises(DiscoveryError, match="issuer") as caught:
        creds.token()
    assert caught.value.error == "invalid_metadata"
    assert foreign.token_requests == 0


def test_ca_bundle_path(served: Served) -> None:
    """A CA bundle path is given to httpx as an SSL context (a path is deprecated in httpx 0.28)."""
    certifi = pytest.importorskip("certifi")
    creds = served.credentials(served.register(), verify=certifi.where())
    assert creds.token()
    creds.invalidate()
    assert asyncio.run(creds.atoken())
    assert creds.fetch_count == 2


def test_unreachable_server_is_a_clear_error() -> None:
    creds = ClientCredentials(issuer="http://127.0.0.1:9", client_id="a", client_secret="b")
    with pytest.raises(DiscoveryError) as caught:
        creds.token()
    assert caught.value.error == "unreachable"


def test_bad_secret_raises_at_once(served: Served) -> None:
    client = served.register()
    creds = served.credentials({**client, "client_secret": "m2ms_wrong"})
    with pytest.raises(TokenError) as caught:
        creds.token()
    assert (caught.value.status_code, caught.value.error) == (401, "invalid_client")
    with pytest.raises(TokenError, match="invalid_client"):
        httpx.get(f"{served.url}/api/whoami", auth=ClientCredentialsAuth(creds))
    with pytest.raises(TokenError, match="invalid_client"):
        requests.get(f"{served.url}/api/whoami", auth=ClientCredentialsAuth(creds))
    assert (served.token_requests, creds.fetch_count, creds.failure_count) == (3, 3, 3)
    assert served.hits["/api/whoami"] == 0 and served.issued == []


def test_secret_and_token_never_logged(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    client = served.register()
    creds = served.credentials(client)
    with caplog.at_level(logging.DEBUG, logger="flask_m2m.client"):
        token = creds.token()
        bad = served.credentials({**client, "client_secret": "m2ms_wrong_secret"})
        with pytest.raises(TokenError):
            bad.token()
    assert caplog.records  # something was logged, none of it secret
    for text in (client["client_secret"], token, "m2ms_wrong_secret"):
        assert text not in caplog.text
        assert text not in repr(creds) + repr(bad)


@pytest.mark.slow
def test_works_without_httpx(served: Served) -> None:
    """With only requests installed the module imports, and the requests flavour works."""
    client = served.register()
    code = f"""
import sys
sys.modules["httpx"] = None  # as if httpx were not installed
import asyncio, requests
from flask_m2m.client import ClientCredentials, ClientCredentialsAuth
creds = ClientCredentials(issuer={served.url!r}, client_id={client["client_id"]!r},
                          client_secret=sys.stdin.read())
auth = ClientCredentialsAuth(creds)
print([requests.get({served.url!r} + "/api/whoami", auth=auth).status_code for _ in range(3)])
print(creds.fetch_count)
creds.invalidate()
try:
    asyncio.run(creds.aheaders())
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=client["client_secret"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["[200, 200, 200]", "1"]
    assert "needs httpx" in lines[2] and "flask-m2m[client]" in lines[2]


def _worker(served: Served, secret: str, client_id: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M2M_", "FLASK_"))}
    env.update(M2M_CLIENT_ID=client_id, M2M_CLIENT_SECRET=secret, M2M_ISSUER=served.url)
    return subprocess.run(
        [sys.executable, "-m", "example.worker", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_worker(served: Served) -> None:
    client = served.register()
    done = _worker(
        served, client["client_secret"], client["client_id"], "--count", "3", "--interval", "0.1"
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("created item") == 3 and out.count("items on the server") == 3
    assert "6 API calls, 1 token request(s), 0 retried" in out
    assert client["client_secret"] not in out + done.stderr
    assert served.token_requests == 1 and served.issued == [client["client_id"]]
    assert served.hits["/.well-known/oauth-authorization-server"] == 1
    assert (served.hits["/api/items"], served.hits["/m2m/token"]) == (6, 1)


def test_worker_bad_secret(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = served.register()
    monkeypatch.setenv("M2M_CLIENT_ID", client["client_id"])
    monkeypatch.setenv("M2M_CLIENT_SECRET", "m2ms_wrong")
    monkeypatch.setenv("M2M_ISSUER", served.url)
    assert worker.main(["--count", "2"]) == 1
    err = capsys.readouterr().err
    assert "authentication failed" in err and "invalid_client" in err
    assert served.token_requests == 1 and served.hits["/api/items"] == 0


def test_worker_refused_by_the_api(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = served.register(scopes="read")
    monkeypatch.setenv("M2M_CLIENT_ID", client["client_id"])
    monkeypatch.setenv("M2M_CLIENT_SECRET", client["client_secret"])
    monkeypatch.setenv("M2M_ISSUER", served.url)
    assert worker.main(["--count", "2"]) == 1
    assert "HTTP 403" in capsys.readouterr().err
    assert served.hits["/api/items"] == 1


def test_worker_usage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("M2M_CLIENT_ID", raising=False)
    assert worker.main([]) == 2
    assert "M2M_CLIENT_ID" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        worker.main(["--count", "0"])
    assert caught.value.code == 2
