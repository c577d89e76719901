"""QA of WeChat parametric QR codes (nineteenth pass, qrscene): posters in each office building's lobby and on each
activity, with a QR code whose scene is `building:<id>` or `activity:<id>`. A follow through one arrives as a
`subscribe` event with EventKey `qrscene_<scene>`, a follower's scan as a `SCAN` event with EventKey `<scene>`. The
parser read the scene, but nothing used it: the white-collar worker who scanned their lobby's poster got the plain
welcome, no word of their building, and the building was not remembered (so notices for it never reached them); one
who scanned an activity's poster got “欢迎回来” and had to find the activity again."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_dbaway_qa_s19 import db_away  # noqa: F401  (every connection refused)
from wxapp_backend.audit import SYSTEM, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope

_clock = itertools.count(int(time.time()) - 100_000)


def _follow(application, openid: str, scene: str) -> str:
    return say(application, openid, event="subscribe", event_key=f"qrscene_{scene}", now=next(_clock))


def _scan(application, openid: str, scene: str) -> str:
    return say(application, openid, event="SCAN", event_key=scene, now=next(_clock))


def _building_of(application, openid: str) -> int | None:
    with application.app_context(), session_scope() as s:
        return s.scalar(select(User.building_id).where(User.oa_openid == openid))


def _profile_audits(application) -> list[dict]:
    with application.app_context(), session_scope() as s:
        return [row.data for row in s.scalars(select(AuditLog).where(AuditLog.action == "user.profile_updated"))]


# --- a building's poster ----------------------------------------------------------------------------------------


def test_a_follow_from_a_buildings_poster_names_it_and_remembers_it(oa_kb, make_building):  # noqa: F811
    """The welcome, then a line naming the building and how to get its activities; the building becomes the user's
    (audited as the profile's change is), so notices for that building reach them."""
    from handlers.bot import WELCOME

    lobby = make_building(name="新华大厦")
    openid = "oQrLobbyNew"
    reply = _follow(oa_kb, openid, f"building:{lobby.id}")
    assert reply.startswith(WELCOME), reply
    assert "新华大厦" in reply and "“活动”" in reply and "记为您所在的楼宇" in reply, reply
    assert "data-miniprogram-path" in reply  # WXA_APPID set: 小程序“白领活动” is a link
    assert _building_of(oa_kb, openid) == lobby.id
    assert [a for a in _profile_audits(oa_kb) if a.get("via") == "qrcode"] == [{"building_id": lobby.id,
                                                                                 "via": "qrcode"}]


def test_a_building_already_chosen_is_kept(oa_kb, make_building, make_user):  # noqa: F811
    """Someone who works at 新华大厦 (their profile says so) scans the poster of 幸福里 while visiting: the line names
    幸福里 and their own building; their building is not changed."""
    mine, other = make_building(name="新华大厦"), make_building(name="幸福里")
    openid = "oQrLobbyKeep"
    make_user(openid="oMini" + openid, oa_openid=openid, unionid="u" + openid, followed=True, building_id=mine.id)
    reply = _scan(oa_kb, openid, f"building:{other.id}")
    assert "幸福里" in reply and "新华大厦" in reply and "记为您所在的楼宇" not in reply, reply
    assert _building_of(oa_kb, openid) == mine.id
    assert _profile_audits(oa_kb) == []
    same = _scan(oa_kb, openid, f"building:{mine.id}")
    assert "新华大厦" in same and "也是您登记的楼宇" in same, same


def test_a_scan_by_a_follower_without_a_building_remembers_it(oa_kb, make_building):  # noqa: F811
    lobby = make_building(name="华山大楼")
    openid = "oQrLobbyScan"
    say(oa_kb, openid, event="subscribe", now=next(_clock))  # followed earlier, from a search
    assert _building_of(oa_kb, openid) is None
    reply = _scan(oa_kb, openid, f"building:{lobby.id}")
    assert "华山大楼" in reply and "记为您所在的楼宇" in reply and "欢迎关注" not in reply, reply
    assert _building_of(oa_kb, openid) == lobby.id


def test_a_poster_of_a_building_merged_away_leads_to_the_one_kept(oa_kb, make_building):  # noqa: F811
    """Posters printed for a duplicate building stay on the wall after staff merge it (the duplicate is deleted):
    its code leads to the building kept, along a chain of merges."""
    from wxapp_backend.enterprises.services import merge_buildings

    kept, dup, older = (make_building(name="长宁来福士"), make_building(name="长宁来福士 T1"),
                        make_building(name="来福士广场"))
    with oa_kb.app_context(), session_scope() as s:
        merge_buildings(s, SYSTEM, dup.id, older.id)  # 来福士广场 into 长宁来福士 T1
    with oa_kb.app_context(), session_scope() as s:
        merge_buildings(s, SYSTEM, kept.id, dup.id)  # then T1 into 长宁来福士
    openid = "oQrLobbyMerged"
    reply = _follow(oa_kb, openid, f"building:{older.id}")
    assert "「长宁来福士」" in reply and "T1" not in reply and "来福士广场" not in reply, reply
    assert _building_of(oa_kb, openid) == kept.id


# --- an activity's poster ---------------------------------------------------------------------------------------


def test_a_scan_of_an_activitys_poster_shows_its_detail(oa_kb, make_activity):  # noqa: F811
    """A follower scans the poster of 午间一小时: the activity's detail as the chat's 活动 detail shows it (time,
    place, seats, how to register), its 小程序“白领活动” opening that activity's page."""
    from handlers.bot import WELCOME, WELCOME_BACK, activity_detail_text

    yoga = make_activity(title="午间一小时·瑜伽", category="culture", address="新华大厦 3 楼", status="published",
                         description="午休时间放松一下")
    openid = "oQrActivity"
    say(oa_kb, openid, event="subscribe", now=next(_clock))
    reply = _scan(oa_kb, openid, f"activity:{yoga.id}")
    assert reply != WELCOME_BACK
    assert "【午间一小时·瑜伽】" in reply and "时间：" in reply and "新华大厦 3 楼" in reply and "名额" in reply, reply
    assert f"pages/activity/detail?id={yoga.id}" in reply, reply
    with oa_kb.app_context():
        assert "【午间一小时·瑜伽】" in activity_detail_text(yoga.id, None)
    # a follow through it: the welcome, then the detail, within WeChat's 2,048 bytes
    long = make_activity(title="楼宇音乐会" * 10, category="culture", address="长宁路 1 号" * 10,
                         description="古典与流行" * 400, status="published")
    followed = _follow(oa_kb, "oQrActivityNew", f"activity:{long.id}")
    assert followed.startswith(WELCOME) and "【楼宇音乐会" in followed, followed
    assert len(followed.encode("utf-8")) <= 2048, len(followed.encode("utf-8"))


def test_an_ended_draft_or_deleted_activity_gives_the_plain_welcome(oa_kb, make_activity):  # noqa: F811
    from handlers.bot import WELCOME, WELCOME_BACK

    past = make_activity(starts_at=datetime.now(UTC) - timedelta(days=2), status="published")
    draft = make_activity(status="draft")
    for n, scene in enumerate((f"activity:{past.id}", f"activity:{draft.id}", "activity:987654")):
        assert _follow(oa_kb, f"oQrGoneActivity{n}", scene) == WELCOME, scene
        assert _scan(oa_kb, f"oQrGoneActivity{n}", scene) == WELCOME_BACK, scene


# --- scenes that say nothing we know ----------------------------------------------------------------------------


def test_malformed_and_unknown_scenes_give_the_plain_welcome(oa_kb, make_building):  # noqa: F811
    from handlers.bot import WELCOME, WELCOME_BACK

    gone = make_building(name="拆除大楼")
    gone_id = gone.id
    with oa_kb.app_context(), session_scope() as s:
        s.delete(s.get(type(gone), gone_id))
    bad = ("building:", "building:abc", "building:0", "building:-3", "building:1e3", "building:99999999999999999999",
           "building: 12", "activity:", "BUILDING:1", "building_7", "12345", "x" * 64, "building:1:2", "<a>",
           f"building:{gone_id}", "building:424242")
    for n, scene in enumerate(bad):
        openid = f"oQrBad{n}"
        assert _follow(oa_kb, openid, scene) == WELCOME, scene
        assert _scan(oa_kb, openid, scene) == WELCOME_BACK, scene
        assert _building_of(oa_kb, openid) is None
    # a follow with an empty EventKey, and a scan with none
    assert say(oa_kb, "oQrNoKey", event="subscribe", event_key="qrscene_", now=next(_clock)) == WELCOME
    assert say(oa_kb, "oQrNoKey", event="SCAN", now=next(_clock)) == WELCOME_BACK


def test_with_the_database_away_a_buildings_poster_gets_the_plain_welcome(oa_kb, make_building,  # noqa: F811
                                                                         db_away, run_jobs):
    """The follow is still queued for the worker (wechat/jobs.record_follow_later) and the welcome sent."""
    from handlers.bot import WELCOME

    lobby = make_building(name="新华大厦")
    openid = "oQrAway"
    with db_away(oa_kb):
        assert _follow(oa_kb, openid, f"building:{lobby.id}") == WELCOME
        assert _scan(oa_kb, openid, f"building:{lobby.id}") != ""
    assert run_jobs() >= 1
    with oa_kb.app_context(), session_scope() as s:
        assert s.scalar(select(User.followed).where(User.oa_openid == openid)) is True


def test_a_scan_during_an_appeal_draft_shows_the_building_and_keeps_the_draft(oa_kb, make_building):  # noqa: F811
    """A scan in the middle of 我要反映 sets the draft aside (as the menu does): the building's line is there too."""
    lobby = make_building(name="新华大厦")
    openid = "oQrDraft"
    say(oa_kb, openid, event="subscribe", now=next(_clock))
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "办公室空调一直不制冷已经一周了")
    reply = _scan(oa_kb, openid, f"building:{lobby.id}")
    assert "新华大厦" in reply and "继续" in reply, reply
    assert len(reply.encode("utf-8")) <= 2048


