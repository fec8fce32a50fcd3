"""RFC 9068 JWT access tokens, checked with PyJWT, a JOSE library independent of the server's."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from helpers.apps import fetch_token, make_app, register
from helpers.http import basic_auth, bearer
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey, import_key
from sqlalchemy import select, update

from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state
from flask_m2m.models import utcnow
from flask_m2m.verification import JWS_REGISTRY

ISSUER = "https://issuer.test"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")
KTY = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
OTHER_SECRET_KEY = "another-secret-key-fedcba9876543210"


def _token(app: Flask, creds: dict[str, Any], scope: str | None = None) -> str:
    return fetch_token(app.test_client(), creds, scope)


def _whoami(app: Flask, token: str) -> Any:
    return app.test_client().get("/api/whoami", headers=bearer(token))


def _jwks(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/m2m/jwks.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.get_json()
    return data


def _kids(app: Flask) -> set[str]:
    return {key["kid"] for key in _jwks(app)["keys"]}


def _rotate(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["m2m", "rotate-keys"])
    assert result.exit_code == 0, result.output


def _key_rows(app: Flask) -> list[Any]:
    with app.app_context():
        state = get_state(app)
        model = state.models.signing_key
        return list(state.db.session.execute(select(model)).scalars())


def _verify(url: str, token: str, alg: str, audience: str = ISSUER) -> dict[str, Any]:
    """Verify ``token`` with PyJWT, fetching the key from the JWKS at ``url`` over HTTP."""
    signing_key = jwt.PyJWKClient(url, cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=[alg],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "exp", "aud", "sub", "iat", "jti"]},
    )
    return claims


def test_header_and_claims(app: Flask, registered_client: dict[str, Any]) -> None:
    """RFC 9068 §2.1 (typ at+jwt, alg, kid) and §2.2 (iss, exp, aud, sub, client_id, iat, jti,
    scope); the kid names a key of the JWKS (RFC 7517 §4.5)."""
    response = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials", "scope": "read"},
        headers=basic_auth(registered_client["client_id"], registered_client["client_secret"]),
    )
    assert response.status_code == 200
    body = response.get_json()
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] in _kids(app)
    claims = jwt.decode(token, options={"verify_signature": False})
    client_id = registered_client["client_id"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ISSUER
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert claims["scope"] == "read"
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == 3600
    assert 0 < body["expires_in"] <= 3600
    assert isinstance(claims["jti"], str) and claims["jti"]
    other = jwt.decode(_token(app, registered_client), options={"verify_signature": False})
    assert other["jti"] != claims["jti"]
    assert other["scope"] == "read write"


def test_audience_setting(app_factory: Callable[..., Flask], live_server_factory: Any) -> None:
    """RFC 9068 §2.2 / §3: ``aud`` is M2M_AUDIENCE when set, and the resource accepts it."""
    app = app_factory(M2M_AUDIENCE="https://api.test")
    server = live_server_factory(app)
    token = _token(app, register(app))
    claims = _verify(server.url + "/m2m/jwks.json", token, "RS256", audience="https://api.test")
    assert claims["aud"] == "https://api.test"
    assert claims["iss"] == ISSUER
    assert _whoami(app, token).status_code == 200


@pytest.mark.real_keys
@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_signing_algorithms_verify_with_pyjwt(
    app_factory: Callable[..., Flask], live_server_factory: Any, alg: str
) -> None:
    """RFC 9068 §2.1 (alg) and §4 (validation with the JWKS fetched over HTTP, RFC 7517 §5)."""
    app = app_factory(M2M_SIGNING_ALG=alg)
    server = live_server_factory(app)
    creds = register(app)
    token = _token(app, creds, "read")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["typ"] == "at+jwt"
    claims = _verify(server.url + "/m2m/jwks.json", token, alg)
    assert claims["sub"] == claims["client_id"] == creds["client_id"]
    assert claims["scope"] == "read"
    jwk = next(k for k in _jwks(app)["keys"] if k["kid"] == header["kid"])
    assert jwk["kty"] == KTY[alg]
    assert jwk["alg"] == alg
    response = _whoami(app, token)
    assert response.status_code == 200
    assert response.get_json()["client_id"] == creds["client_id"]


@pytest.mark.real_keys
@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jwks_publishes_public_members_only(app_factory: Callable[..., Flask], alg: str) -> None:
    """RFC 7517 §4 / §5 (kid, kty, use "sig", alg on every key; no private member, §9.1)."""
    app = app_factory(M2M_SIGNING_ALG=alg)
    _token(app, register(app))
    _rotate(app)  # a retired key and the active one
    response = app.test_client().get("/m2m/jwks.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers.get("Cache-Control")
    keys = response.get_json()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert key["kid"] and key["kty"] == KTY[alg]
        assert key["use"] == "sig"
        assert key["alg"] == alg
        assert not set(PRIVATE_MEMBERS) & set(key), key


@pytest.mark.real_keys
def test_signing_keys_stored_encrypted(app: Flask, registered_client: dict[str, Any]) -> None:
    """RFC 7516 §7.1: the private JWK is stored as a JWE compact serialization; no private
    member value is stored in clear (RFC 7517 §9.1)."""
    _token(app, registered_client)
    with app.app_context():
        private = get_state(app).keys.signing_key().as_dict(private=True)
    secrets_ = [private[m] for m in PRIVATE_MEMBERS if m in private]
    assert secrets_
    rows = _key_rows(app)
    assert len(rows) == 1
    row = rows[0]
    assert row.kid == private["kid"]
    parts = row.private_jwk_encrypted.split(".")
    assert len(parts) == 5
    protected = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    assert "enc" in protected
    for value in secrets_:
        assert value not in row.private_jwk_encrypted
        assert value not in json.dumps(row.public_jwk)


def test_other_secret_key_cannot_decrypt(
    app_factory: Callable[..., Flask], shared_database_url: str
) -> None:
    """RFC 7516 §5.2: a key encrypted under one SECRET_KEY cannot be decrypted under another;
    flask-m2m documents a ConfigurationError, and the stored key is left untouched."""
    first = app_factory(database_url=shared_database_url)
    second = app_factory(database_url=shared_database_url, SECRET_KEY=OTHER_SECRET_KEY)
    token = _token(first, register(first))
    kid = jwt.get_unverified_header(token)["kid"]
    creds = register(second)  # hashed under the second app's key, so it authenticates there
    with pytest.raises(ConfigurationError):
        second.test_client().post(
            "/m2m/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(creds["client_id"], creds["client_secret"]),
        )
    assert [row.kid for row in _key_rows(first)] == [kid]
    assert _whoami(first, token).status_code == 200


# The longest token lifetime (the per-client maximum, 86400 s by default) + the publication
# delay of a new key (key refresh + leeway) + key refresh + leeway, with the defaults.
RETENTION = timedelta(seconds=86400 + (60 + 30) + 60 + 30)


def _retire(app: Flask, kid: str, ago: timedelta) -> None:
    """Mark key ``kid`` as retired ``ago`` (instead of waiting that long)."""
    with app.app_context():
        state = get_state(app)
        model = state.models.signing_key
        state.db.session.execute(
            update(model).where(model.kid == kid).values(retired_at=utcnow() - ago)
        )
        state.db.session.commit()


@pytest.mark.real_keys
def test_rotate_keys(app: Flask, registered_client: dict[str, Any]) -> None:
    """RFC 7517 §5 / RFC 9068 §4: after rotation both the old and the new key are published
    and both tokens validate; a key retired longer than the retention ago is unpublished, one
    retired more recently stays."""
    token_a = _token(app, registered_client)
    _rotate(app)
    token_b = _token(app, registered_client)
    kid_a = jwt.get_unverified_header(token_a)["kid"]
    kid_b = jwt.get_unverified_header(token_b)["kid"]
    assert kid_a != kid_b
    assert _whoami(app, token_a).status_code == 200
    assert _whoami(app, token_b).status_code == 200
    assert {kid_a, kid_b} <= _kids(app)

    _retire(app, kid_a, RETENTION + timedelta(minutes=1))
    _rotate(app)
    token_c = _token(app, registered_client)
    kid_c = jwt.get_unverified_header(token_c)["kid"]
    kids = _kids(app)
    assert kid_a not in kids
    assert {kid_b, kid_c} <= kids
    assert kid_a not in {row.kid for row in _key_rows(app)}
    assert _whoami(app, token_b).status_code == 200
    assert _whoami(app, token_c).status_code == 200

    _retire(app, kid_b, RETENTION - timedelta(minutes=1))  # some of its tokens may be alive
    _rotate(app)
    assert {kid_b, kid_c} <= _kids(app)
    assert _whoami(app, token_b).status_code == 200


@pytest.mark.real_keys
def test_instances_on_one_database_share_keys(
    app_factory: Callable[..., Flask], shared_database_url: str
) -> None:
    """RFC 9068 §4: every instance validates every instance's tokens from one shared JWKS;
    a kid it has not seen yet (after a rotation elsewhere) makes it reload the keys."""
    one = app_factory(database_url=shared_database_url)
    two = app_factory(database_url=shared_database_url)
    creds = register(one)
    token_one = _token(one, creds)
    token_two = _token(two, creds)
    assert _whoami(two, token_one).status_code == 200
    assert _whoami(one, token_two).status_code == 200

    def by_kid(app: Flask) -> list[dict[str, Any]]:
        return sorted(_jwks(app)["keys"], key=lambda k: k["kid"])

    assert by_kid(one) == by_kid(two)
    _rotate(one)
    token_new = _token(one, creds)
    assert (
        jwt.get_unverified_header(token_new)["kid"] != jwt.get_unverified_header(token_one)["kid"]
    )
    response = _whoami(two, token_new)
    assert response.status_code == 200
    assert response.get_json()["client_id"] == creds["client_id"]
    assert by_kid(one) == by_kid(two)
    assert _whoami(one, _token(two, creds)).status_code == 200


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _move_back(app: Flask, kid: str, column: str, by: timedelta) -> None:
    """Move key ``kid``'s ``column`` timestamp ``by`` into the past (instead of waiting)."""
    with app.app_context():
        state = get_state(app)
        model = state.models.signing_key
        row = state.db.session.execute(select(model).where(model.kid == kid)).scalar_one()
        setattr(row, column, getattr(row, column) - by)
        state.db.session.commit()


