"""Parametric QR codes (带参数二维码) on posters: a building's lobby, an activity.

A follow through such a code arrives as a `subscribe` event with EventKey `qrscene_<scene>`, a follower scanning one
as a `SCAN` event with EventKey `<scene>` (wxapp_backend/wechat/messages.py puts the scene in `msg.scene`). The scenes
staff print (the console makes their codes, wxapp_backend/wechat/qrcodes.py): `building:<id>` and `activity:<id>`.
The reply is the usual welcome plus a word about that building or that activity; a scene that says nothing we know
(malformed, a building deleted, an activity ended), or the database away, gets the usual welcome alone.
"""

from __future__ import annotations

import logging
import re

from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from .router import Context

log = logging.getLogger("handlers")

SCENE_RE = re.compile(r"^(building|activity):([1-9][0-9]{0,9})$")
MAX_ID = 2**31 - 1  # an id the database can hold (a longer number is no row of ours)

HOW_TO_FOLLOW = "回复“活动”看看近期可以报名的活动，也可以在小程序“白领活动”订阅感兴趣的类别，新活动发布时会通知您。"
BUILDING_REMEMBERED = ("您扫描的是「{name}」的二维码，已把它记为您所在的楼宇：面向本楼宇的活动和通知会发给您"
                       "（可在小程序个人资料中修改）。\n" + HOW_TO_FOLLOW)
BUILDING_SAME = "您扫描的是「{name}」的二维码，也是您登记的楼宇：面向本楼宇的活动和通知会发给您。\n" + HOW_TO_FOLLOW
BUILDING_OTHER = ("您扫描的是「{name}」的二维码。您登记的楼宇是「{mine}」，面向它的活动和通知会发给您；"
                  "如果已搬到「{name}」，请在小程序个人资料中修改所在楼宇。\n" + HOW_TO_FOLLOW)
BUILDING_ANON = "您扫描的是「{name}」的二维码。\n" + HOW_TO_FOLLOW


def parse_scene(scene: str | None) -> tuple[str, int] | None:
    """("building" | "activity", id) for a scene we print; None for any other (WeChat allows any 1-64 characters)."""
    m = SCENE_RE.match((scene or "").strip())
    if m is None or int(m.group(2)) > MAX_ID:
        return None
    return m.group(1), int(m.group(2))


def scene_of(ctx: Context) -> tuple[str, int] | None:
    msg = ctx.msg
    if not msg.is_event or msg.event not in ("subscribe", "scan"):
        return None
    return parse_scene(msg.scene)


def welcome(ctx: Context, base: str, *, room: int = REPLY_TEXT_MAX_BYTES) -> str:
    """The welcome of a follow (`base`: WELCOME) or a scan (`base`: WELCOME_BACK), with what its QR code's scene
    says, within `room` bytes. Never an error: anything amiss gives `base`."""
    found = scene_of(ctx)
    if found is None:
        return base
    kind, item_id = found
    # A follower scanning again knows the menu: the scene's words alone. A follow keeps the welcome in front.
    lead = base + "\n\n" if ctx.msg.event == "subscribe" else ""
    try:
        extra = (_building(ctx, item_id) if kind == "building"
                 else _activity(ctx, item_id, room - len(lead.encode("utf-8"))))
    except Exception:  # noqa: BLE001 - the scene is a courtesy: the database away, a row gone meanwhile
        log.warning("QR scene not shown", exc_info=True, extra={"scene": ctx.msg.scene, "account": ctx.account})
        return base
    if not extra:
        return base
    text = lead + extra
    return text if len(text.encode("utf-8")) <= room else base


def _building(ctx: Context, building_id: int) -> str | None:
    from wxapp_backend.auth.models import User
    from wxapp_backend.auth.services import remember_building
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises.services import building_carried_on

    with session_scope() as s:
        building = building_carried_on(s, building_id)
        if building is None:
            return None
        name = building.name
        if ctx.user_id is None:
            return BUILDING_ANON.format(name=name)
        if remember_building(s, ctx.user_id, building.id):
            return BUILDING_REMEMBERED.format(name=name)
        user = s.get(User, ctx.user_id)
        mine = user.building if user is not None else None
        if mine is None:  # (the user row gone meanwhile)
            return BUILDING_ANON.format(name=name)
        if mine.id == building.id:
            return BUILDING_SAME.format(name=name)
        return BUILDING_OTHER.format(name=name, mine=mine.name)


def _activity(ctx: Context, activity_id: int, room: int) -> str | None:
    from wxapp_backend.activities.services import on_poster
    from wxapp_backend.db import session_scope

    from .bot import ACTIVITY_GONE, activity_detail_text
    from .links import activity_page

    with session_scope() as s:
        if not on_poster(s, activity_id):
            return None
    appid = getattr(ctx.settings, "wxa_appid", "") if ctx.settings is not None else ""
    text = activity_detail_text(activity_id, ctx.user_id, room=room, appid=appid or "")
    if text == ACTIVITY_GONE:  # deleted in between
        return None
    pages = ctx.extra.get("mini_pages")
    if isinstance(pages, dict):  # its 小程序“白领活动” opens this activity's page (handlers/middleware.py)
        pages.update(activity_page(activity_id))
    return text
