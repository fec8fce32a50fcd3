"""The packaging metadata: the dependency floors that ``tox -e min`` tests are the ones
``pyproject.toml`` declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
#: The extras whose dependencies run in a deployment (``test`` and ``bench`` are tooling).
RUNTIME_EXTRAS = ("client", "metrics", "migrations", "example")


def _floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    floors = {}
    for line in requirements:
        requirement = Requirement(line)
        lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{line}: give exactly one lower bound"
        floors[_name(requirement.name)] = lows[0]
    return floors


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_min_versions_match_the_floors() -> None:
    """Every runtime dependency is pinned at its floor in tests/min-versions.txt, and nothing
    else is, so ``tox -e min`` tests exactly what a resolver may pick at the bottom."""
    pinned = {}
    for line in (ROOT / "tests" / "min-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[_name(name)] = Version(version)
    assert pinned == _floors()


def test_floors_are_not_below_published_fixes() -> None:
    """The floors stay at or above the first releases free of the advisories the changelog
    names (a floor may rise, never fall below these)."""
    fixed = {
        "authlib": "1.7.1",
        "joserfc": "1.7.5",
        "cryptography": "50.0.0",
        "werkzeug": "3.1.9",
        "flask": "3.1.3",
        "marshmallow": "3.26.2",
        "requests": "2.33.0",
    }
    floors = _floors()
    assert {name: floors[name] >= Version(v) for name, v in fixed.items()} == dict.fromkeys(
        fixed, True
    )