@pytest.mark.real_keys
def test_a_key_made_elsewhere_signs_once_every_instance_publishes_it(
    app_factory: Callable[..., Flask], shared_database_url: str
) -> None:
    """A key made by ``rotate-keys`` in another process is published here at the next re-read
    of the key table, but signs here only ``M2M_KEY_PUBLICATION_SECONDS`` after it was made
    (by then every instance has re-read the table), so a resource server that receives a token
    with the new ``kid`` finds the key at whichever instance it asks (RFC 7517 §5, RFC 9068
    §4). Until then the retired key keeps signing here. The process that made the key signs
    with it at once."""
    here = app_factory(shared_database_url, M2M_KEY_PUBLICATION_SECONDS=600)
    elsewhere = app_factory(shared_database_url, M2M_KEY_PUBLICATION_SECONDS=600)
    creds = register(here)
    old_kid = _kid(_token(here, creds))
    with elsewhere.app_context():
        new_kid = get_state(elsewhere).keys.rotate()
    assert _kid(_token(elsewhere, creds)) == new_kid

    def reread() -> None:  # what every instance does each M2M_KEY_REFRESH_SECONDS
        with here.app_context():
            get_state(here).keys.refresh(wait=True)

    reread()
    assert {old_kid, new_kid} <= _kids(here)
    token = _token(here, creds)
    assert _kid(token) == old_kid
    assert _whoami(elsewhere, token).status_code == 200
    rows = {row.kid: row for row in _key_rows(here)}
    assert rows[old_kid].retired_at == rows[new_kid].created_at  # a hand-over, no gap
    with elsewhere.app_context():
        newest_kid = get_state(elsewhere).keys.rotate()  # a second rotation meanwhile
    reread()
    assert _kid(_token(here, creds)) == old_kid
    assert {old_kid, new_kid, newest_kid} <= _kids(here)

    _move_back(here, new_kid, "created_at", timedelta(seconds=570))
    _move_back(here, old_kid, "retired_at", timedelta(seconds=570))
    reread()
    assert _kid(_token(here, creds)) == old_kid  # 30 seconds to go
    _move_back(here, new_kid, "created_at", timedelta(seconds=35))
    _move_back(here, old_kid, "retired_at", timedelta(seconds=35))
    reread()
    token = _token(here, creds)
    assert _kid(token) == new_kid
    assert _whoami(elsewhere, token).status_code == 200
    assert {old_kid, new_kid} <= _kids(here)  # the old key's tokens are still alive


