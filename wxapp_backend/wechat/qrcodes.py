"""Permanent parametric QR codes (QR_LIMIT_STR_SCENE) for the posters of buildings and activities.

Staff make them from the console; a follow or scan through one reaches the chat with its scene
(handlers/scenes.py says what it answers). WeChat keeps such a code for ever (100,000 of them per account), so
the ticket is made once per scene and kept: in the audit row of its creation, which is read before WeChat is asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..audit import Actor, AuditLog, audit
from ..errors import AppError, NotFound
from .client import QuotaReached, WeChatAPI, WeChatAPIError

log = logging.getLogger(__name__)

ACTION = "wechat.qrcode_created"
SHOW_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket={ticket}"
KINDS = ("building", "activity")


@dataclass(frozen=True)
class QRCode:
    scene: str
    ticket: str
    url: str  # what the code encodes (WeChat's short link)

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
    for data in session.scalars(select(AuditLog.data).where(
            AuditLog.action == ACTION, AuditLog.target_type == table, AuditLog.target_id == str(int(item_id)))
            .order_by(AuditLog.id.desc())):
        if isinstance(data, dict) and data.get("scene") == scene and isinstance(data.get("ticket"), str):
            return QRCode(scene, data["ticket"], str(data.get("url") or ""))
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


def qrcode_for(actor: Actor, kind: str, item_id: int) -> tuple[QRCode, bool]:
    """The console's button: the code kept for this building or activity, else a new one made by the Official
    Account (WeChat asked outside any transaction) and kept. (code, made now)."""
    from flask import current_app

    from ..db import session_scope
    from .client import get_api

    with session_scope() as s:
        check_target(s, kind, item_id)
        found = known_qrcode(s, kind, item_id)
    if found is not None:
        return found, False
    if not current_app.extensions["wxapp"].settings.wechat_appid:
        raise QRCodeUnavailable("还没有配置公众号（WECHAT_APPID、WECHAT_SECRET），无法生成二维码，请联系管理员。")
    code = request_qrcode(get_api("oa"), kind, item_id)
    with session_scope() as s:
        return record_qrcode(s, actor, kind, item_id, code)
