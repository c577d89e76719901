"""Notices and activities QA (session 15, notify8): a notice drafted while its template was switched off, and an
activity's audience narrowed after people registered (what the registrant reads, who the waitlist moves up)."""

from __future__ import annotations

from dataclasses import replace

from tests.integration.test_notices2_qa_s14 import SUBSCRIBE, fast, staff_h  # noqa: F401 - shared fixtures
from wxapp_backend.activities.models import Registration
from wxapp_backend.notices import credits
from wxapp_backend.notices.broadcast_models import Notice


def _templates(monkeypatch, template_id: str) -> None:
    """NOTIFY_TEMPLATES as if the file now named `template_id` for notices ("" switches them off)."""
    from wxapp_backend.notices import kinds

    configured = {**kinds.DEFAULT_KINDS, "notice": replace(kinds.DEFAULT_KINDS["notice"], template_id=template_id)}
    monkeypatch.setattr(kinds, "current_kinds", lambda: configured)


# --- 1. a notice drafted while its template was switched off ------------------------------------------------

def test_a_draft_written_while_notices_were_switched_off_goes_out_with_the_template_configured_since(
        app_ctx, client, make_user, staff_h, db, run_jobs, standin, fast, monkeypatch):  # noqa: F811
    """template_id "" when the draft was written: it kept no template values and no template, and once staff
    configured the real one and published, its subscribers (who accepted that template) got the inbox only."""
    from wxapp_backend.db import session_scope

    _templates(monkeypatch, "")
    with_credit, without = make_user(), make_user()
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    resp = client.post("/api/v1/staff/notices", json=body, headers=staff_h)
    assert resp.status_code == 201, resp.get_json()
    nid = resp.get_json()["id"]
    assert db.get(Notice, nid).template_id == "" and not db.get(Notice, nid).template_fields

    _templates(monkeypatch, "REAL-notice-n8")
    with session_scope() as s:
        credits.add_credit(s, with_credit.id, "REAL-notice-n8")
    shown = client.get(f"/api/v1/staff/notices/{nid}", headers=staff_h).get_json()
    assert shown.get("reach", {}).get("subscribe", 1) == 1, shown  # the estimate is the configuration's now too
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    run_jobs()
    db.expire_all()
    notice = db.get(Notice, nid)
    assert notice.template_id == "REAL-notice-n8" and notice.template_fields.get("thing1") == "稳岗补贴开始申报"
    (call,) = standin.calls_to(SUBSCRIBE)
    assert call.body["template_id"] == "REAL-notice-n8" and call.body["touser"] == with_credit.openid
    # The one without credit for it has the notice in the inbox, as every reader does.
    from sqlalchemy import select

    from wxapp_backend.notices.models import InboxItem

    assert db.scalar(select(InboxItem.id).where(InboxItem.user_id == without.id, InboxItem.ref == f"notice:{nid}"))


def test_a_draft_written_with_a_template_goes_without_one_once_notices_are_switched_off(
        app_ctx, client, make_user, staff_h, db, run_jobs, standin, fast, monkeypatch):  # noqa: F811
    """The other way round: configured as "" since, the draft goes to the inbox only (no call WeChat refuses)."""
    from wxapp_backend.db import session_scope

    _templates(monkeypatch, "REAL-notice-n8")
    user = make_user()
    with session_scope() as s:
        credits.add_credit(s, user.id, "REAL-notice-n8")
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    nid = client.post("/api/v1/staff/notices", json=body, headers=staff_h).get_json()["id"]
    _templates(monkeypatch, "")
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    run_jobs()
    db.expire_all()
    assert db.get(Notice, nid).template_id == ""
    assert not standin.calls_to(SUBSCRIBE)


# --- 2. an audience narrowed after people registered ---------------------------------------------------------

def _reg(client, aid, headers):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _narrow(client, aid, building_id, staff_headers, staff):
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"audience_building_ids": [building_id]},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_registrant_left_outside_a_narrowed_audience_reads_that_their_registration_stands(
        client, make_activity, make_building, make_user, user_token, staff, staff_headers):
    """The detail page said “您所在的楼宇不在范围内” beside their 报名成功, as if the registration no longer counted;
    by the design (out_of_audience: kept, staff decide) it stands, and that is what they read."""
    east, west = make_building(), make_building()
    a = make_activity(capacity=5)
    h = user_token(make_user(building_id=west.id))
    _reg(client, a.id, h)
    assert _narrow(client, a.id, east.id, staff_headers, staff)["out_of_audience"] == 1
    detail = client.get(f"/api/v1/activities/{a.id}", headers=h).get_json()
    assert detail["my_registration"]["status"] == "confirmed"
    assert "不在范围内" not in (detail["ineligible_reason"] or ""), detail["ineligible_reason"]
    assert "仍然有效" in detail["my_registration"]["audience_note"], detail["my_registration"]
    # Tapping 报名 again says the same, not a 403 “不在范围内”.
    again = client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {}}, headers=h)
    assert again.status_code == 409 and again.get_json()["error"] == "already_registered", again.get_json()
    assert "仍然有效" in again.get_json()["message"]
    mine = client.get("/api/v1/me/registrations", headers=h).get_json()["items"][0]
    assert "仍然有效" in mine["audience_note"], mine
    # Someone inside the audience reads no such note.
    inside = user_token(make_user(building_id=east.id))
    _reg(client, a.id, inside)
    assert client.get(f"/api/v1/activities/{a.id}", headers=inside).get_json()["my_registration"][
        "audience_note"] is None
    # A newcomer outside it is still refused, with the reason.
    other = client.get(f"/api/v1/activities/{a.id}", headers=user_token(make_user(building_id=west.id))).get_json()
    assert "不在范围内" in other["ineligible_reason"], other


def test_a_waitlisted_registrant_outside_a_narrowed_audience_is_not_moved_up_ahead_of_those_inside(
        client, make_activity, make_building, make_user, user_token, staff, staff_headers, db):
    """A freed seat went to the waitlist's head even when staff had narrowed the audience and the head was no longer
    in it, ahead of someone who was. Those outside keep their place on the list, behind everyone inside."""
    east, west = make_building(), make_building()
    a = make_activity(capacity=1)
    holder = _reg(client, a.id, user_token(make_user(building_id=east.id)))
    out_h = user_token(make_user(building_id=west.id))
    outside = _reg(client, a.id, out_h)
    in_h = user_token(make_user(building_id=east.id))
    inside = _reg(client, a.id, in_h)
    assert outside["status"] == inside["status"] == "waitlisted"
    _narrow(client, a.id, east.id, staff_headers, staff)
    # The places they read are the order the seats will go in.
    assert client.get(f"/api/v1/activities/{a.id}", headers=in_h).get_json()["my_registration"][
        "waitlist_position"] == 1
    out_mine = client.get(f"/api/v1/activities/{a.id}", headers=out_h).get_json()["my_registration"]
    assert out_mine["waitlist_position"] == 2 and out_mine["audience_note"], out_mine
    roster = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(staff)).get_json()
    places = {r["id"]: r["waitlist_position"] for r in roster["items"]}
    assert (places[inside["id"]], places[outside["id"]]) == (1, 2), places

    resp = client.post(f"/api/v1/staff/registrations/{holder['id']}/cancel", json={}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Registration, inside["id"]).status == "confirmed"
    assert db.get(Registration, outside["id"]).status == "waitlisted"  # kept on the list
    # With nobody inside the audience waiting, the next seat is theirs (no seat stays free while someone waits).
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"capacity": 2}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Registration, outside["id"]).status == "confirmed"
