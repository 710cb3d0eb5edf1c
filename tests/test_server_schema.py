"""Schemathesis against the dock's own OpenAPI schema, over every operation.

A real dock (``create_app`` under uvicorn on loopback, SQLite in a tmp home; see
``server_helpers.LiveServer``) with an admin account, its API token and one published
learnware. Schemathesis generates requests from ``/api/v1/openapi.json`` -- valid ones and
invalid ones (wrong types, missing fields, out-of-range values) -- and checks each response:

* ``not_a_server_error``: never a 5xx, whatever the input;
* ``status_code_conformance``: the status is one the schema documents for the operation;
* ``response_schema_conformance``: the body matches the documented schema for that status.

Each request is sent as the admin, as a plain user or without a token (chosen by a checksum
of the generated request), so the admin routes are exercised past authentication and the
403/401 paths too; ``POST /auth/logout`` gets a throwaway token of its own (it revokes what it
is sent). For
operations on one learnware, every other example is pointed at the published one (except
``DELETE``), so the "it exists" paths are generated too, not only 404s.

Bounded and deterministic: a fixed number of examples per operation, ``derandomize=True``,
no example database, no deadline. Schemathesis also runs its own boundary and negative
examples per operation (about 950 requests in all at 12 examples per operation).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[test]' "
                                   "(schemathesis is in the test extra)")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

from server_helpers import LiveServer  # noqa: E402

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Examples per operation (on top of schemathesis' own boundary examples); the file runs in
#: well under 90 s on one core. A deeper, slower hunt: LEARNDOCK_SCHEMA_EXAMPLES=200.
MAX_EXAMPLES = int(os.environ.get("LEARNDOCK_SCHEMA_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def dock(tmp_path_factory: pytest.TempPathFactory, skops_clf_zip: Path) -> Iterator[dict]:
    with LiveServer(tmp_path_factory.mktemp("schema") / "home", workers=1,
                    search_per_min=60000, search_burst=10000) as srv:
        admin, _ = srv.account(admin=True)
        user, _ = srv.account()
        sub = admin.upload(skops_clf_zip)
        v = admin.wait(sub.learnware_id, timeout=120)
        assert v.state == "published", v.report
        yield {"srv": srv, "learnware_id": sub.learnware_id,
               "callers": [(admin.me().id, admin.create_token("schemathesis").token),
                           (user.me().id, user.create_token("schemathesis").token),
                           (None, None)]}


@pytest.fixture(scope="module")
def api_schema(dock: dict) -> Any:
    srv: LiveServer = dock["srv"]
    return schemathesis.openapi.from_url(f"{srv.api}/openapi.json")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Schemathesis' lazy schemas read and write ``node._nodeid`` (only to name each operation
    in reports); pytest 9.2 keeps the id elsewhere. Give it the attribute it expects."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


def _use_known_ids(case: Any, dock: dict) -> None:
    """Point every other generated learnware id at the published learnware (deterministic:
    chosen by a checksum of the generated id, so the same examples do the same)."""
    params = case.path_parameters or {}
    lid = params.get("learnware_id")
    if (isinstance(lid, str) and case.method.upper() != "DELETE"
            and zlib.crc32(lid.encode()) % 2 == 0):
        params["learnware_id"] = dock["learnware_id"]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_and_never_5xx(case: Any, dock: dict) -> None:
    srv: LiveServer = dock["srv"]
    # The caller: the admin, a plain user or nobody, chosen by a checksum of the generated
    # request (deterministic), so 403 and 401 paths are generated as well as the admin's.
    key = f"{case.method} {case.path} {case.path_parameters} {case.query} {case.body!r}"
    user_id, token = dock["callers"][zlib.crc32(key.encode()) % 3]
    if case.path == "/api/v1/auth/logout" and user_id is not None:  # it revokes what it gets
        token = srv.dock.accounts.create_token(user_id, "logout", kind="api").secret
    _use_known_ids(case, dock)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    case.call_and_validate(base_url=srv.url, headers=headers, checks=CHECKS, timeout=60)
