"""Fuzzing the protocol endpoints (token, revoke, introspect) with hypothesis: arbitrary
forms, bodies, content types, ``Authorization`` headers, methods and hosts never get a 5xx,
and every 4xx is an RFC 6749 §5.2 JSON error object.

Run with ``-s`` to see how many requests were sent, and how they were answered.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from helpers.apps import fetch_token, register
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENDPOINTS = ["/m2m/token", "/m2m/revoke", "/m2m/introspect"]
FORM = "application/x-www-form-urlencoded"
#: Requests per run (each a whole request: method, host, headers and body).
EXAMPLES = 1500
#: Parameter names the endpoints read, mixed with arbitrary ones.
NAMES = ["grant_type", "scope", "client_id", "client_secret", "token", "token_type_hint"]

#: Text of any code point, NUL and lone surrogates included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
#: Text as a header value can carry it (latin-1, no line breaks).
header_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
huge = st.sampled_from([1_000, 16_383, 16_384, 20_000]).map(lambda n: "a" * n)


def encode_form(pairs: list[tuple[str, str]]) -> bytes:
    """``pairs`` form-encoded as a client might: surrogates become invalid UTF-8 bytes."""
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode()


def mostly(draw: st.DrawFn, usual: Any, odd: st.SearchStrategy[Any], odds: int = 5) -> Any:
    """``usual`` about ``odds - 1`` times in ``odds``, else a value of ``odd``: so that most
    requests get past the first check and the later ones are fuzzed too."""
    return usual if draw(st.integers(1, odds)) > 1 else draw(odd)


@st.composite
def form_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """A form: known and arbitrary names with right, arbitrary or huge values, repeated or
    missing ones, sometimes the client's credentials (``client_secret_post``)."""
    right = [valid[k] for k in ("client_id", "client_secret", "token")] + ["read", "read write"]
    right_value = st.sampled_from(right)
    value = st.one_of(right_value, right_value, any_text, any_text, huge)
    name = st.one_of(st.sampled_from(NAMES), any_text)
    pairs = draw(st.lists(st.tuples(name, value), max_size=4))
    if draw(st.booleans()):
        pairs += [("client_id", valid["client_id"]), ("client_secret", valid["client_secret"])]
    if draw(st.booleans()):
        pairs.append(("token", valid["token"]))
    pairs.insert(0, mostly(draw, ("grant_type", "client_credentials"), st.tuples(name, value)))
    return encode_form(pairs)


