"""``flask m2m …``: manage clients and signing keys from the command line.

Each command acts as ``cli:<user>`` and commits its change on ``db.session`` (rolled back if
it fails), as :mod:`flask_m2m.lifecycle` asks of its callers.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click
from flask.cli import AppGroup

from . import audit, client_keys, lifecycle, retention, signals
from .client_jwks import parse_public_keys
from .errors import ClientNotFound, ConfigurationError, InvalidClientData, SecretConflict
from .management.schemas import ClientSchema, dump_client_with_secret
from .policy import CLIENT_AUTH_METHODS, MAX_DAYS, MAX_JWKS_BYTES, MAX_PAGE_SIZE, RATE_LIMIT_MODES
from .state import M2MState, get_state

_JWKS_FILE_HELP = "The client's public keys: a JWK Set, one JWK, or a PEM public key."

m2m_cli = AppGroup("m2m", help="Manage flask-m2m clients and signing keys.")


def _state() -> M2MState:
    return get_state()


def _actor() -> str:
    """``cli:<user>``: the principal of every audit row a command writes."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        user = "unknown"
    return f"cli:{user}"


@contextmanager
def _committed(state: M2MState) -> Iterator[None]:
    """Commit the block's work on ``db.session``; roll it back if the block raises."""
    try:
        yield
        state.db.session.commit()
    except BaseException:
        state.db.session.rollback()
        raise


def _fail(exc: Exception) -> None:
    raise click.ClickException(getattr(exc, "description", None) or str(exc))


def _print_secret(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data))
        return
    if "client_secret" not in data:
        click.echo(f"client_id:     {data['client_id']}")
        click.echo("auth method:   private_key_jwt (no secret: the client signs with its key)")
        return
    click.echo(f"client_id:     {data['client_id']}")
    click.echo(f"client_secret: {data['client_secret']}")
    click.echo("Store the secret now: it is not stored in clear and will not be shown again.")


@m2m_cli.command("create-client")
@click.option("--name", required=True, help="Human-readable name.")
@click.option("--scope", "scope", default="", help='Allowed scopes, space-separated: "read write".')
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    metavar="URI",
    help="An audience (RFC 8707 resource) the client may ask tokens for; repeatable.",
)
@click.option(
    "--expires-in-days", type=click.IntRange(min=1, max=MAX_DAYS), default=None, help="Lifetime."
)
@click.option("--rate-limit", default=None, help='Token-endpoint limit, e.g. "10/minute".')
@click.option(
    "--rate-limit-mode",
    type=click.Choice(RATE_LIMIT_MODES),
    default=None,
    help="Enforce the limit, or only count and report it (default: M2M_TOKEN_RATE_LIMIT_MODE).",
)
@click.option(
    "--dpop-bound", is_flag=True, help="The client must use DPoP: its tokens are key-bound."
)
@click.option("--secret-stdin", is_flag=True, help="Import an existing secret read from stdin.")
@click.option(
    "--auth-method",
    type=click.Choice(CLIENT_AUTH_METHODS),
    default=None,
    help="client_secret_basic (a secret; the default) or private_key_jwt (public keys only).",
)
@click.option("--jwks-file", type=click.File("r"), default=None, help=_JWKS_FILE_HELP)
@click.option("--jwks-uri", default=None, help="https URL where the client publishes its keys.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create_client(
    name: str,
    scope: str,
    audiences: tuple[str, ...],
    expires_in_days: int | None,
    rate_limit: str | None,
    rate_limit_mode: str | None,
    dpop_bound: bool,
    secret_stdin: bool,
    auth_method: str | None,
    jwks_file: TextIO | None,
    jwks_uri: str | None,
    as_json: bool,
) -> None:
    """Create a client and print its id and secret (shown only this once); with
    ``--auth-method private_key_jwt`` and its public keys, a client without a secret."""
    secret = sys.stdin.readline().rstrip("\r\n") if secret_stdin else None
    keys = _keys_from_options(jwks_file, jwks_uri)
    if keys and auth_method is None:
        auth_method = "private_key_jwt"
    state = _state()
    try:
        with _committed(state):
            client, issued = lifecycle.create_client(
                state,
                actor=_actor(),
                name=name,
                scopes=scope,
                audiences=audiences,
                expires_in_days=expires_in_days,
                rate_limit=rate_limit,
                rate_limit_mode=rate_limit_mode,
                dpop_bound_access_tokens=dpop_bound,
                secret=secret,
                token_endpoint_auth_method=auth_method or "client_secret_basic",
                **keys,
            )
            data = dump_client_with_secret(client, issued)
    except InvalidClientData as exc:
        _fail(exc)
    _print_secret(data, as_json)


