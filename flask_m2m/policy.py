"""The protocol's rules that several layers check: scope syntax, client authentication methods."""

from __future__ import annotations

import re

#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
#: The client authentication methods of the token, revocation and introspection endpoints.
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
