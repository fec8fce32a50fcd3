#!/usr/bin/env python3
"""The two commands a new user needs, on a machine with only Python 3.11+:

    python3 dev.py example   # run the example app (installs what it needs into .venv)
    python3 dev.py test      # run the test suite, lint and type checks, build the docs (via tox)

Extra arguments after ``test`` go to tox (e.g. ``python3 dev.py test -e py -- -k jwt``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, env=env)


def ensure_venv(*requirements: str) -> None:
    """Create ``.venv`` and install ``requirements`` once (again only when they change)."""
    if sys.version_info < (3, 11):  # noqa: UP036 (the script may run on an older Python)
        sys.exit("flask-m2m needs Python 3.11 or newer.")
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = " ".join(requirements) + (ROOT / "pyproject.toml").read_text()
    stamp = VENV / f".installed-{hashlib.sha256(wanted.encode()).hexdigest()[:16]}"
    if not stamp.exists():
        print(f"Installing {' '.join(requirements)} into .venv ...", flush=True)
        _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        _run(BIN / "python", "-m", "pip", "install", "--quiet", *requirements)
        stamp.touch()


def example(args: list[str]) -> None:
    """Create (or re-key) the demo client, print how to get a token, and serve the example."""
    ensure_venv("-e", ".[example,client]")
    flask = [BIN / "flask", "--app", "example"]
    _run(*flask, "demo")
    os.execv(str(BIN / "flask"), [str(BIN / "flask"), "--app", "example", "run", *args])


def test(args: list[str]) -> None:
    """Run tox: by default the test suite on this Python, lint and type checks, then the docs."""
    ensure_venv("tox>=4")
    tox_args = args or ["-e", "py,lint,type,docs"]
    os.execv(str(BIN / "tox"), [str(BIN / "tox"), *tox_args])


COMMANDS = {"example": example, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])
