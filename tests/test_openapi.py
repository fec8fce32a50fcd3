"""The OpenAPI 3.1 document: it validates, and the example app honours it under schemathesis."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from helpers.apps import DATABASE_URL, SECRET_KEY, close_app, fetch_token, register
from helpers.http import bearer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from example import create_app

#: Examples per operation: enough to reach every documented status, bounded in time. The run
#: is derandomized (the same examples every time); raise it for a deeper, random search.
MAX_EXAMPLES = int(os.environ.get("M2M_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture
def example_app(tmp_path: Path) -> Any:
    """The example app on its own database, with an admin client's Bearer header."""
    url = DATABASE_URL if DATABASE_URL != "sqlite://" else f"sqlite:///{tmp_path / 'ex.db'}"
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SECRET_KEY": SECRET_KEY,
            "M2M_ISSUER": "https://issuer.test",
            "TESTING": True,
            # One admin sends every example: a whole run must fit in its management quota.
            "M2M_MANAGEMENT_RATE_LIMIT": "100000/minute",
        }
    )
    admin = register(app, "m2m:admin read write")
    yield app, bearer(fetch_token(app.test_client(), admin))
    from example import db

    close_app(app, db, drop_tables=True)


def test_document_validates(app: Flask) -> None:
    """OpenAPI 3.1: the served document passes openapi-spec-validator and names every route."""
    document = app.test_client().get("/m2m/openapi.json").get_json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    paths = set(document["paths"])
    assert {
        "/m2m/clients",
        "/m2m/clients/{client_id}",
        "/m2m/clients/{client_id}/secret",
        "/m2m/clients/{client_id}/secrets",
        "/m2m/clients/{client_id}/secrets/{secret_id}",
        "/m2m/clients/{client_id}/events",
        "/m2m/events",
        "/m2m/token",
        "/m2m/revoke",
        "/m2m/introspect",
        "/m2m/jwks.json",
        "/.well-known/oauth-authorization-server",
    } <= paths
    assert "client_secret" not in document["components"]["schemas"]["Client"]["properties"]


def test_management_bodies_are_required_json(app: Flask) -> None:
    """Every management POST, PUT and PATCH takes a required application/json body, as the
    server demands (415 otherwise), the secret rotation included."""
    document = app.test_client().get("/m2m/openapi.json").get_json()
    bodies = {
        (method, path): operation["requestBody"]
        for path, item in document["paths"].items()
        if path.startswith("/m2m/clients")
        for method, operation in item.items()
        if method in ("post", "put", "patch")
    }
    assert ("post", "/m2m/clients/{client_id}/secret") in bodies and len(bodies) == 4
    for body in bodies.values():
        assert body["required"] is True and list(body["content"]) == ["application/json"]


def test_document_follows_prefix(app_factory: Any) -> None:
    """The document uses the configured ``M2M_URL_PREFIX`` and drops management when it is off."""
    app = app_factory(M2M_URL_PREFIX="/auth", M2M_MANAGEMENT_ENABLED=True)
    paths = set(app.test_client().get("/auth/openapi.json").get_json()["paths"])
    assert "/auth/clients" in paths and "/auth/token" in paths


def test_document_and_blueprint_share_one_route_table(app: Flask) -> None:
    """Every management route the app serves (but the document itself) is in the document
    with the same methods, and the document lists no management route the app lacks."""
    document = app.test_client().get("/m2m/openapi.json").get_json()
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("m2m_management.") and rule.rule != "/m2m/openapi.json":
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served.setdefault(path, set()).update(
                m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            )
    documented: dict[str, set[str]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters" and operation.get("security") == [{"bearerAuth": []}]:
                documented.setdefault(path, set()).add(method)
    assert served == documented
    assert len(served) == 7


#: Checks of the responses to data that does not fit the document. Not
#: ``negative_data_rejection``: the admin's Authorization header, sent with every example,
#: makes some of schemathesis' "invalid" requests (no Authorization) valid ones.
NEGATIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error(example_app: Any, mode: GenerationMode) -> None:
    """Every operation of the document, fed generated data by schemathesis with an admin token,
    answers without a 5xx and with responses that match the document: data that fits the
    document (positive) and data that does not (negative: wrong types, missing or unknown
    fields, out-of-range values), which must get a documented 4xx."""
    app, headers = example_app
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schemathesis' own deprecation notices
        schema = schemathesis.openapi.from_wsgi("/m2m/openapi.json", app)
    failures: list[str] = []
    examples: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        inputs = (operation.path_parameters, operation.query, operation.body)
        if mode is GenerationMode.NEGATIVE and not any(len(i) for i in inputs):
            continue  # nothing to get wrong (the JWKS and the metadata document)
        examples[operation.label] = 0

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=MAX_EXAMPLES == 25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            examples[case.operation.label] += 1
            if mode is GenerationMode.NEGATIVE:
                case.call_and_validate(headers=headers, checks=NEGATIVE_CHECKS)
            else:
                # Cursors are opaque: a schema-valid string need not be one this server made.
                case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                check()
            except Unsatisfiable:
                failures.append(f"{operation.label}: no {mode} example could be made")
            except Exception as exc:  # schemathesis' report; go on with the other operations
                failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(examples) >= 14 and all(examples.values()), examples
