"""Notices and activities QA (session 15, notify8): a notice drafted while its template was switched off, and an
activity's audience narrowed after people registered (what the registrant reads, who the waitlist moves up)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wxapp_backend.notices import credits
from wxapp_backend.notices.broadcast_models import Notice

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def staff_h(make_staff, staff_headers):
    return staff_headers(make_staff(role="staff"))


@pytest.fixture
def fast(app, monkeypatch):
    extra = app.extensions["wxapp"].settings.extra
    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(extra, k, v)
    return extra


def _templates(monkeypatch, template_id: str) -> None:
    """NOTIFY_TEMPLATES as if the file now named `template_id` for notices ("" switches them off)."""
    from wxapp_backend.notices import kinds

    configured = {**kinds.DEFAULT_KINDS, "notice": replace(kinds.DEFAULT_KINDS["notice"], template_id=template_id)}
    monkeypatch.setattr(kinds, "current_kinds", lambda: configured)


# --- 1. a notice drafted while its template was switched off ------------------------------------------------

def test_a_draft_written_while_notices_were_switched_off_goes_out_with_the_template_configured_since(
        app_ctx, client, make_user, staff_h, db, run_jobs, standin, fast, monkeypatch):
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
        app_ctx, client, make_user, staff_h, db, run_jobs, standin, fast, monkeypatch):
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
