"""A background job that calls the example API with a client-credentials token.

    M2M_CLIENT_ID=... M2M_CLIENT_SECRET=... python -m example.worker --count 3 --interval 1
    M2M_CLIENT_ID=... M2M_CLIENT_SECRET=... python -m example.worker --resource http://127.0.0.1:5001
    M2M_CLIENT_ID=... python -m example.worker --private-key worker.pem    # private_key_jwt

It discovers the token endpoint from the issuer's RFC 8414 metadata (``M2M_ISSUER``, default
http://127.0.0.1:5000), then posts an item and lists the items ``--count`` times, reusing one
token (renewed only near its expiry or after a 401). With ``--resource URI`` it asks a token
for that audience (RFC 8707) and reads the example inventory service there instead
(``GET /inventory/whoami`` and ``/inventory/items``). Exit status: 0 done, 1 refused or
unreachable, 2 usage. Needs ``pip install 'flask-m2m[client]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from flask_m2m.client import ClientCredentials, ClientCredentialsAuth, TokenError

DEFAULT_ISSUER = "http://127.0.0.1:5000"


class Refused(Exception):
    """The API answered a call with an error status."""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m example.worker",
        description="Post and list items on the example API as a machine client. Reads "
        "M2M_CLIENT_ID, M2M_CLIENT_SECRET (unless --private-key) and M2M_ISSUER from the "
        "environment.",
    )
    parser.add_argument("--count", type=int, default=3, help="rounds to run (default 3)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--scope", default=None, help="scopes to ask for (default: all)")
    parser.add_argument(
        "--resource",
        default=None,
        metavar="URI",
        help="ask a token for this audience (RFC 8707) and read the inventory service there",
    )
    parser.add_argument(
        "--api", default=None, help="API base URL (default: the resource, else the issuer)"
    )
    parser.add_argument(
        "--private-key",
        default=None,
        metavar="PATH",
        help="authenticate with this PEM private key (private_key_jwt) instead of a secret",
    )
    parser.add_argument(
        "--dpop", action="store_true",
        help="DPoP-bound tokens (RFC 9449): a key made for this run proves every call",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.interval < 0:
        parser.error("--count must be at least 1 and --interval not negative")
    return args


def _check(response: Any) -> Any:
    """The JSON body of a successful response, or :class:`Refused`."""
    if response.status_code >= 400:
        reason = response.headers.get("WWW-Authenticate") or response.text[:200]
        raise Refused(
            f"{response.request.method} {response.url.path}: HTTP {response.status_code} {reason}"
        )
    return response.json()


def _read_inventory(http: Any, n: int, count: int) -> None:
    """One round against the inventory service: who the token says we are, and the items."""
    me = _check(http.get("/inventory/whoami"))
    print(f"[{n}/{count}] inventory sees {me['client_id']} with aud {me['aud']}", flush=True)
    items = _check(http.get("/inventory/items"))["items"]
    print(f"[{n}/{count}] {len(items)} items in the inventory", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns the exit status."""
    args = _parse(argv)
    client_id = os.environ.get("M2M_CLIENT_ID", "")
    client_secret = os.environ.get("M2M_CLIENT_SECRET", "")
    if not client_id or not (client_secret or args.private_key):
        print(
            "worker: set M2M_CLIENT_ID and M2M_CLIENT_SECRET, or give --private-key "
            "(python3 dev.py example prints a demo client's).",
            file=sys.stderr,
        )
        return 2
    credential: dict[str, Any] = (
        {"private_key": args.private_key} if args.private_key else {"client_secret": client_secret}
    )
    try:
        import httpx
    except ImportError:
        print("worker: needs httpx: pip install 'flask-m2m[client]'", file=sys.stderr)
        return 2

    issuer = os.environ.get("M2M_ISSUER", DEFAULT_ISSUER).rstrip("/")
    try:
        credentials = ClientCredentials(
            issuer=issuer,
            client_id=client_id,
            scope=args.scope,
            resource=args.resource,
            dpop=args.dpop,
            **credential,
        )
    except (OSError, ValueError) as exc:
        print(f"worker: cannot use the private key: {exc}", file=sys.stderr)
        return 2
    auth = ClientCredentialsAuth(credentials)
    api = args.api or args.resource or issuer
    bound = f", DPoP key {credentials.dpop.jkt}" if credentials.dpop else ""
    print(f"worker: client {client_id} at issuer {issuer}{bound}", flush=True)
    try:
        with httpx.Client(base_url=api, auth=auth, timeout=10) as http:
            for n in range(1, args.count + 1):
                if args.resource:
                    _read_inventory(http, n, args.count)
                    if n < args.count:
                        time.sleep(args.interval)
                    continue
                item = _check(http.post("/api/items", json={"name": f"job {n}/{args.count}"}))
                print(f"[{n}/{args.count}] created item {item['id']}: {item['name']}", flush=True)
                items = _check(http.get("/api/items"))["items"]
                print(f"[{n}/{args.count}] {len(items)} items on the server", flush=True)
                if n < args.count:
                    time.sleep(args.interval)
    except TokenError as exc:
        where = credentials.token_endpoint or issuer
        print(f"worker: authentication failed at {where}: {exc}", file=sys.stderr)
        return 1
    except Refused as exc:
        print(f"worker: the API refused the call: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"worker: cannot reach {api}: {exc}", file=sys.stderr)
        return 1
    print(
        f"worker: done: {2 * args.count} API calls, {credentials.fetch_count} token "
        f"request(s), {auth.retry_count} retried after a 401 "
        f"(token endpoint {credentials.token_endpoint})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
