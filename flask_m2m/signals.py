"""Blinker signals, so that apps can forward flask-m2m events to their own logs.

Every signal is sent with the app as sender and keyword arguments; none ever carries a secret.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A client was created. Keyword arguments: ``client_id``, ``name``.
client_created = _signals.signal("m2m.client-created")
#: A client was changed. Keyword arguments: ``client_id``, ``changes`` (field names).
client_updated = _signals.signal("m2m.client-updated")
#: A client was deleted. Keyword arguments: ``client_id``.
client_deleted = _signals.signal("m2m.client-deleted")
#: A client's secret was replaced. Keyword arguments: ``client_id``, ``grace_period_seconds``.
secret_rotated = _signals.signal("m2m.secret-rotated")
#: An access token was issued. Keyword arguments: ``client_id``, ``scope``.
token_issued = _signals.signal("m2m.token-issued")
#: An access token was revoked. Keyword arguments: ``client_id``, ``jti``.
token_revoked = _signals.signal("m2m.token-revoked")
#: A client failed to authenticate. Keyword arguments: ``client_id`` (as sent), ``reason``.
authentication_failed = _signals.signal("m2m.authentication-failed")
#: A secret in its grace period or close to expiry was used, so a caller still holds an old
#: secret. Keyword arguments: ``client_id``, ``secret_id``, ``reason`` (``grace_period`` or
#: ``near_expiry``). Sent at most once per ``M2M_LAST_USED_INTERVAL_SECONDS`` per secret.
outdated_secret_used = _signals.signal("m2m.outdated-secret-used")
#: A client went over its token-endpoint limit. Keyword arguments: ``client_id``, ``limit``
#: (the limit string), ``enforced`` (False in log-only mode: the request was served).
rate_limit_exceeded = _signals.signal("m2m.rate-limit-exceeded")
#: A new signing key was added. Keyword arguments: ``kid``.
keys_rotated = _signals.signal("m2m.keys-rotated")
