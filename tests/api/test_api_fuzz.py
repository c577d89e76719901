"""Property-based run of every /api/v1 operation from its own OpenAPI description (schemathesis + hypothesis).

For each operation, requests are generated from the schema (valid inputs) and deliberately broken (wrong
types, missing or extra fields, out-of-range values, odd strings), and sent to the app in process as a
mini-program user (or, under /api/v1/staff/, as an admin). The answer must never be a server error, and an
error answer must be the JSON {"error", "message", "fields"} with a Chinese message.
"""

from __future__ import annotations

import os
import re

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
_HAN = re.compile(r"[\u4e00-\u9fff]")


def _run_operation(op, mode: GenerationMode, headers: dict[str, str], problems: list[str]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        resp = case.call(headers=headers)
        where = f"{case.method} {case.formatted_path} {mode.value}"
        if resp.status_code >= 500:
            problems.append(f"{where}: {resp.status_code} for query={case.query!r} body={case.body!r}")
            return
        if resp.status_code >= 400 and "json" in resp.headers.get("Content-Type", ""):
            data = resp.json()
            if not (isinstance(data, dict) and {"error", "message", "fields"} <= set(data)
                    and _HAN.search(str(data["message"]))):
                problems.append(f"{where}: {resp.status_code} error body not in the documented shape: {data!r}")

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # An operation without parameters or body has no invalid input to make.


def test_no_operation_answers_with_a_server_error(app, make_user, make_staff, user_token, staff_headers):
    user = user_token(make_user(openid="fuzz-user"))
    staff = staff_headers(make_staff(role="admin"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    problems: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        headers = staff if op.path.startswith("/api/v1/staff/") else user
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(op, mode, headers, problems)
    assert operations >= 50  # the whole API was walked
    assert not problems, "\n".join(problems[:40])
