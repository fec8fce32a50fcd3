"""The ``flask m2m`` CLI group, driven through ``app.test_cli_runner()``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt  # PyJWT, only to read token headers
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers.apps import fetch_token, register
from helpers.http import basic_auth

from flask_m2m.extension import get_state

ID_RE = re.compile(r"m2m_[A-Za-z0-9]+")
SECRET_RE = re.compile(r"m2ms_[A-Za-z0-9]+")


def run(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Result:
    """Invoke ``flask m2m ARGS``."""
    return runner.invoke(args=["m2m", *args], input=input)


def create(runner: FlaskCliRunner, *args: str, scope: str = "read write") -> dict[str, Any]:
    """``create-client --json``; returns the printed object."""
    result = run(runner, "create-client", "--name", "svc", "--scope", scope, "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def token_status(client: FlaskClient, client_id: str, secret: str) -> int:
    """Status of a client_credentials token request (RFC 6749 §4.4.2) with these credentials."""
    response = client.post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )
    return response.status_code


def stored(app: Flask, client_id: str) -> Any:
    """The client's row (None if there is none)."""
    with app.app_context():
        state = get_state(app)
        return state.db.session.get(state.models.client, client_id)


def stored_secret(app: Flask, client_id: str) -> Any:
    """The client's (only) secret row."""
    with app.app_context():
        model = get_state(app).models.client_secret
        (row,) = get_state(app).db.session.query(model).filter_by(client_id=client_id)
        return row