def _keys_from_options(jwks_file: TextIO | None, jwks_uri: str | None) -> dict[str, Any]:
    """The ``jwks``/``jwks_uri`` arguments the options give (at most one of them)."""
    if jwks_file is not None and jwks_uri is not None:
        raise click.UsageError("Give --jwks-file or --jwks-uri, not both.")
    if jwks_uri is not None:
        return {"jwks_uri": jwks_uri}
    if jwks_file is None:
        return {}
    try:
        return {"jwks": parse_public_keys(jwks_file.read(MAX_JWKS_BYTES * 4))}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--jwks-file") from None


@m2m_cli.command("set-client-keys")
@click.argument("client_id")
@click.option("--jwks-file", type=click.File("r"), default=None, help=_JWKS_FILE_HELP)
@click.option("--jwks-uri", default=None, help="https URL where the client publishes its keys.")
def set_client_keys(client_id: str, jwks_file: TextIO | None, jwks_uri: str | None) -> None:
    """Replace the public keys of a private_key_jwt client (or make a secret client one:
    its secrets are deleted)."""
    keys = _keys_from_options(jwks_file, jwks_uri)
    if not keys:
        raise click.UsageError("Give --jwks-file or --jwks-uri.")
    state = _state()
    try:
        with _committed(state):
            client_keys.set_client_keys(
                state,
                client_id,
                actor=_actor(),
                token_endpoint_auth_method="private_key_jwt",
                **keys,
            )
    except (ClientNotFound, InvalidClientData, SecretConflict) as exc:
        _fail(exc)
    click.echo(f"Keys of {client_id} replaced.")


@m2m_cli.command("list-clients")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_clients(as_json: bool) -> None:
    """List the clients (never their secrets)."""
    state, found, cursor = _state(), [], None
    while True:
        page = lifecycle.list_clients(state, limit=MAX_PAGE_SIZE, cursor=cursor)
        found.extend(page.items)
        if not (cursor := page.next_cursor):
            break
    shown = ClientSchema(many=True).dump(found)  # as the management API shows them
    if as_json:
        click.echo(json.dumps({"clients": shown}))
        return
    if not found:
        click.echo("No clients.")
    for client, data in zip(found, shown, strict=True):
        expires, scopes = data["expires_at"] or "never", " ".join(data["scopes"])
        row = f"{data['client_id']}  {client.status():8}  expires {expires}  {data['name']!r}"
        click.echo(f"{row}  [{scopes}]")


@m2m_cli.command("set-audiences")
@click.argument("client_id")
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    metavar="URI",
    help="An audience the client may ask tokens for; repeatable. None given: only the default.",
)
def set_audiences(client_id: str, audiences: tuple[str, ...]) -> None:
    """Replace the audiences (RFC 8707 resources) a client may ask tokens for."""
    state = _state()
    try:
        with _committed(state):
            client = lifecycle.update_client(
                state, client_id, {"audiences": list(audiences)}, actor=_actor()
            )
            shown = " ".join(client.audiences or []) or "(none: the default audience only)"
    except (ClientNotFound, InvalidClientData) as exc:
        _fail(exc)
    click.echo(f"Audiences of {client_id}: {shown}")


def _set_disabled(client_id: str, disabled: bool) -> None:
    state = _state()
    try:
        with _committed(state):
            lifecycle.set_disabled(state, client_id, disabled, actor=_actor())
    except ClientNotFound as exc:
        _fail(exc)
    click.echo(f"{'Disabled' if disabled else 'Enabled'} {client_id}.")


@m2m_cli.command("disable-client")
@click.argument("client_id")
def disable_client(client_id: str) -> None:
    """Disable a client; its outstanding tokens stop working."""
    _set_disabled(client_id, True)


@m2m_cli.command("enable-client")
@click.argument("client_id")
def enable_client(client_id: str) -> None:
    """Enable a disabled client (its tokens from before stay invalid)."""
    _set_disabled(client_id, False)


@m2m_cli.command("set-dpop-bound")
@click.argument("client_id")
@click.argument("setting", type=click.Choice(["on", "off"]))
def set_dpop_bound(client_id: str, setting: str) -> None:
    """Require (on) or stop requiring (off) DPoP-bound tokens for a client (RFC 9449 §5.2)."""
    state = _state()
    try:
        with _committed(state):
            lifecycle.update_client(
                state, client_id, {"dpop_bound_access_tokens": setting == "on"}, actor=_actor()
            )
    except ClientNotFound as exc:
        _fail(exc)
    status = "required" if setting == "on" else "optional"
    click.echo(f"DPoP-bound tokens {status} for {client_id}.")


