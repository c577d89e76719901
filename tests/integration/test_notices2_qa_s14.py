"""Notices QA (session 14): template values pasted with invisible characters, why a fan-out is waiting, the
template a notice goes out with, and progress that adds up while the audience is still being written."""

from __future__ import annotations

import pytest

from wxapp_backend.notices import broadcast, credits
from wxapp_backend.notices.broadcast_models import Notice, OutboxRow
from wxapp_backend.notices.kinds import get_kind

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


def _create(client, headers, **kw):
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    body.update(kw)
    return client.post("/api/v1/staff/notices", json=body, headers=headers)


def _with_credit(make_user, n=1):
    from wxapp_backend.db import session_scope

    users = [make_user() for _ in range(n)]
    with session_scope() as s:
        for u in users:
            credits.add_credit(s, u.id, get_kind("notice").template_id)
    return users


# --- 1. template values pasted with invisible characters ------------------------------------------------------

def test_template_values_are_cleaned_of_invisible_characters_before_they_go_out(app_ctx, client, make_user, staff_h,
                                                                                run_jobs, standin, fast):
    """A value pasted from a web page or a chat kept its zero-width space, NUL and line break: it passed the length
    check and went to every subscriber as typed (WeChat refuses control characters with 47003)."""
    _with_credit(make_user)
    resp = _create(client, staff_h, template_fields={"thing1": " 稳岗补贴\u200b开始申报\x00 ",
                                                     "time2": "2025-03-01\n09:00", "thing3": "请于本周五前\r\n提交"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["template_fields"] == {"thing1": "稳岗补贴开始申报", "time2": "2025-03-01 09:00",
                                                  "thing3": "请于本周五前 提交"}
    client.post(f"/api/v1/staff/notices/{resp.get_json()['id']}/publish", json={}, headers=staff_h)
    run_jobs()
    data = standin.calls_to(SUBSCRIBE)[0].body["data"]
    assert data["thing1"]["value"] == "稳岗补贴开始申报" and data["time2"]["value"] == "2025-03-01 09:00"


def test_a_template_value_of_invisible_characters_only_is_refused(app_ctx, client, make_user, staff_h):
    make_user()
    resp = _create(client, staff_h, template_fields={"thing1": "\u200b\u200b", "time2": "2025-03-01 09:00"})
    assert resp.status_code == 422 and "template_fields.thing1" in resp.get_json()["fields"]


# --- 2. why a fan-out waits -------------------------------------------------------------------------------------

def test_progress_says_why_rows_wait_after_45009_and_a_busy_wechat(published_notice, app_ctx, client, run_jobs,
                                                                    standin, make_staff, console_login, db):
    """After WeChat's daily quota ran out (45009) every row waited 'pending' until the cool-down ended, and the
    progress view showed only “等待发送” with 失败原因 “无”: nothing said why or that it would carry on by itself."""
    from wxapp_backend.db import session_scope

    nid = published_notice(3)
    standin.fail_next(SUBSCRIBE, 45009)
    run_jobs()
    with session_scope() as s:
        p = broadcast.progress(s, nid)
    assert p["subscribe"]["pending"] == 3 and p["failures"] == []
    assert p["waiting"] == [{"errcode": 45009, "detail": broadcast.QUOTA_WAIT_DETAIL, "count": 3}]
    assert sum(p["subscribe"].values()) == p["subscribe_total"] == 3
    console_login(make_staff(role="dept"))
    page = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert "等待原因" in page and broadcast.QUOTA_WAIT_DETAIL in page
    assert client.get(f"/console/notices/{nid}/progress.json").get_json()["waiting"][0]["count"] == 3


def test_progress_lists_rows_waiting_for_a_retry_after_minus_1(published_notice, app, app_ctx, run_jobs, standin,
                                                               monkeypatch):
    from wxapp_backend.db import session_scope

    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "fanout_backoff_override", 3600)
    nid = published_notice(2)
    standin.fail_next(SUBSCRIBE, -1)
    run_jobs()
    with session_scope() as s:
        p = broadcast.progress(s, nid)
    assert p["subscribe"]["sent"] == 1 and p["subscribe"]["pending"] == 1
    assert [(w["errcode"], w["count"]) for w in p["waiting"]] == [(-1, 1)] and "稍后重试" in p["waiting"][0]["detail"]