def test_publication_delay_defaults_to_key_refresh_plus_leeway(
    app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The delay defaults to the key refresh period plus the clock-skew leeway; one shorter
    than the refresh period (another instance may not publish the key yet) is warned about."""
    with caplog.at_level("WARNING"):
        assert get_state(app_factory()).settings.key_publication_delay == 60 + 30
        app = app_factory(M2M_KEY_REFRESH_SECONDS=5, M2M_LEEWAY=2)
        assert get_state(app).settings.key_publication_delay == 7
    assert "M2M_KEY_PUBLICATION_SECONDS" not in caplog.text
    with caplog.at_level("WARNING"):
        app = app_factory(M2M_KEY_PUBLICATION_SECONDS=0)
    assert get_state(app).settings.key_publication_delay == 0
    assert "M2M_KEY_PUBLICATION_SECONDS is shorter than M2M_KEY_REFRESH_SECONDS" in caplog.text


def _rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "thumbprint"])
def test_keys_from_config(
    app_factory: Callable[..., Flask], live_server_factory: Any, with_kid: bool
) -> None:
    """RFC 7517 §5 / RFC 9068 §2.1: keys given in M2M_SIGNING_KEYS sign the tokens, only their
    public part is published, and the kid is the one given (else the RFC 7638 thumbprint)."""
    private = {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "alg": "ES256"}
    if with_kid:
        private["kid"] = "configured-es256"
    expected_kid = private["kid"] if with_kid else _rfc7638_thumbprint(private)
    app = app_factory(M2M_SIGNING_ALG="ES256", M2M_SIGNING_KEYS={"keys": [private]})
    server = live_server_factory(app)
    token = _token(app, register(app))
    header = jwt.get_unverified_header(token)
    assert header["kid"] == expected_kid
    assert header["alg"] == "ES256"
    keys = _jwks(app)["keys"]
    assert len(keys) == 1
    assert keys[0]["kid"] == expected_kid
    assert "d" not in keys[0]
    assert (keys[0]["x"], keys[0]["y"]) == (private["x"], private["y"])
    public = jwt.PyJWK({k: v for k, v in private.items() if k != "d"})
    jwt.decode(token, public.key, algorithms=["ES256"], audience=ISSUER, issuer=ISSUER)
    _verify(server.url + "/m2m/jwks.json", token, "ES256")
    assert _whoami(app, token).status_code == 200

    result = app.test_cli_runner().invoke(args=["m2m", "rotate-keys"])
    assert result.exit_code != 0
    assert "M2M_SIGNING_KEYS" in result.output
    assert _key_rows(app) == []
    assert jwt.get_unverified_header(_token(app, register(app)))["kid"] == expected_kid


def test_configured_bare_key_is_published_with_alg_and_use(
    app_factory: Callable[..., Flask],
) -> None:
    """RFC 7517 §4.2 / §4.4 and RFC 8725 §3.1 (one algorithm per key): a key given in
    M2M_SIGNING_KEYS without "alg"/"use" is published like a generated one, with the alg it
    signs with and use "sig"."""
    private = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    app = app_factory(M2M_SIGNING_ALG="ES256", M2M_SIGNING_KEYS={"keys": [private]})
    token = _token(app, register(app))
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    (key,) = _jwks(app)["keys"]
    assert "d" not in key
    assert key["kid"] == jwt.get_unverified_header(token)["kid"]
    assert key["alg"] == "ES256"
    assert key["use"] == "sig"


def test_opaque_tokens(app_factory: Callable[..., Flask]) -> None:
    """RFC 6749 §1.4 / §4.4.3: an opaque token (no JWT structure) that the database keeps only
    as a SHA-256 hash, and that the protected resource accepts (RFC 6750 §2.1)."""
    app = app_factory(M2M_TOKEN_FORMAT="opaque")
    creds = register(app)
    token = _token(app, creds)
    assert token.startswith("m2mat_")
    assert "." not in token
    response = _whoami(app, token)
    assert response.status_code == 200
    assert response.get_json()["client_id"] == creds["client_id"]
    with app.app_context():
        state = get_state(app)
        session = state.db.session
        rows = list(session.execute(select(state.models.opaque_token)).scalars())
        assert [row.token_hash for row in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        for table in state.db.metadata.sorted_tables:
            for row in session.execute(select(table)).all():
                assert all(token not in str(value) for value in row), table.name


@pytest.mark.parametrize(
    "config",
    [
        {"M2M_TOKEN_FORMAT": "xml"},
        {"M2M_SIGNING_ALG": "HS256"},
        {"M2M_SIGNING_ALG": "none"},
        {"M2M_CLIENT_SECRET_LENGTH": 31},
        {"SECRET_KEY": None},
        {"M2M_SIGNING_KEYS": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}},
    ],
    ids=["format", "alg-hs256", "alg-none", "secret-length", "no-secret-key", "no-private-key"],
)
def test_bad_configuration_fails_at_init(config: dict[str, Any]) -> None:
    """RFC 9068 §2.1 (asymmetric signing only, never "none") and RFC 6749 §2.3.1 / §10.10
    (strong client secrets): a bad setting is a ConfigurationError when the app is set up."""
    with pytest.raises(ConfigurationError):
        make_app(**config)


def test_requests_naming_a_new_key_together_all_wait_for_one_reload(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key made by another instance: every request that names it while this instance reloads
    its keys waits for that one reload and finds the key (RFC 7515 §4.1.4 ``kid``), rather than
    being refused because the reload was already under way."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    here, _ = make_app(url)
    elsewhere, _ = make_app(url)
    with here.app_context():
        keys = get_state(here).keys
        keys.signing_key()
    with elsewhere.app_context():
        new_kid = get_state(elsewhere).keys.rotate()
    reload = keys.refresh
    reloads: list[float] = []

    def slow_reload(wait: bool = False) -> None:
        reloads.append(time.monotonic())
        time.sleep(0.3)  # a slow database: the other requests arrive meanwhile
        reload(wait=wait)

    monkeypatch.setattr(keys, "refresh", slow_reload)
    barrier = threading.Barrier(8)

    def look_up(_: int) -> bool:
        barrier.wait(timeout=10)
        with here.app_context():
            return keys.public_key(new_kid) is not None

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(look_up, range(8)))
    assert found == [True] * 8
    assert len(reloads) == 1


SIGNATURE_BYTES = {"ES256": 64, "EdDSA": 64}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_every_issued_token_verifies_with_joserfc_and_pyjwt(
    app_factory: Callable[..., Flask], alg: str
) -> None:
    """RFC 7515 §5.2 / RFC 9068 §4: each token flask-m2m signs (its header serialised once per
    key, the signature computed by ``cryptography``) verifies with joserfc and with PyJWT, with
    claims of any JSON (non-ASCII text from ``token_claims``), across a key rotation. ES256 and
    EdDSA signatures are the raw 64 bytes (RFC 7518 §3.4, RFC 8037 §3.1), not DER."""
    app = app_factory(M2M_SIGNING_ALG=alg)
    get_state(app).extension.token_claims(
        lambda client, scope: {"team": "équipe ☃", "tags": ["a", 1, None, True], "n": 1.5}
    )
    creds = register(app)
    seen_kids = set()
    for rotation in range(2):
        keys = {key["kid"]: key for key in _jwks(app)["keys"]}
        for scope in ("read", "write", "read write", None):
            token = _token(app, creds, scope)
            header = jwt.get_unverified_header(token)
            assert header == {"typ": "at+jwt", "alg": alg, "kid": header["kid"]}
            jwk = keys[header["kid"]]
            # joserfc warns of EdDSA (RFC 9864); the server's registry keeps it quiet.
            by_joserfc = joserfc_jwt.decode(token, import_key(jwk), registry=JWS_REGISTRY)
            assert by_joserfc.header == header
            by_pyjwt = jwt.decode(
                token,
                jwt.PyJWK(jwk).key,
                algorithms=[alg],
                audience=ISSUER,
                issuer=ISSUER,
                options={"require": ["iss", "exp", "aud", "sub", "iat", "jti"]},
            )
            assert by_pyjwt == by_joserfc.claims
            assert by_pyjwt["team"] == "équipe ☃"
            assert by_pyjwt["tags"] == ["a", 1, None, True]
            assert by_pyjwt["scope"] == (scope or "read write")
            signature = token.split(".")[2]
            length = len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
            assert length == SIGNATURE_BYTES.get(alg, 256)
            assert _whoami(app, token).status_code == 200
            seen_kids.add(header["kid"])
        if rotation == 0:
            _rotate(app)
    assert len(seen_kids) == 2