@st.composite
def authorizations(draw: st.DrawFn, client_id: str, secret: str) -> str | None:
    """None, the right Basic header, or a malformed one of many kinds."""

    def basic(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    kinds = ["valid"] * 3 + ["none"] * 2 + ["junk64", "binary", "nocolon", "text", "huge"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "valid":
        return basic(f"{client_id}:{secret}".encode())
    if kind == "junk64":
        return "Basic " + draw(header_text)
    if kind == "binary":  # valid base64 of bytes that are not UTF-8, colon or not
        return basic(draw(st.binary(max_size=40)) + draw(st.sampled_from([b"", b":\xff\xfe"])))
    if kind == "nocolon":
        return basic(draw(st.text(max_size=40).filter(lambda t: ":" not in t)).encode())
    if kind == "huge":
        return basic(b"a" * 30_000 + b":" + b"b" * 30_000)
    scheme = draw(st.sampled_from(["Basic", "basic", "Bearer", "Digest", "", "Basic  "]))
    return f"{scheme} {draw(header_text)}"


@st.composite
def requests(draw: st.DrawFn, known: dict[bool, dict[str, Any]]) -> dict[str, Any]:
    """A whole request to one of two apps (HTTPS required or not; ``known[strict]`` holds
    that app's ``client_id``, ``client_secret`` and a ``token`` of it): mostly what a client
    would send, with any of its parts gone wrong."""
    strict = draw(st.booleans())
    valid = known[strict]
    odd_types = st.one_of(
        st.sampled_from([FORM + "; charset=latin-1", "application/json", "text/plain",
                         "multipart/form-data; boundary=x", "", FORM.upper()]),
        header_text,
    )  # fmt: skip
    odd_hosts = st.one_of(
        st.sampled_from(["127.0.0.1:5000", "[::1]", "api.example.com", "[::1", "localhost:x"]),
        header_text,
    )
    methods = st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO"])
    return {
        "strict": strict,
        "path": draw(st.sampled_from(ENDPOINTS)),
        "method": mostly(draw, "POST", methods),
        "data": mostly(draw, draw(form_bodies(valid)), st.binary(max_size=300)),
        "content_type": mostly(draw, FORM, odd_types),
        "authorization": draw(authorizations(valid["client_id"], valid["client_secret"])),
        "host": mostly(draw, "localhost", odd_hosts),
        "scheme": draw(st.sampled_from(["https", "https", "http"])),
        "chunked": draw(st.integers(0, 4)) == 0,  # no Content-Length, the server ends it
    }


def reached_the_view(app: Flask, sent: dict[str, Any]) -> bool:
    """Whether the app's routing let this request through to a flask-m2m view."""
    with app.test_request_context(**sent) as context:
        return context.request.routing_exception is None


def test_protocol_endpoints_survive_fuzzing(app_factory: Callable[..., Flask]) -> None:
    """RFC 6749 §5.2: never a 5xx; every 4xx is a JSON object with an ``error`` string (and
    ``Cache-Control: no-store``), whatever arrives: over an app that requires HTTPS and one
    that does not (``M2M_REQUIRE_HTTPS``)."""
    relaxed = {
        "M2M_FAILED_AUTH_RATE_LIMIT": "1000000/minute",
        "M2M_TOKEN_RATE_LIMIT": "1000000/minute",
    }
    apps = {
        strict: app_factory(M2M_REQUIRE_HTTPS=strict, M2M_ISSUER="https://issuer.test", **relaxed)
        for strict in (True, False)
    }
    known: dict[bool, dict[str, Any]] = {}
    for strict, app in apps.items():
        client = register(app, scopes="read write")
        token = fetch_token(app.test_client(), client)
        known[strict] = {**client, "token": token}
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests(known))
    def check(request: dict[str, Any]) -> None:
        app = apps[request["strict"]]
        headers = {"Host": request["host"], "Content-Type": request["content_type"]}
        if request["authorization"] is not None:
            headers["Authorization"] = request["authorization"]
        if request["chunked"]:
            headers["Transfer-Encoding"] = "chunked"
        sent = {
            "path": request["path"],
            "method": request["method"],
            "data": request["data"],
            "headers": headers,
            "base_url": f"{request['scheme']}://localhost",
            "environ_overrides": {"wsgi.input_terminated": True} if request["chunked"] else {},
        }
        response = app.test_client().open(**sent)
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.data
        if 400 <= response.status_code < 500 and response.mimetype != "application/json":
            # Only the app's routing may answer so (405 for a method the route does not
            # take, 400 for a Host it cannot bind to): before any flask-m2m code runs, with
            # the app's own error page, which flask-m2m leaves alone.
            assert not reached_the_view(app, sent), response.data
        elif 400 <= response.status_code < 500:
            assert response.headers.get("Cache-Control") == "no-store"
            if request["method"] != "HEAD":
                body = json.loads(response.data)
                assert isinstance(body, dict) and isinstance(body.get("error"), str), body

    check()
    print(f"\nfuzzed protocol requests: {sum(statuses.values())}, by status: {dict(statuses)}")
    assert sum(statuses.values()) >= EXAMPLES // 2
    assert statuses[200] and statuses[400] and statuses[401]  # the fuzz reached every outcome


@pytest.mark.parametrize("path", ENDPOINTS)
def test_huge_authorization_header(app: Flask, path: str) -> None:
    """A 60 KB Basic header is refused as a client-authentication error, not a crash."""
    header = "Basic " + base64.b64encode(b"a" * 30_000 + b":" + b"b" * 30_000).decode()
    response = app.test_client().post(
        path, data={"grant_type": "client_credentials", "token": "x"},
        headers={"Authorization": header},
    )  # fmt: skip
    assert response.status_code in (200, 401)  # revoke/introspect: 401 (RFC 7009 §2.1)
    if response.status_code == 401:
        assert response.get_json()["error"] == "invalid_client"
