"""The example's admin console: server-rendered pages over :mod:`flask_m2m.lifecycle`.

One admin logs in with Flask-Login; the password hash comes from ``EXAMPLE_ADMIN_PASSWORD_HASH``
(or the instance-folder file ``flask --app example demo`` writes). A session ends at logout (on
every instance: its version is in the database), when the password changes, and
``EXAMPLE_CONSOLE_SESSION_SECONDS`` after the login. Every POST is checked for a
CSRF token by Flask-WTF, on this blueprint only, so the JSON APIs are untouched. The console
calls the same functions as the management API, so policies and the audit trail are shared;
the audit actor is ``user:<admin username>``. Being the host app, it commits each change on
``db.session`` itself (rolled back on error), as :mod:`flask_m2m.lifecycle` asks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response as BaseResponse

from flask_m2m import (
    ClientNotFound,
    ConfigurationError,
    InvalidClientData,
    SecretConflict,
    audit,
    get_state,
    lifecycle,
)
from flask_m2m.bodies import discard_unread_body
from flask_m2m.client_jwks import parse_public_keys
from flask_m2m.client_keys import set_client_keys
from flask_m2m.policy import CLIENT_ID_PATTERN, MAX_NAME_LENGTH, PAGE_SIZE
from flask_m2m.state import M2MState

from . import db

#: File in the instance folder holding the generated admin password's hash.
PASSWORD_HASH_FILE = "admin_password_hash"
#: Login attempts per address within ``LOGIN_WINDOW_SECONDS`` of the first; a successful
#: login starts the count again, so in effect: failed logins allowed before the 429s.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_SECONDS = 300
#: A console session's lifetime from the login (``EXAMPLE_CONSOLE_SESSION_SECONDS``'s default).
SESSION_SECONDS = 8 * 3600
#: The session key holding what binds a session to the server's state.
SESSION_KEY = "example_console"
#: Endpoints reachable without logging in.
PUBLIC_ENDPOINTS = {"console.login", "console.static"}

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()
# An early refusal (CSRF failure, login required) leaves the connection usable.
bp.after_request(discard_unread_body)
login_manager = LoginManager()
bp.after_request(login_manager._update_remember_cookie)  # see init_console
login_manager.login_view = "console.login"
login_manager.login_message = ""  # the login page says what it is for
# Flask-Login's protection (a hash of address and User-Agent) only marks a permanent session
# "not fresh" on a mismatch, in "strong" mode too, and the console has no fresh-only page;
# sessions are bound to the server's state by the user loader instead.
login_manager.session_protection = None

# The console's pages load nothing but their own CSS and script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class CookieOnlySessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus the work for requests that send no cookie.

    Flask builds the cookie's signer on every request and saves every session; the API's
    callers (machine clients, without cookies) then pay for a session they never have. The
    sessions are otherwise Flask's own.
    """

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if app.secret_key and not request.environ.get("HTTP_COOKIE"):
            return self.session_class()  # what Flask opens for a request without the cookie
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)
        # else Flask would set no cookie and add no Vary either


class Admin(UserMixin):
    """The console's one user."""

    def __init__(self, username: str):
        self.id = username


class ConsoleAdmin(db.Model):  # type: ignore[name-defined,misc]
    """An admin's session version, in the database every instance shares: a logout bumps it,
    which ends every session made before (a missing row is version 0)."""

    __tablename__ = "example_console_admins"

    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    session_version: Mapped[int] = mapped_column(default=0)


