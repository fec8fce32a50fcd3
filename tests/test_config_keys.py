"""The configuration keys are declared once (``flask_m2m.config.Settings``) and the README's
configuration tables name exactly those keys, with their defaults."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from flask import Flask

from flask_m2m.config import DEFAULTS, KEYS, Key, Settings, load_settings
from flask_m2m.errors import ConfigurationError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_defaults() -> dict[str, str]:
    """``{key: default cell}`` of every ``M2M_*`` row of the tables under "## Configuration"
    (each table's header says which column holds the default)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    header: list[str] | None = None
    for line in section.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        key = cells[0].strip("`")
        if set(cells[0]) <= set("-: ") or not key.startswith("M2M_"):
            continue
        assert key not in found, f"{key} is in the README twice"
        found[key] = cells[header.index("Default")]
    return found


def test_readme_names_every_key_and_no_other() -> None:
    """Every declared key has a README row, and every ``M2M_*`` row is a declared key."""
    documented = set(readme_defaults())
    declared = {key.name for key in KEYS}
    assert declared - documented == set(), "declared but not in the README"
    assert documented - declared == set(), "in the README but not declared"


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_readme_default_is_the_declared_one(key: Key) -> None:
    """The README's default of each key is the declared default."""
    assert readme_defaults().get(key.name) == key.documented_default


def test_declaration_feeds_defaults_settings_and_options() -> None:
    """One declaration per ``Settings`` field: its key in ``DEFAULTS``, its option in the
    constructor; a key the declaration lacks is refused as an option."""
    assert [f"M2M_{item.name.upper()}" for item in fields(Settings)] == list(DEFAULTS)
    assert all(key.doc and key.doc.strip() == key.doc for key in KEYS)
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "Yq3-Lf8vTz1Nw6Pb0Rk5Hc2Xm9Gd4Sj7"
    settings = load_settings(app, {"issuer": "https://option.test/", "leeway": "7"})
    assert settings.issuer == "https://option.test"
    assert settings.leeway == 7
    assert settings.token_rate_limit == DEFAULTS["M2M_TOKEN_RATE_LIMIT"]
    with pytest.raises(ConfigurationError, match="not_a_key"):
        load_settings(app, {"not_a_key": 1})


@pytest.mark.parametrize("value", ["often", "1/2 years", "", 5])
def test_rate_limit_keys_follow_the_client_rule(value: object) -> None:
    """A configured limit follows the rule a client's ``rate_limit`` follows: a limit string
    with windows of a year at most."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "Yq3-Lf8vTz1Nw6Pb0Rk5Hc2Xm9Gd4Sj7"
    with pytest.raises(ConfigurationError, match="M2M_FAILED_AUTH_RATE_LIMIT"):
        load_settings(app, {"failed_auth_rate_limit": value})


@pytest.mark.parametrize(("option", "key"), [("signing_keys", "M2M_SIGNING_KEYS"),
                                             ("audience_lifetimes", "M2M_AUDIENCE_LIFETIMES")])
def test_json_keys_refuse_invalid_json(option: str, key: str) -> None:
    """A JSON-valued key given as a string (as from the environment) must parse."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "Yq3-Lf8vTz1Nw6Pb0Rk5Hc2Xm9Gd4Sj7"
    with pytest.raises(ConfigurationError, match=f"{key} is not valid JSON"):
        load_settings(app, {option: "{"})
