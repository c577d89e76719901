"""Leftovers of pass 16 (left10): the staff 催办 once a day, the same photo twice in one submission, and a retried
subscribe-message report."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (the appeals fixture)
from tests.integration.test_photos3_qa_s16 import BASE, b64, jpeg, png
from wxapp_backend.appeals import services
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.errors import Conflict

MONDAY = at(2025, 11, 3, 10, 0)


def _assigned(world, now=MONDAY):
    appeal_id = world.submit(now)
    world.act(appeal_id, "accept", now=now)
    world.act(appeal_id, "assign", now=now, department="税务所")
    return appeal_id


# --- 1. the staff 催办 without a version: once a Shanghai day ----------------------------------------------


def test_a_staff_urge_without_a_version_is_once_a_day(w):  # noqa: F811
    """A script or a retry pressed 催办 twice (no `version`) and the department was alerted twice."""
    appeal_id = _assigned(w)
    w.act(appeal_id, "urge", now=MONDAY + timedelta(hours=1), note="企业很着急")
    with pytest.raises(Conflict) as exc:
        w.act(appeal_id, "urge", now=MONDAY + timedelta(hours=2))
    assert exc.value.code == "already_urged"
    assert "今天 11:00" in exc.value.message and "管理员" in exc.value.message
    assert len(w.events(appeal_id, "urged")) == 1
    assert w.appeal(appeal_id).urge_count == 1
    # The next Shanghai day (00:30 local) it may be pressed again.
    w.act(appeal_id, "urge", now=at(2025, 11, 4, 0, 30))
    assert len(w.events(appeal_id, "urged")) == 2


def test_a_staff_urge_through_the_api_twice_is_a_409_in_chinese(w, client, staff_headers):  # noqa: F811
    now = utcnow()
    appeal_id = _assigned(w, now)
    url = f"/api/v1/staff/appeals/{appeal_id}/actions"
    first = client.post(url, headers=staff_headers(w.admin), json={"action": "urge", "note": "请尽快"})
    assert first.status_code == 200, first.get_json()
    again = client.post(url, headers=staff_headers(w.admin), json={"action": "urge", "note": "请尽快"})
    assert again.status_code == 409, again.get_json()
    body = again.get_json()
    assert body["error"] == "already_urged" and "今天" in body["message"] and "催办过" in body["message"]
    assert len(w.events(appeal_id, "urged")) == 1
    # A person on a fresh page (its version) who sees today's 催办 and presses again is asking again.
    fresh = client.post(
        url, headers=staff_headers(w.admin), json={"action": "urge", "version": w.appeal(appeal_id).version}
    )
    assert fresh.status_code == 200 and len(w.events(appeal_id, "urged")) == 2


def test_the_systems_urge_does_not_block_the_staffs(w):  # noqa: F811
    appeal_id = _assigned(w)
    with session_scope() as s:
        appeal = s.get(services.Appeal, appeal_id)
        services._event(
            s, appeal, services.SYSTEM, "urged", at=MONDAY + timedelta(minutes=5), note="系统催办"
        )
    w.act(appeal_id, "urge", now=MONDAY + timedelta(hours=1))
    assert len(w.events(appeal_id, "urged")) == 2


# --- 2. the same photo twice in one submission ---------------------------------------------------------------


def _stored_files(app) -> set[str]:
    from wxapp_backend.appeals import intake

    with app.app_context():
        return {p.name for p in intake.upload_dir(app.instance_path).iterdir()}


def test_the_same_photo_twice_is_stored_once(client, make_user, user_token, app):
    h = user_token(make_user())
    before = _stored_files(app)
    photo, other = b64(jpeg()), b64(png())
    resp = client.post("/api/v1/appeals", json={**BASE, "images": [photo, other, photo]}, headers=h)
    assert resp.status_code == 201, resp.get_json()
    assert len(resp.get_json()["images"]) == 2
    assert len(_stored_files(app) - before) == 2


def test_a_duplicate_does_not_count_against_the_nine(client, make_user, user_token):
    h = user_token(make_user())
    nine = [b64(png(width=10 + i)) for i in range(9)]
    resp = client.post("/api/v1/appeals", json={**BASE, "images": [*nine, nine[0]]}, headers=h)
    assert resp.status_code == 201, resp.get_json()
    assert len(resp.get_json()["images"]) == 9
    # Ten different ones are still too many.
    ten = [*nine, b64(png(width=99))]
    resp = client.post(
        "/api/v1/appeals",
        json={**BASE, "content": "另一件事：门口的路灯坏了好几天", "images": ten},
        headers=h,
    )
    assert resp.status_code == 422 and "最多 9 张" in resp.get_json()["message"]


# --- 3. a retried subscribe-message report ---------------------------------------------------------------------

APPEAL_TEMPLATE = "PLACEHOLDER-appeal-progress"
RESULTS_URL = "/api/v1/me/subscribe-results"


def _credits(body) -> int:
    return next(t for t in body["templates"] if t["template_id"] == APPEAL_TEMPLATE)["credits"]


def test_a_retried_report_with_the_same_key_adds_nothing(client, make_user, user_token):
    h = {**user_token(make_user()), "Idempotency-Key": "tap-1"}
    first = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=h)
    assert first.status_code == 200 and _credits(first.get_json()) == 1
    again = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=h)
    assert again.status_code == 200, again.get_json()
    assert _credits(again.get_json()) == 1 and again.get_json()["results"] == {APPEAL_TEMPLATE: "added"}
    # Another tap (another key) counts; the same key with another result is refused.
    other = client.post(
        RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers={**h, "Idempotency-Key": "tap-2"}
    )
    assert _credits(other.get_json()) == 2
    reused = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "reject"}}, headers=h)
    assert reused.status_code == 409 and reused.get_json()["error"] == "idempotency_key_reused"
    assert "换" in reused.get_json()["message"]
    bad = client.post(
        RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers={**h, "Idempotency-Key": "不对"}
    )
    assert bad.status_code == 400


def test_without_a_key_every_report_counts_and_keys_are_per_user(client, make_user, user_token):
    h = user_token(make_user())
    for _ in range(2):
        body = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=h).get_json()
    assert _credits(body) == 2
    other = {**user_token(make_user(nickname="别人")), "Idempotency-Key": "tap-1"}
    client.post(
        RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers={**h, "Idempotency-Key": "tap-1"}
    )
    body = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=other).get_json()
    assert _credits(body) == 1


def test_the_key_is_in_the_openapi_document(client):
    op = client.get("/api/v1/openapi.json").get_json()["paths"]["/api/v1/me/subscribe-results"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in op.get("parameters", []))
    assert "Idempotency-Key" in op["summary"] + op.get("description", "")


def test_a_keyed_report_that_failed_is_applied_on_its_retry(client, make_user, user_token, monkeypatch):
    from wxapp_backend.notices import credits

    h = {**user_token(make_user()), "Idempotency-Key": "tap-9"}
    real = credits.record_results

    def fails(*a, **kw):
        real(*a, **kw)
        raise RuntimeError("database went away")

    monkeypatch.setattr(credits, "record_results", fails)
    resp = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=h)
    assert resp.status_code == 500  # nothing recorded (the transaction rolled back)
    monkeypatch.setattr(credits, "record_results", real)
    body = client.post(RESULTS_URL, json={"results": {APPEAL_TEMPLATE: "accept"}}, headers=h).get_json()
    assert body["results"] == {APPEAL_TEMPLATE: "added"} and _credits(body) == 1
