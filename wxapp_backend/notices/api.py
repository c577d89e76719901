"""The user's in-app inbox (and, from the WeChat work, subscribe-message results)."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import func, select

from ..auth.guard import current_user_id, user_required
from ..db import session_scope, utcnow
from ..errors import NotFound
from ..http import PAGE_FIELDS, doc, query
from ..validation import Field
from .models import InboxItem

bp = Blueprint("notices_api", __name__, url_prefix="/api/v1")

INBOX_PARAMS = PAGE_FIELDS + (Field("unread", "bool", "只看未读"),)


@bp.get("/me/inbox")
@user_required
@doc("我的消息（站内信），新的在前", params=INBOX_PARAMS, tags=["消息"])
def inbox():
    q = query(INBOX_PARAMS)
    uid = current_user_id()
    with session_scope() as s:
        stmt = select(InboxItem).where(InboxItem.user_id == uid)
        if q["unread"]:
            stmt = stmt.where(InboxItem.read_at.is_(None))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        unread = s.scalar(select(func.count(InboxItem.id)).where(InboxItem.user_id == uid,
                                                                 InboxItem.read_at.is_(None)))
        rows = s.scalars(stmt.order_by(InboxItem.id.desc()).offset((q["page"] - 1) * q["per_page"])
                         .limit(q["per_page"])).all()
        return jsonify({"items": [r.to_dict() for r in rows], "total": total, "unread": unread,
                        "page": q["page"], "per_page": q["per_page"]})


@bp.post("/me/inbox/<int:item_id>/read")
@user_required
@doc("把一条消息标记为已读", body=(), tags=["消息"])
def mark_read(item_id: int):
    uid = current_user_id()
    with session_scope() as s:
        item = s.get(InboxItem, item_id)
        if item is None or item.user_id != uid:  # another user's item looks exactly like a missing one
            raise NotFound("没有找到这条消息。")
        if item.read_at is None:
            item.read_at = utcnow()
        return jsonify(item.to_dict())


@bp.post("/me/inbox/read-all")
@user_required
@doc("全部标记为已读", body=(), tags=["消息"])
def mark_all_read():
    uid = current_user_id()
    with session_scope() as s:
        rows = s.scalars(select(InboxItem).where(InboxItem.user_id == uid, InboxItem.read_at.is_(None))).all()
        now = utcnow()
        for r in rows:
            r.read_at = now
        return jsonify({"marked": len(rows)})


def register(app: Flask) -> None:
    app.register_blueprint(bp)
