"""QA of the poster QR codes and the chat's activity detail (twentieth pass, qrdup).

1. 生成二维码 on a building's or an activity's page asked WeChat's qrcode/create once per click that found no code
   kept: a double click, or two colleagues at once, both found none and both asked (each call spends one of the
   account's 100,000 permanent codes). One click at a time now asks, under a Redis lock per scene; the other waits and
   shows the code the first one kept. The page says the code shown is the one made before.
2. The chat's detail of an activity nobody (or this user) can register for now — full, registration closed or not
   open yet, ended — said why, but not where to see it: unlike the registrable one (报名方法：打开小程序“白领活动”…),
   it had no link to the activity's page. It now has one, within WeChat's 2,048 bytes.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from tests.conftest import OA_APPID, WXA_APPID
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope

QRCODE_PATH = "/cgi-bin/qrcode/create"


def _page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, resp.status_code
    return resp.get_data(as_text=True)


def _login(client, staff) -> str:
    """console_login for a second browser (another test client)."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', _page(client, "/console/login")).group(1)
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', _page(client, "/console/")).group(1)


def _kept(app) -> int:
    with app.app_context(), session_scope() as s:
        return s.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "wechat.qrcode_created")) or 0


def _at_once(n: int, fn) -> list:
    """fn(i) in n threads released together; their results (an exception re-raised)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# --- 1. one code per scene, whatever the clicks ------------------------------------------------------------------


def test_two_colleagues_clicking_at_once_make_one_wechat_call(app, client, make_staff, make_building, standin):
    """Two browsers post 生成楼宇二维码 together while WeChat takes half a second: one qrcode/create, one audit row,
    both pages show the same code (the second one says it was made before)."""
    lobby = make_building(name="新华大厦")
    browsers = [client, app.test_client()]
    tokens = [_login(b, make_staff(role="staff")) for b in browsers]
    standin.set_latency(0.5, QRCODE_PATH)
    try:
        answers = _at_once(2, lambda i: browsers[i].post(f"/console/buildings/{lobby.id}/qrcode",
                                                         data={"csrf_token": tokens[i]}, follow_redirects=True))
    finally:
        standin.set_latency(0, QRCODE_PATH)
    pages = [a.get_data(as_text=True) for a in answers]
    assert [a.status_code for a in answers] == [200, 200]
    assert standin.count(QRCODE_PATH) == 1, standin.count(QRCODE_PATH)
    assert _kept(app) == 1
    images = {re.search(r'<img src="([^"]+)"[^>]*id="qrcode-image"', p).group(1) for p in pages}
    assert len(images) == 1 and "showqrcode?ticket=" in images.pop()
    assert sorted("楼宇二维码已生成" in p for p in pages) == [False, True], pages
    assert any("之前已生成" in p for p in pages)


def test_negative_control_without_the_lock_both_clicks_ask_wechat(app, make_staff, make_building, standin, monkeypatch):
    """The same race through qrcode_for with the lock left out: two calls to WeChat (and the second code is not kept,
    record_qrcode finding the first). This shows the test above would see the race."""
    from contextlib import nullcontext

    from wxapp_backend.audit import Actor
    from wxapp_backend.wechat import qrcodes
    from wxapp_backend.wechat.qrcodes import qrcode_for

    lobby = make_building(name="幸福里")
    staff = make_staff(role="staff")

    def click(building_id: int):
        def run(_i: int):
            with app.app_context():
                return qrcode_for(Actor("staff", staff.id), "building", building_id)
        return run

    other = make_building(name="华山大楼")
    standin.set_latency(0.5, QRCODE_PATH)
    try:
        with monkeypatch.context() as m:
            m.setattr(qrcodes, "scene_lock", lambda *_a, **_k: nullcontext())  # the lock left out
            unlocked = _at_once(2, click(lobby.id))
        assert standin.count(QRCODE_PATH) == 2  # the race is real
        assert _kept(app) == 1 and len({code.ticket for code, _made in unlocked}) == 1
        locked = _at_once(2, click(other.id))
    finally:
        standin.set_latency(0, QRCODE_PATH)
    assert standin.count(QRCODE_PATH) == 3  # the lock: one more call for the second building, not two
    assert sorted(made for _code, made in locked) == [False, True]
    assert len({code.ticket for code, _made in locked}) == 1
    assert _kept(app) == 2


def test_a_second_click_asks_wechat_nothing_and_the_page_says_the_code_was_made_before(
        client, console_login, make_staff, make_building, make_activity, standin):
    lobby, act = make_building(name="新华大厦"), make_activity(title="午间一小时·瑜伽", status="published")
    token = console_login(make_staff(role="staff"))
    for post, edit, what in ((f"/console/buildings/{lobby.id}/qrcode", f"/console/buildings/{lobby.id}/edit", "楼宇"),
                             (f"/console/activities/{act.id}/qrcode", f"/console/activities/{act.id}/edit", "活动")):
        assert 'id="qrcode-existing"' not in _page(client, edit)
        before = standin.count(QRCODE_PATH)
        assert client.post(post, data={"csrf_token": token}).status_code == 302
        assert client.post(post, data={"csrf_token": token}).status_code == 302  # a page left open in another tab
        assert standin.count(QRCODE_PATH) == before + 1
        page = _page(client, edit)
        assert "之前已生成" in page, page
        said = re.search(r'<p id="qrcode-existing">([^<]+)</p>', page)
        assert said and f"本{what}已生成的二维码" in said.group(1) and "不用再生成" in said.group(1), page
        assert re.search(r"（20\d\d-\d\d-\d\d \d\d:\d\d 生成）", said.group(1)), said.group(1)


def test_a_click_while_a_colleagues_click_is_asking_gets_a_sentence(app, client, console_login, make_staff,
                                                                    make_building, standin, monkeypatch):
    """The colleague's click holds the scene's lock longer than a click waits (WeChat very slow): a Chinese sentence,
    no call, nothing kept; once it is let go, the click makes the code."""
    from wxapp_backend.wechat import qrcodes

    lobby = make_building(name="新华大厦")
    token = console_login(make_staff(role="staff"))
    monkeypatch.setattr(qrcodes, "LOCK_WAIT", 0.3)
    r = app.extensions["wxapp"].redis
    key = qrcodes.LOCK_KEY.format(appid=OA_APPID, scene=f"building:{lobby.id}")
    r.set(key, "a-colleague", ex=30)
    page = client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert "同事正在生成这个二维码" in page and 'class="flash error"' in page, page
    assert standin.count(QRCODE_PATH) == 0 and _kept(app) == 0
    r.delete(key)
    page = client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert "楼宇二维码已生成" in page and standin.count(QRCODE_PATH) == 1
    assert r.get(key) is None  # let go after the code was kept



def test_redis_away_gives_a_sentence_and_no_call(app, client, console_login, make_staff, make_building, standin,
                                                 monkeypatch):
    import redis

    lobby = make_building(name="新华大厦")
    token = console_login(make_staff(role="staff"))

    def away(*_a, **_k):
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(app.extensions["wxapp"].redis, "lock", away)
    resp = client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token}, follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "二维码没有生成" in page and 'class="flash error"' in page, page
    assert standin.count(QRCODE_PATH) == 0 and _kept(app) == 0

# --- 2. the detail of an activity one cannot register for links its page ----------------------------------------


def _linked(text: str, activity_id: int) -> str:
    """The text as the WeChat chat sends it (handlers/middleware.py): its page names made links, within 2,048 bytes."""
    from handlers.links import activity_page, mini_links

    return mini_links(text, WXA_APPID, pages=activity_page(activity_id))


def _cannot_register(make_activity, make_user, **kw):
    """Activities nobody can register for now, by why."""
    from wxapp_backend.activities import services

    now = datetime.now(UTC)
    full = make_activity(capacity=1, waitlist_enabled=False, **kw)
    with session_scope() as s:
        services.register(s, activity_id=full.id, user_id=make_user().id)
    return {
        "名额已满": full,
        "报名已截止": make_activity(registration_closes_at=now - timedelta(hours=1), **kw),
        "报名尚未开始": make_activity(registration_opens_at=now + timedelta(hours=5), **kw),
        "活动已结束": make_activity(starts_at=now - timedelta(days=2), **kw),
        "活动已开始": make_activity(starts_at=now - timedelta(hours=1), **kw),
    }


def test_the_detail_of_an_activity_one_cannot_register_for_links_its_page(app_ctx, make_activity, make_user):
    from handlers.bot import activity_detail_text

    for why, act in _cannot_register(make_activity, make_user, status="published", description="午休放松").items():
        for user in (None, make_user()):
            text = activity_detail_text(act.id, user.id if user else None, appid=WXA_APPID)
            assert "现在不能报名" in text and why in text, (why, text)
            sent = _linked(text, act.id)
            assert f'data-miniprogram-path="pages/activity/detail?id={act.id}"' in sent, (why, sent)


def test_a_long_detail_one_cannot_register_for_keeps_its_link_within_2048_bytes(app_ctx, make_activity, make_user):
    from handlers.bot import activity_detail_text
    from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

    acts = []
    for description in ("古典与流行" * 400, "古典与流行" * 20):  # cut (its “…” names the page) or whole
        long = {"title": "楼宇音乐会" * 20, "address": "长宁路 1 号" * 28, "description": description,
                "status": "published"}
        acts += _cannot_register(make_activity, make_user, **long).items()
    for why, act in acts:
        for room in (REPLY_TEXT_MAX_BYTES, REPLY_TEXT_MAX_BYTES - 900):  # (a welcome or a note put before it)
            text = activity_detail_text(act.id, None, appid=WXA_APPID, room=room)
            sent = _linked(text, act.id)
            assert len(sent.encode("utf-8")) <= room, (why, room, len(sent.encode("utf-8")))
            assert why in sent and "现在不能报名" in sent, (why, sent)
            assert f"pages/activity/detail?id={act.id}" in sent, (why, sent)
            assert room == REPLY_TEXT_MAX_BYTES or "长宁路 1 号" * 28 not in sent, sent  # (the fit was needed)


def test_a_poster_scan_of_a_full_activity_links_its_page(oa_kb, make_activity, make_user):  # noqa: F811
    """Through the webhook: a follower scans the poster of an activity already full; the reply names 名额已满 and
    opens the activity's page (a follow through it too, the welcome in front, within 2,048 bytes)."""
    from handlers.bot import WELCOME

    acts = _cannot_register(make_activity, make_user, status="published", title="楼宇音乐会",
                            description="古典与流行" * 5)
    full = acts["名额已满"]
    say(oa_kb, "oQrDupFull", event="subscribe")
    reply = say(oa_kb, "oQrDupFull", event="SCAN", event_key=f"activity:{full.id}")
    assert "名额已满" in reply and f"pages/activity/detail?id={full.id}" in reply, reply
    followed = say(oa_kb, "oQrDupFullNew", event="subscribe", event_key=f"qrscene_activity:{full.id}")
    assert followed.startswith(WELCOME) and f"pages/activity/detail?id={full.id}" in followed, followed
    assert len(followed.encode("utf-8")) <= 2048
