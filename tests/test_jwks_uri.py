"""Clients that publish their keys at a ``jwks_uri`` (RFC 7591 §2, RFC 7523 §2.2): fetched
with a timeout and a size cap, no redirects, cached, fetched again for an unknown ``kid`` at a
bounded rate, and never from a private address outside development (server-side request
forgery)."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, Response, redirect
from helpers.key_clients import assertion, form, new_key, public_set, register_key_client

from flask_m2m.client_jwks import KeysUnavailable, PinnedHTTPSConnection, check_public_address


class KeyHost:
    """A live HTTP server publishing a JWK Set, whose behaviour a test changes."""

    def __init__(self, live_server_factory: Callable[[Flask], Any]):
        self.body: Any = {"keys": []}
        self.delay = 0.0
        self.fetches = 0
        app = Flask("keyhost")

        @app.get("/jwks.json")
        def jwks() -> Response:
            self.fetches += 1
            time.sleep(self.delay)
            text = self.body if isinstance(self.body, str) else json.dumps(self.body)
            return Response(text, mimetype="application/json")

        @app.get("/moved")
        def moved() -> Any:
            return redirect("/jwks.json")

        self.server = live_server_factory(app)
        self.url = self.server.url + "/jwks.json"


@pytest.fixture
def host(live_server_factory: Callable[[Flask], Any]) -> KeyHost:
    return KeyHost(live_server_factory)


def _post(app: Flask, signed: str) -> int:
    return app.test_client().post("/m2m/token", data=form(signed)).status_code


def test_keys_are_fetched_and_cached(app: Flask, host: KeyHost) -> None:
    key = new_key("EC", "a")
    host.body = public_set(key)
    client_id = register_key_client(app, jwks_uri=host.url)
    assert _post(app, assertion(key, client_id, alg="ES256")) == 200
    assert _post(app, assertion(key, client_id, alg="ES256")) == 200
    assert host.fetches == 1


def test_unknown_kid_fetches_again_at_a_bounded_rate(
    app_factory: Callable[..., Flask], host: KeyHost
) -> None:
    """A new ``kid`` (the client rotated its key) prompts one more fetch; a flood of unknown
    ``kid`` values prompts none within ``M2M_JWKS_URI_REFETCH_SECONDS``."""
    app = app_factory(M2M_JWKS_URI_REFETCH_SECONDS=0)
    old, new = new_key("EC", "old"), new_key("EC", "new")
    host.body = public_set(old)
    client_id = register_key_client(app, jwks_uri=host.url)
    assert _post(app, assertion(old, client_id, alg="ES256")) == 200
    host.body = public_set(old, new)
    assert _post(app, assertion(new, client_id, alg="ES256")) == 200
    assert host.fetches == 2

    bounded = app_factory(M2M_JWKS_URI_REFETCH_SECONDS=3600)
    host.body, host.fetches = public_set(old), 0
    other = register_key_client(bounded, jwks_uri=host.url)
    assert _post(bounded, assertion(old, other, alg="ES256")) == 200
    for index in range(5):
        assert _post(bounded, assertion(new_key("EC", f"x{index}"), other, alg="ES256")) == 401
    assert host.fetches == 1


@pytest.mark.parametrize("failure", ["too large", "slow", "redirect", "unreachable", "not json",
                                     "private key", "status"])
def test_unusable_jwks_uri_refuses_the_client(
    app_factory: Callable[..., Flask], host: KeyHost, failure: str
) -> None:
    """Every failure to get the keys is a 401 ``invalid_client``, within the timeout."""
    app = app_factory(M2M_JWKS_URI_TIMEOUT=1, M2M_JWKS_URI_MAX_BYTES=2048)
    key = new_key("EC", "a")
    host.body = public_set(key)
    uri = host.url
    if failure == "too large":
        host.body = {"keys": [key.as_dict(private=False)], "pad": "x" * 5000}
    elif failure == "slow":
        host.delay = 2.5
    elif failure == "redirect":
        uri = host.server.url + "/moved"
    elif failure == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            uri = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json"
    elif failure == "not json":
        host.body = "<html>"
    elif failure == "private key":
        host.body = {"keys": [key.as_dict(private=True)]}
    else:
        uri = host.server.url + "/missing"
    client_id = register_key_client(app, jwks_uri=uri)
    started = time.monotonic()
    response = app.test_client().post(
        "/m2m/token", data=form(assertion(key, client_id, alg="ES256"))
    )
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert time.monotonic() - started < 10


def test_private_addresses_are_refused_outside_development(
    app_factory: Callable[..., Flask], host: KeyHost
) -> None:
    """Outside development the URI must be https and resolve to public addresses only."""
    app = app_factory(M2M_JWKS_URI_ALLOW_INSECURE=False)
    key = new_key("EC", "a")
    host.body = public_set(key)
    port = host.server.server.server_port
    client_id = register_key_client(app, jwks_uri=f"https://127.0.0.1:{port}/jwks.json")
    assert _post(app, assertion(key, client_id, alg="ES256")) == 401
    assert host.fetches == 0


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1",
                "0.0.0.0", "::ffff:127.0.0.1", "localhost"],
)
def test_non_public_addresses(address: str) -> None:
    """Loopback, private (RFC 1918), link-local (cloud metadata), unspecified and IPv4-mapped
    loopback addresses are all refused."""
    with pytest.raises(KeysUnavailable):
        check_public_address(address, 443)


def test_public_address_is_accepted() -> None:
    check_public_address("8.8.8.8", 443)


def _post_together(app: Flask, signed: list[str]) -> list[int]:
    """Post the assertions from as many threads at once; their statuses."""
    with ThreadPoolExecutor(len(signed)) as pool:
        return list(pool.map(lambda one: _post(app, one), signed))


def test_concurrent_requests_share_one_fetch(
    app_factory: Callable[..., Flask], host: KeyHost, shared_database_url: str
) -> None:
    """Requests of a client whose set is not cached yet wait for one fetch of it, rather than
    each fetching it (a burst must not multiply the requests to the client's host). The
    threads need a database each can connect to (the default test database is one in-memory
    SQLite connection, which threads cannot use at once), and the used ``jti`` values are kept
    in memory."""
    app = app_factory(shared_database_url, M2M_REPLAY_STORE="memory")
    key = new_key("EC", "a")
    host.body, host.delay = public_set(key), 0.3
    client_id = register_key_client(app, jwks_uri=host.url)
    statuses = _post_together(app, [assertion(key, client_id, alg="ES256") for _ in range(6)])
    assert statuses == [200] * 6
    assert host.fetches == 1


def test_concurrent_requests_share_one_failure(
    app_factory: Callable[..., Flask], host: KeyHost, shared_database_url: str
) -> None:
    """When the shared fetch fails, the requests that waited for it are refused without
    fetching again."""
    app = app_factory(
        shared_database_url, M2M_JWKS_URI_REFETCH_SECONDS=0, M2M_REPLAY_STORE="memory"
    )
    key = new_key("EC", "a")
    host.body, host.delay = "not json", 0.3
    client_id = register_key_client(app, jwks_uri=host.url)
    statuses = _post_together(app, [assertion(key, client_id, alg="ES256") for _ in range(6)])
    assert statuses == [401] * 6
    assert host.fetches == 1


def _tls_server(tmp_path: Path, name: str) -> tuple[ThreadingHTTPServer, ssl.SSLContext]:
    """A live HTTPS server on 127.0.0.1 whose self-signed certificate names ``name``, and a
    client context that trusts that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"host": self.headers["Host"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert_file, key_file)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ssl.create_default_context(cafile=str(cert_file))


def test_fetch_connects_to_the_checked_address(tmp_path: Path) -> None:
    """DNS rebinding: the fetch connects to the address the check accepted, never resolving the
    name again, and still verifies the certificate for the name (here a name that resolves
    nowhere, served on the pinned address)."""
    name = "keys.example.test"
    server, trusted = _tls_server(tmp_path, name)
    port = server.server_address[1]
    try:
        pinned = PinnedHTTPSConnection(name, port, "127.0.0.1", timeout=5, context=trusted)
        pinned.request("GET", "/jwks.json")
        answer = pinned.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read()) == {"host": f"{name}:{port}"}
        pinned.close()

        other = PinnedHTTPSConnection("other.example.test", port, "127.0.0.1", timeout=5,
                                      context=trusted)  # fmt: skip
        with pytest.raises(ssl.SSLCertVerificationError):
            other.request("GET", "/jwks.json")
        other.close()
    finally:
        server.shutdown()
        server.server_close()
