"""Appeals QA (pass 17): the rating window in working days, and photos stored once.

- the enterprise's window to rate a 办结 was 7 calendar days: an appeal resolved on the last working day before the
  Spring Festival (8-9 days off) lapsed while the enterprise was on holiday, and the tick closed it unrated. It is 7
  working days on the SLA clocks' calendar (holidays and 调休 staff enter included), one function
  (services.rating_window_ends) for rate(), the chat, the tick's auto-close, the console and the API;
- a photo sent twice in the chat, or sent again with a supplement, was stored twice (the upload form kept it once).
"""

from __future__ import annotations

import base64
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from handlers import appeal_followup as followup
from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the chat fixture)
from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from tests.integration.test_photos3_qa_s16 import jpeg, png
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ, local_date
from wxapp_backend.appeals.followup import awaiting_rating
from wxapp_backend.appeals.intake import submit_from_chat, upload_dir
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.errors import Conflict
from wxapp_backend.notices.models import InboxItem

# 2026: 14 February (Saturday) is a 调休 working day, 15-23 February the festival, 28 February (Saturday) 调休 again.
EVE = at(2026, 2, 14, 10, 0)
SEVEN_WORKING_DAYS_LATER = at(2026, 3, 3, 10, 0)  # 24, 25, 26, 27, 28 February, 2 and 3 March


def _resolved(w, now, content="我们公司的增值税发票开不出来，税控盘坏了"):  # noqa: F811
    appeal_id = w.submit(now - timedelta(hours=1), content=content)
    w.act(appeal_id, "accept", now=now - timedelta(minutes=30))
    w.act(appeal_id, "resolve", now=now, resolution="已更换税控盘")
    return appeal_id


def _ends(appeal_id):
    with session_scope() as s:
        return services.rating_window_ends(s.get(Appeal, appeal_id))


def _rate(w, appeal_id, now):  # noqa: F811
    with session_scope() as s:
        return services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=5, now=now)


def _refused(w, appeal_id, now) -> Conflict:  # noqa: F811
    with pytest.raises(Conflict) as info:
        _rate(w, appeal_id, now)
    return info.value


# --- 1. the rating window is 7 working days -----------------------------------------------------------------------

def test_resolved_the_day_before_the_spring_festival_it_can_still_be_rated_after_eight_calendar_days(w):  # noqa: F811
    appeal_id = _resolved(w, EVE)
    assert _ends(appeal_id).astimezone(TZ) == SEVEN_WORKING_DAYS_LATER
    _rate(w, appeal_id, EVE + timedelta(days=8))  # back from the festival: 7 calendar days had lapsed
    assert w.appeal(appeal_id).status == "closed"  # its 已解决 closed it


def test_past_seven_working_days_the_rating_is_refused_saying_working_days(w):  # noqa: F811
    appeal_id = _resolved(w, EVE)
    late = _refused(w, appeal_id, SEVEN_WORKING_DAYS_LATER + timedelta(minutes=1))
    assert late.code == "rating_window_over" and "7 个工作日" in late.message
    assert w.appeal(appeal_id).status == "resolved"


def test_holidays_staff_enter_lengthen_the_window(w):  # noqa: F811
    """chinesecalendar does not know 2027: the festival is only in the staff's table, and the window honours it."""
    with session_scope() as s:
        for day in range(8, 13):  # Monday 8 to Friday 12 February 2027
            services.set_holiday(s, w.actor, date(2027, 2, day), False, "春节")
    resolved = at(2027, 2, 5, 10, 0)  # Friday
    appeal_id = _resolved(w, resolved)
    assert _ends(appeal_id).astimezone(TZ) == at(2027, 2, 23, 10, 0)  # 15-19 and 22, 23 February
    _rate(w, appeal_id, at(2027, 2, 22, 16, 0))


def test_the_auto_close_agrees_with_rate(w, db):  # noqa: F811
    rated = _resolved(w, EVE)
    unrated = _resolved(w, EVE, content="办公楼门口的路灯坏了一个星期，晚上很不安全")
    assert jobs.tick(now=EVE + timedelta(days=8))["closed"] == 0  # the festival is over, the window is not
    assert jobs.tick(now=SEVEN_WORKING_DAYS_LATER)["closed"] == 0
    _rate(w, rated, SEVEN_WORKING_DAYS_LATER)  # its last minute still counts
    after = SEVEN_WORKING_DAYS_LATER + timedelta(minutes=1)
    assert _refused(w, unrated, after).code == "rating_window_over"
    assert jobs.tick(now=after)["closed"] == 1
    assert w.appeal(unrated).status == "closed"
    ((note, data),) = w.events(unrated, "closed")
    assert data.get("rated") is False and "评价期已过" in note
    told = db.scalars(select(InboxItem.body).where(InboxItem.user_id == w.user.id,
                                                   InboxItem.kind == "appeal_closed")).all()
    assert told and all("7 个工作日" in t for t in told)


