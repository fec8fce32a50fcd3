"""Client metadata nesting: a fixed depth limit, checked where every client change goes
(:mod:`flask_m2m.lifecycle`), so the management API and the example's console answer 422
naming ``metadata`` and never reach the database with what it cannot encode."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.console import console_app, login, post_form
from helpers.http import bearer

from flask_m2m import lifecycle as clients
from flask_m2m.errors import InvalidClientData
from flask_m2m.extension import get_state
from flask_m2m.policy import MAX_METADATA_DEPTH

PROBLEM = "application/problem+json"
T = TypeVar("T")


def on_fresh_stack(call: Callable[[], T]) -> T:
    """``call()`` in a new thread, as a server's worker runs a request: its stack starts
    empty, not under pytest's frames, so JSON about 960-975 levels deep is parsed from the
    body and only overflows later, when the database driver encodes it."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # re-raised in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    result: T = outcome[0]
    return result


def nested(depth: int, container: str = "array") -> dict[str, Any]:
    """A metadata object ``depth`` levels deep: the object itself is level 1, and each array
    (or object) inside it one more."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value] if container == "array" else {"a": value}
    return {"a": value}


def nested_text(depth: int) -> str:
    """``nested(depth)`` as JSON text, written out directly (``json.dumps`` itself would
    overflow the stack well before 970 levels when called this deep in a test)."""
    return '{"a": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


def test_nested_counts_levels() -> None:
    assert nested(1) == {"a": 1} and nested(3) == {"a": [[1]]}
    assert nested(3, "object") == {"a": {"a": {"a": 1}}}
    assert json.loads(nested_text(3)) == nested(3)


@pytest.fixture
def admin(app: Flask) -> dict[str, str]:
    return bearer(fetch_token(app.test_client(), register(app, "m2m:admin")))


def assert_refused(response: Any) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert response.mimetype == PROBLEM
    assert "metadata" in response.get_json()["errors"]
    assert "nested" in response.get_json()["errors"]["metadata"][0]


@pytest.mark.parametrize("container", ["array", "object"])
def test_api_depth_limit(
    app: Flask, client: FlaskClient, admin: dict[str, str], container: str
) -> None:
    """POST /clients: metadata 32 levels deep is stored as given (201); 33 levels is a 422
    RFC 9457 problem naming ``metadata``, and nothing is stored."""
    assert MAX_METADATA_DEPTH == 32
    deepest = nested(MAX_METADATA_DEPTH, container)
    made = client.post("/m2m/clients", json={"name": "x", "metadata": deepest}, headers=admin)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["metadata"] == deepest
    shown = client.get(f"/m2m/clients/{made.get_json()['client_id']}", headers=admin)
    assert shown.get_json()["metadata"] == deepest
    too_deep = {"name": "y", "metadata": nested(MAX_METADATA_DEPTH + 1, container)}
    assert_refused(client.post("/m2m/clients", json=too_deep, headers=admin))
    listed = client.get("/m2m/clients?name_prefix=y", headers=admin).get_json()["clients"]
    assert listed == []


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT"])
def test_api_refuses_deep_metadata(
    app: Flask, client: FlaskClient, admin: dict[str, str], method: str
) -> None:
    """Metadata nested deeper than the limit, up to where encoding it overflows Python's
    stack in the database driver (about 960-975 levels, within the size limit), is a 422
    naming ``metadata``; deeper still the body parser gives up (400). Never a 500, and a
    PATCH or PUT leaves the client as it was."""
    made = client.post("/m2m/clients", json={"name": "x"}, headers=admin).get_json()
    path = f"/m2m/clients/{made['client_id']}"
    url = "/m2m/clients" if method == "POST" else path

    def send(depth: int) -> Any:
        body = '{"name": "x", "metadata": ' + nested_text(depth) + "}"
        assert len(body) < 4096  # within M2M_MAX_METADATA_BYTES: the depth decides
        return client.open(url, method=method, data=body, headers=admin,
                           content_type="application/json")

    for depth in (MAX_METADATA_DEPTH + 1, 500, 970):
        assert_refused(on_fresh_stack(partial(send, depth)))
    statuses = on_fresh_stack(lambda: {send(depth).status_code for depth in range(900, 1500, 5)})
    assert statuses <= {400, 422}
    assert client.get(path, headers=admin).get_json()["metadata"] == {}


@pytest.mark.parametrize("opening", ["[", '{"a": '])
def test_api_body_nested_100k_deep(
    client: FlaskClient, admin: dict[str, str], opening: str
) -> None:
    """A JSON body nested 100,000 levels deep is a 4xx problem (400: the parser gives up),
    never a 500."""
    closing = "]" if opening == "[" else "}"
    raw = '{"name": "x", "metadata": {"a": ' + opening * 100_000 + "1" + closing * 100_000 + "}}"
    response = client.post("/m2m/clients", data=raw, headers=admin,
                           content_type="application/json")
    assert response.status_code in (400, 422) and response.mimetype == PROBLEM


def test_service_refuses_deep_and_cyclic_metadata(app: Flask) -> None:
    """``flask_m2m.lifecycle`` itself refuses it, whoever calls: a Python caller's cyclic
    structure is just too deep, not a RecursionError."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with app.app_context():
        state = get_state(app)
        for metadata in (nested(MAX_METADATA_DEPTH + 1), nested(10_000), cyclic):
            with pytest.raises(InvalidClientData) as refused:
                clients.create_client(state, actor="test", name="x", metadata=metadata)
            assert refused.value.field == "metadata"
        client, _ = clients.create_client(
            state, actor="test", name="x", metadata=nested(MAX_METADATA_DEPTH)
        )
        state.db.session.commit()
        with pytest.raises(InvalidClientData):
            clients.update_client(
                state, client.client_id, {"metadata": nested(970, "array")}, actor="test"
            )


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Flask, FlaskClient]]:
    with console_app(tmp_path) as app:
        browser = app.test_client()
        assert login(browser).status_code == 302
        yield app, browser


def test_console_depth_limit(console: tuple[Flask, FlaskClient]) -> None:
    """The console's forms go through the same check: 33 and 970 levels re-show the form
    with a 422 and the error next to ``metadata`` (not a 500); 32 levels are stored."""
    app, browser = console

    def submit(path: str, depth: int) -> Any:
        form = {"name": "n", "scopes": "read", "metadata": nested_text(depth)}
        return on_fresh_stack(lambda: post_form(browser, path, form))

    for depth in (MAX_METADATA_DEPTH + 1, 970):
        response = submit("/console/clients/new", depth)
        assert response.status_code == 422
        assert 'id="metadata-error"' in response.text and "nested" in response.text
    with app.app_context():
        assert clients.list_clients(get_state(app)).items == []
    assert submit("/console/clients/new", MAX_METADATA_DEPTH).status_code == 200
    with app.app_context():
        (client,) = clients.list_clients(get_state(app)).items
        assert client.client_metadata == nested(MAX_METADATA_DEPTH)
    edit = submit(f"/console/clients/{client.client_id}", 970)
    assert edit.status_code == 422 and 'id="metadata-error"' in edit.text
