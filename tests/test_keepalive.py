"""An early refusal leaves a keep-alive connection usable (RFC 9112 §9.3, §6.3): the unread
body is read and thrown away, up to ``M2M_MAX_DISCARD_BYTES``, so that the server can read
the client's next request on the same connection."""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from flask import Blueprint, Flask
from helpers.apps import SECRET_KEY, fetch_token, register
from helpers.http import basic_auth, bearer
from helpers.servers import Gunicorn, create_client_cli, example_env, gunicorn_servers, poll

from flask_m2m.bodies import discard_body, discard_unread_body
from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state

FORM = "application/x-www-form-urlencoded"
GRANT = {"grant_type": "client_credentials"}
BIG = 1_000_000  # over M2M_MAX_REQUEST_BYTES, under the default M2M_MAX_DISCARD_BYTES
ROUNDS = 20


class RecordingInput(io.RawIOBase):
    """A ``wsgi.input`` over ``data`` that records how far it was read; optionally raising
    ``ConnectionResetError`` once ``fail_at`` bytes were read (a client gone mid-body)."""

    def __init__(self, data: bytes, fail_at: int | None = None):
        self.data = data
        self.position = 0
        self.fail_at = fail_at

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_at is not None and self.position >= self.fail_at:
            raise ConnectionResetError("client went away")
        size = min(len(buffer), len(self.data) - self.position)
        buffer[:size] = self.data[self.position : self.position + size]
        self.position += size
        return size


