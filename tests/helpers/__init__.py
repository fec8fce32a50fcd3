"""Code the test modules share: apps and clients (``apps``), HTTP headers and a live server
(``http``), real gunicorn servers (``servers``), the example console (``console``) and the
signing-key pool (``keys``). ``pyproject.toml`` puts ``tests/`` on the import path, so test
modules import them as ``helpers.<module>``."""

from __future__ import annotations