def test_create_client_json(runner: FlaskCliRunner, client: FlaskClient) -> None:
    """``create-client --json`` prints ONE JSON object whose secret works at the token endpoint
    (RFC 6749 §4.4)."""
    result = run(runner, "create-client", "--name", "N", "--scope", "a b", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert isinstance(data, dict)
    assert data["client_id"].startswith("m2m_")
    assert data["client_secret"].startswith("m2ms_")
    assert data["name"] == "N"
    assert data["scopes"] == ["a", "b"]
    assert data["expires_at"] is None
    token = fetch_token(client, data, "a")
    assert token


def test_create_client_expiry(runner: FlaskCliRunner) -> None:
    """``--expires-in-days 30`` gives an ISO 8601 ``expires_at`` 30 days ahead."""
    before = datetime.now(UTC)
    data = create(runner, "--expires-in-days", "30")
    expires = datetime.fromisoformat(data["expires_at"])
    assert expires.tzinfo is not None
    assert before + timedelta(days=30) - timedelta(minutes=1) <= expires
    assert expires <= datetime.now(UTC) + timedelta(days=30, minutes=1)


def test_create_client_expiry_must_be_positive(runner: FlaskCliRunner, app: Flask) -> None:
    """``--expires-in-days 0`` is refused and creates nothing."""
    result = run(runner, "create-client", "--name", "x", "--expires-in-days", "0")
    assert result.exit_code != 0
    assert json.loads(run(runner, "list-clients", "--json").stdout) == {"clients": []}


def test_create_client_human_output(runner: FlaskCliRunner, client: FlaskClient) -> None:
    """Without ``--json`` the id and the secret are shown, the secret exactly once, and it works."""
    result = run(runner, "create-client", "--name", "N", "--scope", "read")
    assert result.exit_code == 0, result.output
    ids = ID_RE.findall(result.output)
    secrets = SECRET_RE.findall(result.output)
    assert len(set(ids)) == 1 and len(secrets) == 1
    assert result.output.count(secrets[0]) == 1
    assert token_status(client, ids[0], secrets[0]) == 200


def test_create_client_rate_limit(runner: FlaskCliRunner, app: Flask) -> None:
    """``--rate-limit`` is stored on the client."""
    data = create(runner, "--rate-limit", "10/minute")
    assert data["rate_limit"] == "10/minute"
    assert stored(app, data["client_id"]).rate_limit == "10/minute"


def test_create_client_secret_stdin(
    runner: FlaskCliRunner, app: Flask, client: FlaskClient
) -> None:
    """``--secret-stdin`` imports an existing secret, stored hashed, which then authenticates
    the client (RFC 6749 §2.3.1)."""
    secret = "imported-secret-0123456789-abcdefghijklmnop"
    result = run(
        runner, "create-client", "--name", "N", "--scope", "read", "--secret-stdin", "--json",
        input=secret + "\n",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["client_secret"] == secret
    row = stored_secret(app, data["client_id"])
    assert row.secret_hash.startswith("hmac-sha256$") and secret not in row.secret_hash
    assert token_status(client, data["client_id"], secret) == 200
    assert token_status(client, data["client_id"], secret + "x") == 401


def test_create_client_short_imported_secret(runner: FlaskCliRunner) -> None:
    """A too-short imported secret is refused (non-zero exit) and no client is created."""
    result = run(runner, "create-client", "--name", "N", "--secret-stdin", input="short\n")
    assert result.exit_code != 0
    assert json.loads(run(runner, "list-clients", "--json").stdout) == {"clients": []}


@pytest.mark.parametrize("scope", ['bad"scope', "back\\slash", "caf\u00e9"])
def test_create_client_invalid_scope(runner: FlaskCliRunner, scope: str) -> None:
    """RFC 6749 §3.3: scope tokens exclude ``"``, ``\\`` and non-ASCII; the CLI refuses them
    with a non-zero exit and creates nothing."""
    result = run(runner, "create-client", "--name", "N", "--scope", scope)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert json.loads(run(runner, "list-clients", "--json").stdout) == {"clients": []}


def test_list_clients_never_shows_secrets(runner: FlaskCliRunner, app: Flask) -> None:
    """``list-clients`` (human and ``--json``) shows every client but no secret or secret hash."""
    first = create(runner)
    second = create(runner, scope="read")
    assert run(runner, "disable-client", second["client_id"]).exit_code == 0
    hashes = [stored_secret(app, c["client_id"]).secret_hash for c in (first, second)]
    forbidden = [first["client_secret"], second["client_secret"], "hmac-sha256", "m2ms_"]
    forbidden += [h.split("$", 1)[1] for h in hashes]

    human = run(runner, "list-clients")
    assert human.exit_code == 0
    as_json = run(runner, "list-clients", "--json")
    assert as_json.exit_code == 0
    for output in (human.output, as_json.output):
        assert first["client_id"] in output and second["client_id"] in output
        for text in forbidden:
            assert text not in output
    listed = json.loads(as_json.stdout)["clients"]
    assert {c["client_id"] for c in listed} == {first["client_id"], second["client_id"]}
    for entry in listed:
        assert not any("secret" in key or "hash" in key for key in entry)
    by_id = {c["client_id"]: c for c in listed}
    assert by_id[second["client_id"]]["disabled"] is True
    assert by_id[first["client_id"]]["scopes"] == ["read", "write"]


def test_list_clients_empty(runner: FlaskCliRunner) -> None:
    """With no clients ``list-clients --json`` prints an empty list."""
    result = run(runner, "list-clients", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"clients": []}


def test_disable_and_enable_client(
    runner: FlaskCliRunner, app: Flask, client: FlaskClient
) -> None:
    """A disabled client gets 401 ``invalid_client`` (RFC 6749 §5.2); enabling restores it."""
    data = create(runner)
    cid, secret = data["client_id"], data["client_secret"]
    assert run(runner, "disable-client", cid).exit_code == 0
    assert stored(app, cid).disabled is True
    assert token_status(client, cid, secret) == 401
    assert run(runner, "enable-client", cid).exit_code == 0
    assert stored(app, cid).disabled is False
    assert token_status(client, cid, secret) == 200


def test_delete_client_needs_confirmation(
    runner: FlaskCliRunner, app: Flask, client: FlaskClient
) -> None:
    """``delete-client`` without ``--yes`` (and a refused prompt) deletes nothing; with
    ``--yes`` the client is gone and cannot get tokens (RFC 6749 §5.2)."""
    data = create(runner)
    cid = data["client_id"]
    assert run(runner, "delete-client", cid, input="n\n").exit_code != 0
    assert run(runner, "delete-client", cid).exit_code != 0  # no input: aborted
    assert stored(app, cid) is not None
    assert token_status(client, cid, data["client_secret"]) == 200
    assert run(runner, "delete-client", cid, "--yes").exit_code == 0
    assert stored(app, cid) is None
    assert token_status(client, cid, data["client_secret"]) == 401


def test_rotate_secret(runner: FlaskCliRunner, client: FlaskClient) -> None:
    """``rotate-secret``: the new secret works and the old one fails at once."""
    data = create(runner)
    cid, old = data["client_id"], data["client_secret"]
    result = run(runner, "rotate-secret", cid, "--json")
    assert result.exit_code == 0, result.output
    new = json.loads(result.stdout)["client_secret"]
    assert new != old and new.startswith("m2ms_")
    assert token_status(client, cid, new) == 200
    assert token_status(client, cid, old) == 401


def test_rotate_secret_human_output(runner: FlaskCliRunner, client: FlaskClient) -> None:
    """Without ``--json`` the new secret is printed once and works."""
    data = create(runner)
    result = run(runner, "rotate-secret", data["client_id"])
    assert result.exit_code == 0
    secrets = SECRET_RE.findall(result.output)
    assert len(secrets) == 1 and secrets[0] != data["client_secret"]
    assert token_status(client, data["client_id"], secrets[0]) == 200


def test_rotate_secret_grace_period(runner: FlaskCliRunner, client: FlaskClient) -> None:
    """``rotate-secret --grace-period 60``: old and new secret both work during the grace."""
    data = create(runner)
    cid, old = data["client_id"], data["client_secret"]
    result = run(runner, "rotate-secret", cid, "--grace-period", "60", "--json")
    assert result.exit_code == 0, result.output
    new = json.loads(result.stdout)["client_secret"]
    assert token_status(client, cid, new) == 200
    assert token_status(client, cid, old) == 200
    # A second rotation without grace ends the old secret's grace too.
    newest = json.loads(run(runner, "rotate-secret", cid, "--json").stdout)["client_secret"]
    assert token_status(client, cid, newest) == 200
    assert token_status(client, cid, old) == 401
    assert token_status(client, cid, new) == 401


@pytest.mark.real_keys
def test_rotate_keys(runner: FlaskCliRunner, client: FlaskClient, app: Flask) -> None:
    """``rotate-keys`` publishes a new kid in the JWKS (RFC 7517 §5), keeps the old one for
    outstanding tokens, and new tokens are signed with the new key."""
    credentials = register(app)
    old_token = fetch_token(client, credentials)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    result = run(runner, "rotate-keys")
    assert result.exit_code == 0, result.output
    kids = {key["kid"] for key in client.get("/m2m/jwks.json").get_json()["keys"]}
    new_kids = kids - {old_kid}
    assert old_kid in kids and len(new_kids) == 1
    (new_kid,) = new_kids
    assert new_kid in result.output
    new_token = fetch_token(client, credentials)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    for token in (old_token, new_token):
        response = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["disable-client"],
        ["enable-client"],
        ["delete-client", "--yes"],
        ["rotate-secret"],
        ["rotate-secret", "--json"],
    ],
)
def test_unknown_client_id(runner: FlaskCliRunner, args: list[str]) -> None:
    """An unknown client id gives a non-zero exit and a message naming it (no traceback)."""
    missing = "m2m_doesnotexist"
    result = run(runner, args[0], missing, *args[1:])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert missing in result.stderr
    assert "Traceback" not in result.output
