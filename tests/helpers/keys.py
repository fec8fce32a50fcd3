"""RSA signing keys for the test apps from a pool, made once per test run.

flask-m2m makes a signing key the first time an app signs or publishes one (RS256 by
default) and on each rotation, and loads it back from its JSON form twice (once to add
``alg`` and ``use``, once from the stored JWE). Making a 2048-bit RSA key, and the check
``cryptography`` runs on each key it loads, take 50 to 150 ms of CPU each: about a third of
the test run when every test app makes and loads its own key.

While the pool is installed (``conftest.py``), ``RSAKey.generate_key`` called inside an app
context lends that app a key of the pool, made the first time no pooled key is free; and
loading a key the pool made returns the key already checked. Everything else (the kid, the
stored JWE, rotation, the JWKS) runs as without the pool.

A key is lent to one app at a time and comes back when that app is torn down (``release``) or
garbage collected: two live apps never hold the same key unless they share a database (and
with it the key row). EC and Ed25519 keys take microseconds to make and load and are not
pooled; nor are keys made outside an app context (the tests make those themselves), nor any
key in a test marked ``real_keys``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from flask import current_app, has_app_context
from joserfc.jwk import RSAKey

#: The members of a private RSA JWK (RFC 7518 §6.3).
_PRIVATE_MEMBERS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")


class KeyPool:
    """RSA private keys, each lent to one app at a time."""

    def __init__(self) -> None:
        #: The real ``RSAKey.generate_key``, which makes every key of the pool.
        self.real_generate_key = RSAKey.generate_key
        #: How joserfc loads a private RSA JWK (``RSAKey.import_key`` calls it for a dict).
        self.real_import_private_key = getattr(RSAKey.binding, "import_private_key", None)
        #: Off for a test marked ``real_keys``: every key is made afresh.
        self.enabled = True
        #: How many keys the pool has made, and how many times it has lent one.
        self.made = self.lent = 0
        self._lock = threading.RLock()  # re-entrant: a collected app may give keys back
        self._free: dict[int, list[RSAPrivateKey]] = {}
        #: modulus ``n`` -> (private JWK members, key) of each key the pool made
        self._made: dict[str, tuple[dict[str, Any], RSAPrivateKey]] = {}
        self._leases: weakref.WeakKeyDictionary[Any, list[weakref.finalize[Any, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def generate_key(
        self,
        key_size: int | None = 2048,
        parameters: Any = None,
        private: bool = True,
        auto_kid: bool = False,
    ) -> RSAKey:
        """Stands in for ``RSAKey.generate_key``: a pooled key for the app in context."""
        if not (self.enabled and private and has_app_context()):
            return self.real_generate_key(key_size, parameters, private, auto_kid)
        owner = current_app._get_current_object()  # type: ignore[attr-defined]
        size = key_size or 2048
        with self._lock:
            free = self._free.setdefault(size, [])
            raw = free.pop() if free else None
        if raw is None:
            made = self.real_generate_key(size)
            raw = made.private_key
            assert isinstance(raw, RSAPrivateKey)
            jwk = made.as_dict(private=True)
            self._made[str(jwk["n"])] = ({m: jwk[m] for m in _PRIVATE_MEMBERS}, raw)
            self.made += 1
        lease = weakref.finalize(owner, self._give_back, size, raw)
        with self._lock:
            self._leases.setdefault(owner, []).append(lease)
            self.lent += 1
        key = RSAKey.import_key(raw, parameters)
        if auto_kid:
            key.ensure_kid()
        return key

    def import_private_key(self, obj: Any) -> Any:
        """Stands in for joserfc's loading of a private RSA JWK: a key the pool made comes
        back as it was made (checked then); any other is loaded and checked as usual."""
        made = self._made.get(str(obj.get("n")))
        if made is not None and all(obj.get(m) == v for m, v in made[0].items()):
            return made[1]
        assert self.real_import_private_key is not None
        return self.real_import_private_key(obj)

    def release(self, app: Any) -> None:
        """Take back every key lent to ``app`` (which will sign nothing more)."""
        with self._lock:
            leases = self._leases.pop(app, [])
        for lease in leases:
            lease()

    def _give_back(self, size: int, raw: RSAPrivateKey) -> None:
        with self._lock:
            self._free[size].append(raw)


#: The pool of the test run.
KEY_POOL = KeyPool()