# --- the console's button ---------------------------------------------------------------------------------------

QRCODE_PATH = "/cgi-bin/qrcode/create"


def _page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, resp.status_code
    return resp.get_data(as_text=True)


def test_the_buildings_page_makes_its_qr_code_once_and_shows_it(client, console_login, make_staff, make_building,
                                                                standin, app):
    """生成楼宇二维码 on the building's page: WeChat's qrcode/create with QR_LIMIT_STR_SCENE and the scene
    building:<id>; the page then shows showqrcode?ticket=<the ticket, URL-encoded>; a second click asks WeChat
    nothing; the creation is audited (with a Chinese label)."""
    from urllib.parse import quote

    from wxapp_backend.console.audit_log import ACTION_LABELS

    lobby = make_building(name="新华大厦")
    token = console_login(make_staff(role="staff"))
    page = _page(client, f"/console/buildings/{lobby.id}/edit")
    assert "生成楼宇二维码" in page and "showqrcode" not in page
    resp = client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    calls = standin.calls_to(QRCODE_PATH)
    assert len(calls) == 1
    assert calls[0].body == {"action_name": "QR_LIMIT_STR_SCENE",
                             "action_info": {"scene": {"scene_str": f"building:{lobby.id}"}}}
    ticket = None
    with app.app_context(), session_scope() as s:
        rows = list(s.scalars(select(AuditLog).where(AuditLog.action == "wechat.qrcode_created")))
        assert [(r.target_type, r.target_id, r.data["scene"]) for r in rows] == [
            ("buildings", str(lobby.id), f"building:{lobby.id}")]
        ticket = rows[0].data["ticket"]
    assert "+" in ticket or "/" in ticket or "=" in ticket  # (the stand-in's tickets need encoding)
    page = _page(client, f"/console/buildings/{lobby.id}/edit")
    image = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=" + quote(ticket, safe="")
    assert image.replace("&", "&amp;") in page or image in page, page
    assert "楼宇二维码已生成" in page
    # a second click (a page open in another tab): the code kept, WeChat not asked again
    again = client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token})
    assert again.status_code == 302
    assert len(standin.calls_to(QRCODE_PATH)) == 1
    assert "之前已生成" in _page(client, f"/console/buildings/{lobby.id}/edit")
    assert "wechat.qrcode_created" in ACTION_LABELS
    # the console's CSP lets the page show WeChat's image
    assert "https://mp.weixin.qq.com" in client.get(f"/console/buildings/{lobby.id}/edit").headers[
        "Content-Security-Policy"]


