"""HTTP for the tests: ``Authorization`` headers, and an app served over real HTTP."""

from __future__ import annotations

import base64
import threading
from urllib.parse import quote_plus

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """An RFC 6749 §2.3.1 ``Authorization: Basic`` header (form-encoded id and secret)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """An app served over real HTTP on 127.0.0.1 in a thread, for real HTTP clients."""

    def __init__(self, app: Flask):
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
