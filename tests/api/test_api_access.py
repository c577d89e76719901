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
            # Optional login ([{}, {bearer}]) serves anonymous callers: test_miniapi3_qa_s13 checks those.
            yield path, method.upper(), bool(op.get("security")) and {} not in op["security"]


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


def test_no_user_reaches_another_users_rows(app_ctx, client, make_user, make_staff, user_token, staff_headers):
    """Alice has an appeal, a registration and an inbox item; Bob's token, used on every signed-in user
    operation that takes an id, with Alice's ids filled in, never succeeds and never changes her rows."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.services import notify

    alice, bob = make_user(nickname="Alice"), make_user(nickname="Bob")
    ah, bh = user_token(alice), user_token(bob)
    appeal = client.post("/api/v1/appeals", headers=ah, json={
        "content": "我们楼下的路灯坏了一个星期了，晚上很黑", "contact_name": "Alice", "contact_phone": "13800138000"})
    assert appeal.status_code == 201, appeal.get_json()
    start = datetime.now(UTC) + timedelta(days=2)
    activity = client.post("/api/v1/staff/activities", headers=staff_headers(make_staff(role="staff")), json={
        "category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 5})
    assert activity.status_code == 201, activity.get_json()
    reg = client.post(f"/api/v1/activities/{activity.get_json()['id']}/registrations", headers=ah,
                      json={"answers": {}})
    assert reg.status_code in (200, 201), reg.get_json()
    with session_scope() as s:
        item_id = notify(s, alice.id, "notice", {}, title="给 Alice").inbox_item_id
    ids = {"appeal_id": appeal.get_json()["id"], "registration_id": reg.get_json()["id"], "item_id": item_id,
           "name": "x.jpg"}

    def snapshot() -> tuple:
        return (client.get(f"/api/v1/appeals/{ids['appeal_id']}", headers=ah).get_json(),
                client.get("/api/v1/me/registrations", headers=ah).get_json(),
                client.get("/api/v1/me/inbox", headers=ah).get_json())

    before = snapshot()
    tried = []
    for path, method, needs_auth in _operations(client):
        params = re.findall(r"\{([^}]+)\}", path)
        if not needs_auth or path.startswith("/api/v1/staff/") or not params or not set(params) <= set(ids):
            continue
        url = re.sub(r"\{([^}]+)\}", lambda m: str(ids[m.group(1)]), path)
        body = {"content": "别人的诉求我来补充", "satisfaction": 1, "resolved": True, "reason": "试试看"}
        resp = client.open(url, method=method, headers=bh, json=body if method != "GET" else None)
        tried.append(url)
        assert resp.status_code in (403, 404), (method, url, resp.status_code, resp.get_data(as_text=True)[:200])
    assert len(tried) >= 8  # appeals (detail, escalate, images, rating, supplement, withdraw), registrations, inbox
    assert snapshot() == before
    # The ids are real: the owner gets through the same doors.
    assert client.get(f"/api/v1/appeals/{ids['appeal_id']}", headers=ah).status_code == 200
    assert client.get(f"/api/v1/registrations/{ids['registration_id']}/qr", headers=ah).status_code == 200
    assert client.post(f"/api/v1/me/inbox/{item_id}/read", headers=ah, json={}).status_code == 200