def test_the_activitys_page_makes_its_qr_code(client, console_login, make_staff, make_activity, standin):
    act = make_activity(title="午间一小时·瑜伽", status="published")
    token = console_login(make_staff(role="admin"))
    assert "生成活动二维码" in _page(client, f"/console/activities/{act.id}/edit")
    assert client.post(f"/console/activities/{act.id}/qrcode", data={"csrf_token": token}).status_code == 302
    assert [c.body["action_info"]["scene"]["scene_str"] for c in standin.calls_to(QRCODE_PATH)] == [
        f"activity:{act.id}"]
    page = _page(client, f"/console/activities/{act.id}/edit")
    assert "showqrcode?ticket=" in page and "活动二维码已生成" in page


def test_qr_codes_need_the_editing_role_and_the_csrf_token(client, console_login, make_staff, make_building,
                                                           make_activity, standin):
    lobby, act = make_building(), make_activity(status="published")
    token = console_login(make_staff(role="dept"))  # reads buildings and activities, edits neither
    for path in (f"/console/buildings/{lobby.id}/qrcode", f"/console/activities/{act.id}/qrcode"):
        assert client.post(path, data={"csrf_token": token}).status_code == 403, path
    client.post("/console/logout", data={"csrf_token": token})
    token = console_login(make_staff(role="staff"))
    for path in (f"/console/buildings/{lobby.id}/qrcode", f"/console/activities/{act.id}/qrcode"):
        assert client.post(path, data={}).status_code == 400, path
        assert client.post(path, data={"csrf_token": token + "x"}).status_code == 400, path
    assert standin.calls_to(QRCODE_PATH) == []
    assert client.post("/console/buildings/987654/qrcode", data={"csrf_token": token}).status_code == 404


