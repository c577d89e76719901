"""Permanent parametric QR codes (QR_LIMIT_STR_SCENE) for the posters of buildings and activities.

Staff make them from the console; a follow or scan through one reaches the chat with its scene
(handlers/scenes.py says what it answers). WeChat keeps such a code for ever (100,000 of them per account), so
the ticket is made once per scene and kept: in the audit row of its creation, which is read before WeChat is asked.
Two clicks at once (a double click, two colleagues) ask WeChat once: the asking is done under a Redis lock per scene,
and the click that waited for it finds the code the other one kept. (Only permanent codes are made: a temporary
one, QR_SCENE with expire_seconds, would need its expiry kept and checked before reuse.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..audit import Actor, AuditLog, audit
from ..errors import AppError, NotFound
from .client import QuotaReached, WeChatAPI, WeChatAPIError

log = logging.getLogger(__name__)

ACTION = "wechat.qrcode_created"
SHOW_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket={ticket}"
KINDS = ("building", "activity")
LOCK_KEY = "wxapp:wechat:qrcode:lock:{appid}:{scene}"
# A click waits this long for a colleague's click on the same code (WeChat answers in well under a second); within
# gunicorn's 30-second request timeout, so that the waiting click gets a sentence, not a killed worker.
LOCK_WAIT = 20.0


@dataclass(frozen=True)
class QRCode:
    scene: str
    ticket: str
    url: str  # what the code encodes (WeChat's short link)
    made_at: datetime | None = None  # when it was kept (the audit row's time)

    @property
    def image_url(self) -> str:
        return SHOW_URL.format(ticket=quote(self.ticket, safe=""))


class QRCodeUnavailable(AppError):
    """WeChat made no code: what staff read, and nothing saved."""

    status = 503
    code = "qrcode_unavailable"


def scene_for(kind: str, item_id: int) -> str:
    if kind not in KINDS:
        raise ValueError(kind)
    return f"{kind}:{int(item_id)}"


def _target(session: Session, kind: str, item_id: int):
    from ..activities.models import Activity
    from ..enterprises.models import Building

    row = session.get(Building if kind == "building" else Activity, item_id)
    if row is None:
        raise NotFound("没有找到这栋楼宇，可能已被删除。" if kind == "building" else "没有找到这个活动，可能已被删除。")
    return row


def known_qrcode(session: Session, kind: str, item_id: int) -> QRCode | None:
    """The code made for this building or activity before, or None."""
    scene = scene_for(kind, item_id)
    table = "buildings" if kind == "building" else "activities"
    for data, made_at in session.execute(select(AuditLog.data, AuditLog.created_at).where(
            AuditLog.action == ACTION, AuditLog.target_type == table, AuditLog.target_id == str(int(item_id)))
            .order_by(AuditLog.id.desc())):
        if isinstance(data, dict) and data.get("scene") == scene and isinstance(data.get("ticket"), str):
            return QRCode(scene, data["ticket"], str(data.get("url") or ""), made_at)
    return None


def check_target(session: Session, kind: str, item_id: int) -> None:
    """NotFound unless the building or activity exists."""
    _target(session, kind, item_id)


def request_qrcode(api: WeChatAPI, kind: str, item_id: int) -> QRCode:
    """A new permanent QR code from WeChat (no database: called between two transactions, so that no lock is held
    while WeChat answers). WeChat refusing: QRCodeUnavailable, in words staff can act on."""
    scene = scene_for(kind, item_id)
    try:
        answer = api.create_qrcode(scene)
    except WeChatAPIError as exc:
        log.warning("QR code not made", extra={"scene": scene, "errcode": exc.errcode, "errmsg": exc.errmsg})
        raise QRCodeUnavailable(refusal_words(exc)) from None
    ticket = answer.get("ticket") if isinstance(answer, dict) else None
    if not isinstance(ticket, str) or not ticket.strip():
        log.warning("QR code answer without a ticket", extra={"scene": scene})
        raise QRCodeUnavailable("微信没有返回二维码，请稍后再试。")
    return QRCode(scene, ticket, str(answer.get("url") or ""))


def record_qrcode(session: Session, actor: Actor, kind: str, item_id: int, code: QRCode) -> tuple[QRCode, bool]:
    """Keep a code WeChat made (audited, with its ticket), unless one was kept meanwhile (a colleague's click): that
    one is returned. (code, kept now)."""
    target = _target(session, kind, item_id)
    found = known_qrcode(session, kind, item_id)
    if found is not None:
        return found, False
    audit(session, actor, ACTION, target, scene=code.scene, ticket=code.ticket, url=code.url)
    return code, True


def refusal_words(exc: WeChatAPIError) -> str:
    """WeChat's refusal as staff read it."""
    if isinstance(exc, QuotaReached):
        return "今天生成二维码的次数已达到微信的上限，请明天再试。"
    if exc.credential:
        return ("公众号的接口凭证无效，二维码没有生成。请管理员检查公众号的 AppID、AppSecret 和 IP 白名单设置，"
                "再重试。")
    if exc.transient:
        return "微信暂时繁忙或连接不上，二维码没有生成，请过一会儿再试。"
    if exc.errcode == 48001:  # api unauthorized
        return "公众号没有生成带参数二维码的权限（需为已认证的服务号），请联系管理员。"
    return f"微信没有生成二维码（错误码 {exc.errcode}），请稍后再试；多次不成功请联系管理员。"


def lock_ttl(api: WeChatAPI) -> float:
    """How long the longest qrcode/create may take, so that a lock held that long is never taken from a click still
    asking: an access token fetched (busy retries included), the call with its busy retries, a refused token
    refreshed and the call made again."""
    return 4 * api.tokens.lock_ttl


@contextmanager
def scene_lock(client: redis.Redis, api: WeChatAPI, scene: str) -> Iterator[None]:
    """Held while one click asks WeChat for `scene`'s code and keeps it; a second click waits for it (LOCK_WAIT
    seconds at most, then QRCodeUnavailable)."""
    try:
        lock = client.lock(LOCK_KEY.format(appid=api.appid, scene=scene), timeout=lock_ttl(api), sleep=0.05,
                           blocking_timeout=LOCK_WAIT, thread_local=False)
        got = lock.acquire()
    except redis.RedisError:
        log.warning("QR code lock unavailable", exc_info=True, extra={"scene": scene})
        raise QRCodeUnavailable("系统暂时繁忙，二维码没有生成，请过一会儿再试。") from None
    if not got:
        raise QRCodeUnavailable("同事正在生成这个二维码，请稍后刷新页面查看。")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.RedisError:  # expired (a call slower than lock_ttl) or Redis away: it frees itself in time
            log.warning("QR code lock not released", exc_info=True, extra={"scene": scene})


def qrcode_for(actor: Actor, kind: str, item_id: int) -> tuple[QRCode, bool]:
    """The console's button: the code kept for this building or activity, else a new one made by the Official
    Account (WeChat asked outside any transaction, by one click at a time per scene) and kept. (code, made now)."""
    from flask import current_app

    from ..db import session_scope
    from .client import get_api

    with session_scope() as s:
        check_target(s, kind, item_id)
        found = known_qrcode(s, kind, item_id)
    if found is not None:
        return found, False
    state = current_app.extensions["wxapp"]
    if not state.settings.wechat_appid:
        raise QRCodeUnavailable("还没有配置公众号（WECHAT_APPID、WECHAT_SECRET），无法生成二维码，请联系管理员。")
    api = get_api("oa")
    with scene_lock(state.redis, api, scene_for(kind, item_id)):
        # A click that held the lock before us has kept its code (committed before it let go): that one, unasked.
        with session_scope() as s:
            found = known_qrcode(s, kind, item_id)
        if found is not None:
            return found, False
        code = request_qrcode(api, kind, item_id)
        with session_scope() as s:
            return record_qrcode(s, actor, kind, item_id, code)