def post(app: Flask, path: str, body: RecordingInput, length: int | None, **kw: Any) -> Any:
    """POST ``body`` to ``path`` with the given ``Content-Length`` (None: chunked, ended by
    the server as gunicorn and werkzeug's server do for chunked bodies)."""
    environ: dict[str, Any] = {"wsgi.input": body}
    if length is None:
        environ.update({"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    else:
        environ["CONTENT_LENGTH"] = str(length)
    return app.test_client().open(
        path,
        method=kw.pop("method", "POST"),
        content_type=kw.pop("content_type", FORM),
        environ_overrides=environ,
        **kw,
    )


# -- the Flask test client: what is read ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type", "size", "status"),
    [
        ("POST", FORM, 100_000, 413),  # refused from Content-Length alone
        ("PUT", FORM, 5_000, 405),
        ("POST", "text/plain", 5_000, 400),  # not a form
    ],
)
@pytest.mark.parametrize("endpoint", ["token", "revoke", "introspect"])
def test_refused_protocol_body_is_read(
    app: Flask, endpoint: str, method: str, content_type: str, size: int, status: int
) -> None:
    """Early refusals on the protocol endpoints: the whole body is read, and not one byte
    past Content-Length (the bytes of a pipelined next request stay)."""
    body = RecordingInput(b"a" * size + b"POST /next HTTP/1.1\r\n")
    path = f"/m2m/{endpoint}"
    response = post(app, path, body, size, method=method, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["error"]
    assert body.position == size


def test_body_above_the_bound_is_left_unread(app_factory: Callable[..., Flask]) -> None:
    """Content-Length over ``M2M_MAX_DISCARD_BYTES``: nothing is read (the server closes)."""
    app = app_factory(M2M_MAX_DISCARD_BYTES=50_000)
    body = RecordingInput(b"a" * 100_000)
    assert post(app, "/m2m/token", body, 100_000).status_code == 413
    assert body.position == 0


def test_zero_turns_discarding_off(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(M2M_MAX_DISCARD_BYTES=0)
    body = RecordingInput(b"a" * 100_000)
    assert post(app, "/m2m/token", body, 100_000).status_code == 413
    assert body.position == 0


def test_chunked_body_is_read_up_to_the_bound(app_factory: Callable[..., Flask]) -> None:
    """A chunked body (no Content-Length) is read for at most ``M2M_MAX_DISCARD_BYTES``
    in all, including what the endpoint read itself."""
    app = app_factory(M2M_MAX_DISCARD_BYTES=60_000)
    small = RecordingInput(b"a" * 40_000)
    assert post(app, "/m2m/token", small, None).status_code == 413
    assert small.position == 40_000
    large = RecordingInput(b"a" * 200_000)
    assert post(app, "/m2m/token", large, None).status_code == 413
    assert large.position == 60_000


def test_client_gone_mid_body_is_no_error(app: Flask) -> None:
    """A client that disconnects in the middle of its body: the refusal stands, no 5xx, no
    exception (the test client would raise it)."""
    body = RecordingInput(b"a" * 100_000, fail_at=30_000)
    response = post(app, "/m2m/token", body, 100_000)
    assert response.status_code == 413
    short = RecordingInput(b"a" * 1_000)  # Content-Length promises more than comes
    assert post(app, "/m2m/token", short, 100_000).status_code == 413
    assert short.position == 1_000
    chunked = RecordingInput(b"a" * 100_000, fail_at=20_000)
    assert post(app, "/m2m/token", chunked, None).status_code == 413


def test_read_body_is_not_read_again(app: Flask, registered_client: dict[str, Any]) -> None:
    """The usual case: the endpoint read the whole body; the hook reads nothing more."""
    data = b"grant_type=client_credentials"
    body = RecordingInput(data + b"NEXT")
    headers = basic_auth(registered_client["client_id"], registered_client["client_secret"])
    response = post(app, "/m2m/token", body, len(data), headers=headers)
    assert response.status_code == 200, response.get_json()
    assert body.position == len(data)


def test_management_refusals_read_the_body(
    app_factory: Callable[..., Flask],
) -> None:
    """Management API: 401 (no credentials) and 415 read the body; a 413 from the JSON
    reader's own limit (1 MiB) too when ``M2M_MAX_DISCARD_BYTES`` allows, although
    ``request.max_content_length`` was set below the body's length."""
    app = app_factory(M2M_MAX_DISCARD_BYTES=4 * 1024 * 1024)
    unauthorised = RecordingInput(b"{" * BIG)
    response = post(app, "/m2m/clients", unauthorised, BIG, content_type="application/json")
    assert response.status_code == 401
    assert unauthorised.position == BIG

    admin = register(app, scopes="m2m:admin")
    token = fetch_token(app.test_client(), admin)
    wrong_type = RecordingInput(b"a" * 10_000)
    response = post(app, "/m2m/clients", wrong_type, 10_000, headers=bearer(token))
    assert response.status_code == 415
    assert wrong_type.position == 10_000

    size = 1024 * 1024 + 10
    too_large = RecordingInput(b" " * size)
    response = post(
        app, "/m2m/clients", too_large, size, headers=bearer(token), content_type="application/json"
    )
    assert response.status_code == 413
    assert too_large.position == size


def test_hook_on_another_blueprint(app_factory: Callable[..., Flask]) -> None:
    """``discard_unread_body`` registered on a blueprint of the app's own (as the example
    console does) reads the bodies its routes refuse, up to the app's bound."""
    blueprint = Blueprint("uploads", __name__)

    @blueprint.post("/upload")
    def upload() -> tuple[str, int]:
        return "no", 403

    blueprint.after_request(discard_unread_body)
    app = app_factory(M2M_MAX_DISCARD_BYTES=200_000)
    app.register_blueprint(blueprint)
    body = RecordingInput(b"z" * 150_000)
    assert post(app, "/upload", body, 150_000).status_code == 403
    assert body.position == 150_000
    body = RecordingInput(b"z" * 300_000)
    assert post(app, "/upload", body, 300_000).status_code == 403
    assert body.position == 0


def test_discard_body_directly() -> None:
    """``discard_body(n)`` in any request context, here of an app without flask-m2m."""
    app = Flask(__name__)
    body = RecordingInput(b"q" * 5_000)
    environ = {"wsgi.input": body, "CONTENT_LENGTH": "3000", "REQUEST_METHOD": "POST"}
    with app.test_request_context(environ_overrides=environ):
        discard_body(10_000)
    assert body.position == 3_000


@pytest.mark.parametrize("value", [-1, "lots", None])
def test_setting_refuses_bad_values(app_factory: Callable[..., Flask], value: Any) -> None:
    with pytest.raises(ConfigurationError, match="M2M_MAX_DISCARD_BYTES"):
        app_factory(M2M_MAX_DISCARD_BYTES=value)


def test_setting_default(app: Flask) -> None:
    assert get_state(app).settings.max_discard_bytes == 1024 * 1024


# -- a real gunicorn, threaded workers, pooled clients -------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, Any, Path]]:
    """The example app under gunicorn, 2 workers of 4 threads (the documented way to run
    it), logging each request's client port; and an admin client."""
    tmp = tmp_path_factory.mktemp("keepalive")
    access = tmp / "access.log"
    env = example_env(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp / 'keepalive.db'}",
        SECRET_KEY=SECRET_KEY,
        RATELIMIT_KEY_PREFIX=f"m2m-test-{uuid.uuid4().hex}",
    )
    admin = create_client_cli(env, "admin", "m2m:admin read")
    options = (
        "--keep-alive", "60",  # an idle pause of the test machine must not end a connection
        "--access-logfile", str(access),
        "--access-logformat", "%({remote_port}e)s %({x-round}i)s %(r)s %(s)s",
    )  # fmt: skip
    with gunicorn_servers(tmp) as start:
        yield start(env, 2, 4, *options), admin, access


def logged_ports(access: Path, marker: str) -> Counter[str]:
    """Client ports of the 4 × ROUNDS requests that carried ``X-Round: marker``, once
    gunicorn has logged them all (it logs a request after sending its response)."""

    def ports() -> Counter[str] | None:
        lines = access.read_text().splitlines()
        found = Counter(line.split()[0] for line in lines if line.split()[1:2] == [marker])
        return found if sum(found.values()) == 4 * ROUNDS else None

    return poll(ports, timeout=30)


def rounds(send: Callable[..., Any], url: str, admin: dict[str, Any]) -> None:
    """ROUNDS times: a refused 1 MB token request, a good one, a refused 1 MB management
    request, a good one. ``send(method, url, body, headers, auth)`` returns (status, body)."""
    auth = (admin["client_id"], admin["client_secret"])
    for _ in range(ROUNDS):
        big = {"Content-Type": FORM}
        status, _ = send("POST", f"{url}/m2m/token", b"a" * BIG, big, None)
        assert status == 413
        status, body = send("POST", f"{url}/m2m/token", GRANT, {}, auth)
        assert status == 200, body
        token = json.loads(body)["access_token"]
        big = {"Content-Type": "application/json"}
        status, _ = send("POST", f"{url}/m2m/clients", b"{" * BIG, big, None)
        assert status == 401
        status, body = send("GET", f"{url}/m2m/clients", None, bearer(token), None)
        assert status == 200, body


@pytest.mark.slow
def test_requests_session_keeps_its_connection(served: tuple[Gunicorn, Any, Path]) -> None:
    """A ``requests.Session``: every refused 1 MB request is followed by a request that
    succeeds on the same connection; all 80 requests used one connection (one client
    port in the server's log), none met "connection aborted"."""
    server, admin, access = served
    marker = f"requests-{uuid.uuid4().hex}"
    with requests.Session() as session:

        def send(method: str, url: str, body: Any, headers: Any, auth: Any) -> tuple[int, str]:
            headers = {**headers, "X-Round": marker}
            r = session.request(method, url, data=body, headers=headers, auth=auth, timeout=30)
            return r.status_code, r.text

        rounds(send, server.url, admin)
    assert len(logged_ports(access, marker)) == 1


@pytest.mark.slow
def test_httpx_client_keeps_its_connection(served: tuple[Gunicorn, Any, Path]) -> None:
    """The same with an ``httpx.Client`` (its own connection pool)."""
    server, admin, access = served
    marker = f"httpx-{uuid.uuid4().hex}"
    with httpx.Client(timeout=30) as client:

        def send(method: str, url: str, body: Any, headers: Any, auth: Any) -> tuple[int, str]:
            content = body if isinstance(body, bytes) else None
            form = body if isinstance(body, dict) else None
            headers = {**headers, "X-Round": marker}
            r = client.request(
                method, url, content=content, data=form, headers=headers, auth=auth
            )
            return r.status_code, r.text

        rounds(send, server.url, admin)
    assert len(logged_ports(access, marker)) == 1