def test_wechat_refusing_gives_a_friendly_message_and_nothing_kept(client, console_login, make_staff,
                                                                    make_building, standin, app):
    """Busy, quota, an account without the right, any other error: a Chinese sentence on the page (no error page,
    no code), nothing kept, and the next click tries again. A refused token is refreshed and the call made again
    once, as every WeChat call is."""
    lobby = make_building(name="新华大厦")
    token = console_login(make_staff(role="staff"))
    post = lambda: client.post(f"/console/buildings/{lobby.id}/qrcode", data={"csrf_token": token},  # noqa: E731
                               follow_redirects=True)
    for errcode, times, words in ((-1, 3, "微信暂时繁忙"), (45011, 1, "微信暂时繁忙"),
                                  (48001, 1, "没有生成带参数二维码的权限"), (40053, 1, "错误码 40053"), (45009, 1, "上限")):
        standin.fail_next(QRCODE_PATH, errcode, times=times)  # (busy: the first try and both retries)
        resp = post()
        page = resp.get_data(as_text=True)
        assert resp.status_code == 200 and words in page and "showqrcode" not in page, (errcode, page)
        assert 'class="flash error"' in page
        with app.app_context():  # (the quota's cool-down mark, so that the next case reaches WeChat)
            app.extensions["wxapp"].redis.delete(*app.extensions["wxapp"].redis.keys("wxapp:wechat:quota:*") or
                                                 ["none"])
    with app.app_context(), session_scope() as s:
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "wechat.qrcode_created")) is None
    # an access token refused once: refreshed, the call made again, the code made
    standin.fail_next(QRCODE_PATH, 40001)
    page = post().get_data(as_text=True)
    assert "showqrcode?ticket=" in page and "楼宇二维码已生成" in page, page
    assert [c.errcode for c in standin.calls_to(QRCODE_PATH)][-2:] == [40001, 0]


def test_the_stand_in_checks_the_qrcode_request(standin):
    """The loopback stand-in answers qrcode/create as WeChat does: a token is needed, the scene 1-64 characters."""
    import requests

    url = standin.base_url + QRCODE_PATH
    assert requests.post(url, json={}, timeout=5).json()["errcode"] == 41001
    tok = requests.get(standin.base_url + "/cgi-bin/token", params={
        "grant_type": "client_credential", "appid": "wxqrtest", "secret": "s"}, timeout=5).json()["access_token"]
    ok = requests.post(url, params={"access_token": tok}, json={
        "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "building:1"}}}, timeout=5).json()
    assert ok["ticket"] and ok["url"] and "expire_seconds" not in ok
    for bad in ("", "x" * 65, 12):
        answer = requests.post(url, params={"access_token": tok}, json={
            "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": bad}}}, timeout=5).json()
        assert answer["errcode"] == 40053, bad
    assert requests.post(url, params={"access_token": tok}, json={"action_name": "QR_X"}, timeout=5).json()[
        "errcode"] == 40052