def test_the_console_the_api_the_chat_and_the_notice_show_the_end_rate_checks(w, db, client, user_token,  # noqa: F811
                                                                               console_login):
    appeal_id = _resolved(w, utcnow())
    # A day off staff enter after the 办结 (the first working day after it) moves the end everywhere at once.
    before = _ends(appeal_id)
    with session_scope() as s:
        cal = services.work_calendar(s)
        day = local_date(utcnow()) + timedelta(days=1)
        while not cal.is_workday(day):
            day += timedelta(days=1)
        services.set_holiday(s, w.actor, day, False, "临时调整")
    ends = _ends(appeal_id)
    assert ends > before
    local = ends.astimezone(TZ)

    detail = client.get(f"/api/v1/appeals/{appeal_id}", headers=user_token(w.user)).get_json()
    assert detail["rating_ends"] == ends.isoformat() and detail["can_rate"] is True
    console_login(w.admin)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert f"{local:%Y-%m-%d %H:%M} 前评价" in page
    with pytest.raises(Conflict) as info:
        w.act(appeal_id, "close", note="电话确认已解决")
    assert f"至 {local.month}月{local.day}日 {local:%H:%M}" in info.value.message and "7 个工作日" in info.value.message
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        assert awaiting_rating(appeal, set(), ends) and not awaiting_rating(appeal, set(), ends + timedelta(seconds=1))
    assert _refused(w, appeal_id, ends + timedelta(seconds=1)).code == "rating_window_over"
    _rate(w, appeal_id, ends)
    notice = db.scalars(select(InboxItem.body).where(InboxItem.user_id == w.user.id,
                                                     InboxItem.kind == "appeal_resolved")).one()
    assert "请在 7 个工作日内" in notice  # sent before the day off was entered: the end it named then
    assert f"{before.astimezone(TZ).month}月{before.astimezone(TZ).day}日" in notice


def test_the_chat_offers_the_rating_eight_calendar_days_on(chat):  # noqa: F811
    appeal_id, number = chat.resolved()
    with session_scope() as s:  # 8 calendar days hold at most 6 working days
        s.get(Appeal, appeal_id).resolved_at = utcnow() - timedelta(days=8)
    reply = chat(f"评价 {number}")
    assert reply != followup.RATING_OVER.format(number=number) and number in reply
    assert "7 个工作日" in followup.RATING_OVER


# --- 2. the same photo is stored once, whichever way it came -------------------------------------------------------

def _files(app) -> set[str]:
    return {p.name for p in upload_dir(app.instance_path).iterdir()}


def test_the_same_photo_sent_twice_in_the_chat_intake_is_stored_once(app_ctx, app, make_user, standin, run_jobs):
    photo = jpeg()
    standin.add_media("S17-A", photo, "image/jpeg")
    standin.add_media("S17-A-AGAIN", photo, "image/jpeg")  # sent twice: WeChat gives each its own media id
    standin.add_media("S17-B", png(), "image/png")
    user = make_user()
    files_before = _files(app)
    with session_scope() as s:
        appeal_id = submit_from_chat(s, user.id, {"id": "s17-dup", "content": "楼道里堆满了垃圾，已经一周了",
                                                  "contact_name": "张三", "contact_phone": "13800138000",
                                                  "media": ["S17-A", "S17-A-AGAIN", "S17-B"]}, account="oa").id
    run_jobs()
    with session_scope() as s:
        images = s.get(Appeal, appeal_id).images
        (ev,) = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == appeal_id,
                                                    AppealEvent.action == "photos_attached"))
        note, data = ev.note, ev.data
    assert [i["media_id"] for i in images] == ["S17-A", "S17-B"]
    assert _files(app) - files_before == {i["name"] for i in images}  # no stray copy on disk
    assert data["same_photo"] == ["S17-A-AGAIN"] and "相同" in note
    # The photo kept once is not fetched again and again by the sweep.
    assert jobs.sweep_chat_photos(now=utcnow() + timedelta(minutes=20)) == 0


def test_a_chat_supplement_photo_the_appeal_already_has_is_not_stored_again(chat, client, user_token, standin,  # noqa: F811
                                                                            run_jobs, app):
    photo = jpeg()
    body = client.post("/api/v1/appeals", headers=user_token(chat.user), json={
        "content": "办公楼空调不制冷，物业一直不处理", "contact_name": "张三", "contact_phone": "13800138000",
        "images": [base64.b64encode(photo).decode()]}).get_json()
    chat.act(body["id"], "accept")
    chat.act(body["id"], "request_info", note="请提供物业合同首页")
    standin.add_media("S17-SUPP", photo, "image/jpeg")  # the same photo again, from the phone's album
    chat("补充")
    chat(msg_type="image", media_id="S17-SUPP")
    assert chat("合同首页之前已经拍过，物业是某某物业公司").startswith(f"已补充，诉求 {body['number']} 恢复办理")
    files_before = _files(app)
    run_jobs()
    with session_scope() as s:
        images = s.get(Appeal, body["id"]).images
    assert [i["name"] for i in images] == body["images"]
    assert _files(app) == files_before


def test_a_supplement_photo_the_appeal_already_has_is_not_stored_again(client, w, user_token, app):  # noqa: F811
    photo, other = base64.b64encode(jpeg()).decode(), base64.b64encode(png()).decode()
    h = user_token(w.user)
    body = client.post("/api/v1/appeals", headers=h, json={
        "content": "我们公司的增值税发票开不出来，税控盘坏了", "contact_name": "张三", "contact_phone": "13800138000",
        "images": [photo]}).get_json()
    w.act(body["id"], "accept")
    w.act(body["id"], "request_info", note="请提供税控盘照片和编号")
    files_before = _files(app)
    resp = client.post(f"/api/v1/appeals/{body['id']}/supplement", headers=h,
                       json={"content": "税控盘照片已补充", "images": [photo, other]})
    assert resp.status_code == 200, resp.get_json()
    images = resp.get_json()["images"]
    assert len(images) == 2 and images[0] == body["images"][0]
    assert len(_files(app) - files_before) == 1