def init_console(app: Flask) -> None:
    """Mount the console at ``/console`` on ``app``, with login and CSRF protection."""
    app.config.setdefault("EXAMPLE_ADMIN_USERNAME", "admin")
    seconds = app.config.setdefault("EXAMPLE_CONSOLE_SESSION_SECONDS", SESSION_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ConfigurationError(
            "EXAMPLE_CONSOLE_SESSION_SECONDS must be a positive whole number of seconds."
        )
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    # CSRF is checked by the console's own hook; the token endpoint and the JSON APIs
    # (Bearer or client authentication, no cookies) must not be.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    if type(app.session_interface) is SecureCookieSessionInterface:  # not the app's own
        app.session_interface = CookieOnlySessions()
    csrf.init_app(app)
    login_manager.init_app(app)
    # Flask-Login refreshes its remember-me cookie after every request of the app, reading
    # the session (so every API response would say ``Vary: Cookie``); only the console's
    # requests have a login to refresh, so its blueprint runs that hook instead.
    app.after_request_funcs[None].remove(login_manager._update_remember_cookie)
    app.extensions["example_console"] = LoginThrottle(app)
    _dummy_hash(_hash_method(password_hash(app)))  # made now, not in a first login's time
    app.register_blueprint(bp)


def admin_username(app: Flask | None = None) -> str:
    app = app or current_app
    return str(app.config.get("EXAMPLE_ADMIN_USERNAME") or "admin")


def password_hash(app: Flask | None = None) -> str | None:
    """The configured admin password hash, else the one in the instance folder, else None."""
    app = app or current_app
    configured = app.config.get("EXAMPLE_ADMIN_PASSWORD_HASH")
    if configured:
        return str(configured)
    path = Path(app.instance_path) / PASSWORD_HASH_FILE
    if not path.exists():
        return None
    return path.read_text().strip() or None


class LoginThrottle:
    """Login attempts per address, counted where the app's ``RATELIMIT_STORAGE_URI`` says
    (memory: per process; Redis: shared by every instance) under its ``RATELIMIT_KEY_PREFIX``.

    An attempt is reserved (an atomic increment) before its password is checked, so concurrent
    attempts cannot all pass a check of the count made before any of them failed.
    """

    #: Serializes the calls on a memory storage, whose expiry timer concurrent threads can
    #: start twice (limits issue #26); a shared storage is atomic by itself.
    lock: AbstractContextManager[Any]

    def __init__(self, app: Flask):
        options = dict(app.config.get("RATELIMIT_STORAGE_OPTIONS") or {})
        storage = storage_from_string(
            app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
            **{**options, "wrap_exceptions": True},  # failures as limits' StorageError
        )
        self.lock = threading.Lock() if isinstance(storage, MemoryStorage) else nullcontext()
        self.limiter = FixedWindowRateLimiter(storage)
        self.limit = RateLimitItemPerSecond(LOGIN_FAILURES_ALLOWED, LOGIN_WINDOW_SECONDS)
        self.prefix = str(app.config.get("RATELIMIT_KEY_PREFIX") or "m2m")

    def _key(self, address: str) -> tuple[str, ...]:
        return (self.prefix, "example-console-login", address)

    def reserve(self, address: str) -> bool:
        """Count an attempt from ``address``; False when it is one too many."""
        with self.lock:
            return self.limiter.hit(self.limit, *self._key(address))

    def clear(self, address: str) -> None:
        """Forget the attempts of ``address`` (after it logged in)."""
        with self.lock:
            self.limiter.clear(self.limit, *self._key(address))

    def remaining(self, address: str) -> int:
        """How many attempts ``address`` has left in its window."""
        with self.lock:
            return self.limiter.get_window_stats(self.limit, *self._key(address)).remaining


def _hash_method(pwhash: str | None) -> str | None:
    """The method of a werkzeug password hash (``scrypt:32768:8:1``), None if it has none."""
    return pwhash.split("$", 1)[0] if pwhash and "$" in pwhash else None


@lru_cache(maxsize=8)
def _dummy_hash(method: str | None) -> str:
    """A hash of a random password, made once per method (werkzeug's default for None or an
    unknown one): checked when the username is wrong or no password is set, so that a login
    costs the same work whatever the username."""
    password = secrets.token_urlsafe(16)
    if method:
        try:
            return generate_password_hash(password, method=method)
        except ValueError:
            pass
    return generate_password_hash(password)


def new_admin_password(app: Flask) -> str:
    """Make a random admin password and store only its hash in the instance folder."""
    password = secrets.token_urlsafe(18)
    path = Path(app.instance_path) / PASSWORD_HASH_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(generate_password_hash(password))
    return password


def _password_fingerprint(pwhash: str) -> str:
    """A short HMAC of the password hash under the app's ``SECRET_KEY``: kept in the session,
    it ends the sessions made before a password change, and shows nothing of the hash (the
    session cookie is signed, not encrypted)."""
    key = current_app.secret_key
    secret = key.encode() if isinstance(key, str) else bytes(key or b"")
    message = b"example-console-password\0" + pwhash.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def _session_version(username: str) -> int:
    version = db.session.scalar(
        select(ConsoleAdmin.session_version).where(ConsoleAdmin.username == username)
    )
    return version or 0


def _end_sessions(username: str) -> None:
    """Bump the admin's session version: every session made before ends, on every instance."""
    bump = (
        update(ConsoleAdmin)
        .where(ConsoleAdmin.username == username)
        .values(session_version=ConsoleAdmin.session_version + 1)
    )
    for last in (False, True):
        if not db.session.execute(bump).rowcount:  # type: ignore[attr-defined]
            db.session.add(ConsoleAdmin(username=username, session_version=1))
        try:
            db.session.commit()
            return
        except IntegrityError:  # another instance made the row meanwhile: bump that one
            db.session.rollback()
            if last:
                raise


def _start_session(username: str, pwhash: str) -> None:
    """Log ``username`` in: a permanent session (``PERMANENT_SESSION_LIFETIME``), no
    remember-me cookie, bound to the session version, the password and the login time."""
    session.permanent = True
    session[SESSION_KEY] = {
        "version": _session_version(username),
        "password": _password_fingerprint(pwhash),
        "since": int(time.time()),
    }
    login_user(Admin(username), remember=False)


@login_manager.user_loader
def _load_user(user_id: str) -> Admin | None:
    """The admin of a session still valid: made with the current password, not ended by a
    logout on any instance, younger than ``EXAMPLE_CONSOLE_SESSION_SECONDS``."""
    bound = session.get(SESSION_KEY)
    configured = password_hash()
    if user_id != admin_username() or not configured or not isinstance(bound, dict):
        return None
    try:
        since, version = float(bound["since"]), int(bound["version"])
        fingerprint = str(bound["password"])
    except (KeyError, TypeError, ValueError):
        return None
    if time.time() - since > current_app.config["EXAMPLE_CONSOLE_SESSION_SECONDS"]:
        return None
    if not hmac.compare_digest(fingerprint, _password_fingerprint(configured)):
        return None
    if version != _session_version(user_id):
        return None
    return Admin(user_id)


@bp.before_request
def _guard() -> BaseResponse | None:
    """CSRF check on every POST, then login required outside the login page."""
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # type: ignore[no-any-return]
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    return render_template("console/error.html", title="Form expired", error=error), 400


@bp.errorhandler(StorageError)
def _storage_error(error: StorageError) -> tuple[str, int]:
    """The login throttle's storage (Redis) is unreachable: no login until it is back."""
    current_app.logger.warning(
        "example console: rate-limit storage unavailable (%s)", type(error.storage_error).__name__
    )
    unavailable = ServiceUnavailable("Logins cannot be counted right now; try again shortly.")
    return render_template("console/error.html", title="Try again later", error=unavailable), 503


@bp.errorhandler(ClientNotFound)
def _not_found(error: ClientNotFound) -> tuple[str, int]:
    return render_template("console/error.html", title="No such client", error=error), 404


@bp.app_template_filter("when")
def _when(value: datetime | None) -> str:
    """A UTC time to the minute, or a dash."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


@bp.app_template_filter("status")
def _status(client: Any) -> str:
    """``active``, ``disabled`` or ``expired``, as the model says."""
    return str(client.status())


@bp.context_processor
def _limits() -> dict[str, Any]:
    """The field limits the forms state, from the rules the server applies."""
    return {"max_name_length": MAX_NAME_LENGTH}


def _state() -> M2MState:
    return get_state()


def _actor() -> str:
    """The audit actor of the console's changes: the logged-in admin."""
    return f"user:{current_user.id}"


@contextmanager
def _committed() -> Iterator[None]:
    """Commit the block's changes on ``db.session``; roll them back if it raises."""
    try:
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


# -- login -------------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str:
    """The ``next`` page if it is a console path on this site, else the client list.

    Refused: another site (a scheme or host, ``//host``, or a backslash, which browsers read
    as a slash), control characters (a CR or LF cannot be in the ``Location`` header), and
    empty or dot segments (``/console/../..//host``, also percent-encoded) that would lead
    out of the console.
    """
    fallback = url_for("console.list_clients")
    if not target or not (target.isascii() and target.isprintable()) or "\\" in target:
        return fallback
    parts = urlsplit(target)
    segments = unquote(parts.path).split("/")
    if (
        parts.scheme
        or parts.netloc
        or segments[:2] != ["", "console"]
        or "" in segments[2:-1]
        or {".", ".."} & set(segments)
    ):
        return fallback
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    if current_user.is_authenticated:
        return redirect(url_for("console.list_clients"))
    configured = password_hash()
    if request.method == "GET":
        return render_template("console/login.html", configured=bool(configured))
    address = request.remote_addr or "?"
    throttle: LoginThrottle = current_app.extensions["example_console"]
    if not throttle.reserve(address):
        flash(f"Too many failed logins; wait {LOGIN_WINDOW_SECONDS // 60} minutes.", "error")
        return render_template("console/login.html", configured=bool(configured)), 429
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    right_user = secrets.compare_digest(username.encode(), admin_username().encode())
    # One hash check whatever the username (a dummy hash for a wrong one), so the time
    # taken does not tell whether the username exists.
    real = configured if configured and right_user else None
    if check_password_hash(real or _dummy_hash(_hash_method(configured)), password) and real:
        throttle.clear(address)
        _start_session(admin_username(), real)
        return redirect(_safe_next(request.args.get("next")))
    flash("Wrong username or password.", "error")
    page = render_template("console/login.html", configured=bool(configured), username=username)
    return page, 401


@bp.post("/logout")
def logout() -> BaseResponse:
    """Log out, ending every session of the admin (other browsers' too) on every instance."""
    _end_sessions(current_user.id)
    logout_user()
    session.pop(SESSION_KEY, None)
    flash("You are logged out.", "info")
    return redirect(url_for("console.login"))


# -- clients -----------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's parser takes them)."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number, refused when too large for a float (``1e999`` would be infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large")
    return value


def _json_object(text: str, field: str) -> dict[str, Any]:
    """A JSON object typed into a textarea (empty: ``{}``)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as error:
        raise InvalidClientData(f"Not valid JSON: {error}.", field=field) from None
    except RecursionError:
        raise InvalidClientData("Not valid JSON: nested too deeply.", field=field) from None
    if not isinstance(value, dict):
        raise InvalidClientData("Give a JSON object, such as {\"team\": \"billing\"}.", field=field)
    return value


def _whole_number(text: str, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidClientData("Give a whole number.", field=field)
    return int(text)


def _errors(error: InvalidClientData) -> dict[str, str]:
    return {error.field or "_form": str(error.description)}


@bp.get("/")
def list_clients() -> str:
    cursor = request.args.get("cursor") or None
    try:
        page = lifecycle.list_clients(_state(), limit=PAGE_SIZE, cursor=cursor)
    except InvalidClientData:
        page = lifecycle.list_clients(_state(), limit=PAGE_SIZE)
    return render_template("console/list.html", page=page)


@bp.route("/clients/new", methods=["GET", "POST"])
def create_client() -> BaseResponse | tuple[str, int] | str:
    form = request.form
    if request.method == "GET":
        return render_template("console/create.html", form=form, errors={})
    try:
        keys = _pasted_keys(form.get("jwks", ""))
        with _committed():
            client, issued = lifecycle.create_client(
                _state(),
                actor=_actor(),
                name=form.get("name", ""),
                scopes=form.get("scopes", ""),
                audiences=form.get("audiences", "").split(),
                expires_in_days=_whole_number(form.get("expires_in_days", ""), "expires_in_days"),
                metadata=_json_object(form.get("metadata", ""), "metadata"),
                token_endpoint_auth_method="private_key_jwt" if keys else "client_secret_basic",
                jwks=keys,
                dpop_bound_access_tokens=bool(form.get("dpop_bound_access_tokens")),
            )
    except InvalidClientData as error:
        return render_template("console/create.html", form=form, errors=_errors(error)), 422
    if issued is None:  # a key client (private_key_jwt): nothing secret to show
        flash("Client created: it authenticates with its private key (private_key_jwt).", "success")
        return redirect(url_for("console.client_detail", client_id=client.client_id))
    return render_template("console/secret.html", client=client, secret=issued, created=True)


def _pasted_keys(text: str) -> dict[str, Any] | None:
    """The JWK Set pasted in a form (a JWK Set, a JWK or a PEM public key), or None."""
    if not text.strip():
        return None
    try:
        return parse_public_keys(text)
    except ValueError as exc:
        raise InvalidClientData(str(exc), field="jwks") from None


@bp.post("/clients/<client_id>/keys")
def replace_keys(client_id: str) -> BaseResponse | tuple[str, int]:
    """Replace the public keys of a key client (audited as ``client_keys_replaced``)."""
    state = _state()
    client = lifecycle.get_client(state, client_id)
    try:
        keys = _pasted_keys(request.form.get("jwks", ""))
        if keys is None:
            raise InvalidClientData("Paste a JWK Set, a JWK or a PEM public key.", field="jwks")
        with _committed():
            set_client_keys(state, client_id, actor=_actor(), jwks=keys)
    except (InvalidClientData, SecretConflict) as error:
        return _detail(client, errors={"jwks": str(error.description)}), 422
    flash("Keys replaced.", "success")
    return redirect(url_for("console.client_detail", client_id=client_id))


def _detail(client: Any, form: Any = None, errors: dict[str, str] | None = None) -> str:
    if form is None:
        form = {
            "name": client.name,
            "scopes": client.scope,
            "audiences": " ".join(client.audiences or []),
            "metadata": json.dumps(client.client_metadata or {}, indent=2),
            "dpop_bound_access_tokens": "on" if client.dpop_bound_access_tokens else "",
        }
    return render_template(
        "console/detail.html",
        client=client,
        form=form,
        errors=errors or {},
        secrets=lifecycle.list_secrets(_state(), client.client_id),
        max_grace=_state().settings.max_grace_period_seconds,
    )


@bp.get("/clients/<client_id>")
def client_detail(client_id: str) -> str:
    return _detail(lifecycle.get_client(_state(), client_id))


@bp.post("/clients/<client_id>")
def update_client(client_id: str) -> BaseResponse | tuple[str, int]:
    state = _state()
    client = lifecycle.get_client(state, client_id)
    form = request.form
    try:
        changes = {
            "name": form.get("name", ""),
            "scopes": form.get("scopes", ""),
            "audiences": form.get("audiences", "").split(),
            "metadata": _json_object(form.get("metadata", ""), "metadata"),
            "dpop_bound_access_tokens": bool(form.get("dpop_bound_access_tokens")),
        }
        with _committed():
            lifecycle.update_client(state, client_id, changes, actor=_actor())
    except InvalidClientData as error:
        return _detail(lifecycle.get_client(state, client.client_id), form, _errors(error)), 422
    flash("Changes saved.", "success")
    return redirect(url_for("console.client_detail", client_id=client_id))


@bp.post("/clients/<client_id>/disable")
def disable_client(client_id: str) -> BaseResponse:
    with _committed():
        lifecycle.set_disabled(_state(), client_id, True, actor=_actor())
    flash("Client disabled: its tokens no longer work.", "success")
    return redirect(url_for("console.client_detail", client_id=client_id))


@bp.post("/clients/<client_id>/enable")
def enable_client(client_id: str) -> BaseResponse:
    with _committed():
        lifecycle.set_disabled(_state(), client_id, False, actor=_actor())
    flash("Client enabled.", "success")
    return redirect(url_for("console.client_detail", client_id=client_id))


@bp.post("/clients/<client_id>/rotate")
def rotate_secret(client_id: str) -> BaseResponse | tuple[str, int] | str:
    state = _state()
    client = lifecycle.get_client(state, client_id)
    try:
        grace = _whole_number(request.form.get("grace_period_seconds", ""), "grace_period_seconds")
        with _committed():
            client, issued = lifecycle.rotate_secret(
                state, client_id, actor=_actor(), grace_period_seconds=grace or 0
            )
    except InvalidClientData as error:
        return _detail(client, errors=_errors(error)), 422
    except SecretConflict as error:
        return _detail(client, errors={"grace_period_seconds": str(error.description)}), 409
    return render_template("console/secret.html", client=client, secret=issued, created=False)


@bp.route("/clients/<client_id>/delete", methods=["GET", "POST"])
def delete_client(client_id: str) -> BaseResponse | str:
    client = lifecycle.get_client(_state(), client_id)
    if request.method == "GET":
        return render_template("console/delete.html", client=client)
    with _committed():
        lifecycle.delete_client(_state(), client_id, actor=_actor())
    flash(f"Client “{client.name or client_id}” deleted.", "success")
    return redirect(url_for("console.list_clients"))


@bp.get("/clients/<client_id>/events")
def client_events(client_id: str) -> str:
    state = _state()
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise ClientNotFound(f"No client {client_id!r}.")
    client = state.server.query_client(client_id)
    cursor = request.args.get("cursor") or None
    try:
        page = audit.list_events(state, limit=PAGE_SIZE, cursor=cursor, client_id=client_id)
    except InvalidClientData:
        page = audit.list_events(state, limit=PAGE_SIZE, client_id=client_id)
    if client is None and not page.items:
        raise ClientNotFound(f"No client {client_id!r}.")
    return render_template("console/events.html", client=client, client_id=client_id, page=page)
