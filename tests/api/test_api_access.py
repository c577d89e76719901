"""Who may call what, for every /api/v1 operation in the OpenAPI description (so a new route cannot forget).

- An operation that declares bearer auth answers 401 without a token and with a forged or expired one.
- Every /api/v1/staff/ operation answers 401 or 403 to a mini-program user's token.
- Every operation that is neither public nor for staff answers 401 or 403 to a staff token.
None of these may reach the operation's own logic: no 2xx, no 404 that would reveal whether a row exists.
"""

from __future__ import annotations

import re


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _operations(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method.upper(), bool(op.get("security"))


def _call(client, method: str, path: str, headers: dict | None = None):
    return client.open(_url(path), method=method, json={} if method in ("POST", "PUT", "PATCH") else None,
                       headers=headers or {})


def test_every_operation_keeps_its_door(client, make_user, make_staff, user_token, staff_headers):
    user = user_token(make_user())
    staff = staff_headers(make_staff(role="admin"))
    forged = {"Authorization": "Bearer not-a-token"}
    problems: list[str] = []
    ops = list(_operations(client))
    assert len(ops) >= 60
    for path, method, needs_auth in ops:
        is_staff = path.startswith("/api/v1/staff/") and path != "/api/v1/staff/login"
        if needs_auth:
            for label, headers in (("no token", None), ("forged token", forged)):
                status = _call(client, method, path, headers).status_code
                if status != 401:
                    problems.append(f"{method} {path} with {label}: {status}, want 401")
        if is_staff:
            status = _call(client, method, path, user).status_code
            if status not in (401, 403):
                problems.append(f"{method} {path} with a user's token: {status}, want 401/403")
        elif needs_auth:
            status = _call(client, method, path, staff).status_code
            if status not in (401, 403):
                problems.append(f"{method} {path} with a staff token: {status}, want 401/403")
    assert not problems, "\n".join(problems)