@m2m_cli.command("delete-client", help="Delete a client; its tokens stop working.")
@click.argument("client_id")
@click.confirmation_option(prompt="Delete this client for good?")
def delete_client(client_id: str) -> None:
    state = _state()
    try:
        with _committed(state):
            lifecycle.delete_client(state, client_id, actor=_actor())
    except ClientNotFound as exc:
        _fail(exc)
    click.echo(f"Deleted {client_id}.")


@m2m_cli.command("rotate-secret", help="Give a client a new secret (shown only this once).")
@click.argument("client_id")
@click.option(
    "--grace-period", type=click.IntRange(min=0), default=0, show_default=True,
    help="Seconds the old secret keeps working.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rotate_secret(client_id: str, grace_period: int, as_json: bool) -> None:
    state = _state()
    try:
        with _committed(state):
            client, issued = lifecycle.rotate_secret(
                state, client_id, actor=_actor(), grace_period_seconds=grace_period
            )
            data = dump_client_with_secret(client, issued)
    except (ClientNotFound, InvalidClientData, SecretConflict) as exc:
        _fail(exc)
    _print_secret(data, as_json)


@m2m_cli.command("rotate-keys")
def rotate_keys() -> None:
    """Add a new signing key; older public keys stay published until their tokens expire."""
    from flask import current_app

    state = _state()
    try:
        kid = state.keys.rotate()
    except ConfigurationError as exc:  # the keys come from M2M_SIGNING_KEYS
        _fail(exc)
    with _committed(state):
        audit.record(
            state, "keys_rotated", None, {"kid": kid}, actor=_actor(), session=state.db.session
        )
    signals.keys_rotated.send(current_app._get_current_object(), kid=kid)  # type: ignore[attr-defined]
    delay = state.settings.key_publication_delay
    click.echo(
        f"New signing key {kid}; every instance publishes it at its next key refresh and "
        f"signs with it from {delay:g} s on; older keys stay in the JWKS until their tokens "
        "expire."
    )


@m2m_cli.command("reencrypt-keys")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def reencrypt_keys(as_json: bool) -> None:
    """Re-encrypt the stored signing keys under the current master secret (after a rotation
    of M2M_KEY_ENCRYPTION_SECRET), and count the client secrets still hashed under an older
    one."""
    from sqlalchemy import func, select

    state = _state()
    try:
        changed, current = state.keys.reencrypt()
    except ConfigurationError as exc:
        _fail(exc)
    model = state.models.client_secret
    older = state.db.session.scalar(
        select(func.count())
        .select_from(model)
        .where(~model.secret_hash.startswith(state.secrets.prefix, autoescape=True))
    )
    with _committed(state):
        audit.record(
            state,
            "keys_reencrypted",
            None,
            {"reencrypted": changed},
            actor=_actor(),
            session=state.db.session,
        )
    result = {"reencrypted_keys": changed, "current_keys": current, "older_secret_hashes": older}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"Re-encrypted {changed} signing key(s); {current} already used the current secret.")
    click.echo(
        f"{older} client secret(s) are still hashed under an older master secret; each moves to "
        "the current one the next time its client authenticates. Keep the older master secret "
        "in the fallbacks until this count is 0 (or rotate those clients' secrets)."
    )


#: How ``prune`` names each kind of row in its human output.
_PRUNED_KINDS = {
    "opaque_tokens": "expired opaque tokens",
    "revoked_tokens": "revoked-token entries past their expiry",
    "client_secrets": "expired client secrets",
    "audit_events": "audit events past M2M_AUDIT_RETENTION_DAYS",
}


@m2m_cli.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=retention.BATCH_SIZE,
    show_default=True,
    help="Most rows deleted per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def prune(dry_run: bool, batch_size: int, as_json: bool) -> None:
    """Delete expired tokens and secrets, and audit events past their retention.

    Safe to run from cron on several instances at once.
    """
    state = _state()
    result = retention.prune(state, batch_size=batch_size, actor=_actor(), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "dry_run": dry_run}))
        return
    verb = "Would delete" if dry_run else "Deleted"
    keep_audit = state.settings.audit_retention_days is None
    for kind, count in result.as_dict().items():
        if not (kind == "audit_events" and keep_audit):
            click.echo(f"{verb} {count} {_PRUNED_KINDS[kind]}.")
    if keep_audit:
        click.echo("Audit events are kept for good: M2M_AUDIT_RETENTION_DAYS is not set.")
