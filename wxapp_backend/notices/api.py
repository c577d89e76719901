"""The user's in-app inbox (and, from the WeChat work, subscribe-message results)."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import func, select

from ..auth.guard import current_user_id, user_required
from ..db import session_scope, utcnow
from ..errors import NotFound
from ..http import PAGE_FIELDS, doc, idempotency_header, idempotency_key, page_json, parse, query, throttle
from ..validation import Field
from . import credits
from .kinds import current_kinds
from .models import InboxItem

bp = Blueprint("notices_api", __name__, url_prefix="/api/v1")

INBOX_PARAMS = PAGE_FIELDS + (
    Field("unread", "bool", "只看未读"),
    # Pages by number shift under the reader: a notice arriving while they scroll repeated the last item of the page
    # before, and marking the first page read (with 只看未读) skipped a page of unread ones.
    Field("before_id", "int", "只看这条消息之前的", min=1,
          description="上一页最后一条消息的 id：从它之前接着看（新消息到来或标记已读时不重复、不漏看）"),
)


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
        if q["before_id"]:
            stmt = stmt.where(InboxItem.id < q["before_id"])
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        unread = s.scalar(select(func.count(InboxItem.id)).where(InboxItem.user_id == uid,
                                                                 InboxItem.read_at.is_(None)))
        rows = s.scalars(stmt.order_by(InboxItem.id.desc()).offset((q["page"] - 1) * q["per_page"])
                         .limit(q["per_page"])).all()
        return jsonify({**page_json([r.to_dict() for r in rows], total, q["page"], q["per_page"]), "unread": unread})


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


RESULTS_LIMIT_PER_MIN = 30  # reports a minute per user (the `subscribe_results_limit` knob)
MAX_RESULTS = 10  # wx.requestSubscribeMessage asks for at most 3 templates a tap; 10 leaves room


def _check_results(results: dict) -> str | None:
    entries = {k: v for k, v in results.items() if k != "errMsg"}  # the raw wx result carries errMsg too
    if not entries:
        return "订阅结果不能为空"
    if len(entries) > MAX_RESULTS:
        return f"订阅结果最多 {MAX_RESULTS} 项（现在 {len(entries)} 项）"
    for template_id, status in entries.items():
        if not template_id.strip() or len(template_id) > 64:
            return "模板 ID 应为 1 到 64 个字符"
        if status not in credits.STATUSES:
            return f"模板 {template_id[:64]} 的结果“{str(status)[:20]}”不认识，只能是 accept、reject、ban 或 filter"
    return None


RESULT_FIELDS = (
    Field("results", "dict", "订阅结果", required=True, check=_check_results,
          description="wx.requestSubscribeMessage 的结果：{模板ID: accept|reject|ban|filter}（errMsg 会被忽略）"),
)


def _credits_view(session, user_id: int) -> dict:
    rows = credits.credits_by_template(session, user_id)
    kinds, templates = [], {}
    for kind in current_kinds().values():
        if not kind.template_id:
            continue
        row = rows.get(kind.template_id)
        entry = templates.setdefault(kind.template_id, {
            "template_id": kind.template_id, "kinds": [], "long_term": kind.long_term,
            "credits": row.credits if row else 0, "banned": bool(row and row.banned),
            "subscribed": bool(row and not row.banned and (row.credits > 0 or row.long_term)),
        })
        entry["kinds"].append(kind.name)
        kinds.append({"kind": kind.name, "template_id": kind.template_id, "credits": entry["credits"],
                      "long_term": kind.long_term, "subscribed": entry["subscribed"]})
    return {"kinds": kinds, "templates": list(templates.values())}


RESULTS_IDEMPOTENCY_HEADER = idempotency_header(
    credits.IDEMPOTENCY_KEY_MAX, "上报编号：一次授权弹窗一个，网络重试时带同一个，不会重复增加次数，返回第一次的结果；"
    "结果不同为 409 idempotency_key_reused（新的一次授权请换一个新的）")


@bp.post("/me/subscribe-results")
@user_required
@doc("上报订阅消息授权结果（wx.requestSubscribeMessage 的结果），返回各类通知的剩余次数（可带 Idempotency-Key "
     "请求头：同一用户同一键、同样的结果视为网络重试，不重复增加次数，results 为第一次的结果；同一键结果不同为 409 "
     "idempotency_key_reused；不带时每次上报都计入）", body=RESULT_FIELDS, tags=["消息"],
     responses={200: "{results, kinds, templates}", 409: "同一 Idempotency-Key 已用于结果不同的上报（idempotency_key_reused）"},
     headers=(RESULTS_IDEMPOTENCY_HEADER,))
def subscribe_results():
    data = parse(RESULT_FIELDS)
    # A template id with spaces around it (copied into the front-end's config) was “ignored” though it was ours.
    results = {k.strip(): v for k, v in data["results"].items() if k != "errMsg"}
    uid = current_user_id()
    key = idempotency_key(credits.IDEMPOTENCY_KEY_MAX)
    throttle("subscribe_results", f"u{uid}", RESULTS_LIMIT_PER_MIN, 60, "操作太频繁了，请稍等一分钟再试。")
    if key:  # a network retry of one tap gave a second credit
        first = credits.claim_report(uid, key, results)
        if first is not None:
            with session_scope() as s:
                return jsonify({"results": first, **_credits_view(s, uid)})
    try:
        with session_scope() as s:
            applied = credits.record_results(s, uid, results, source="client")
            body = {"results": applied, **_credits_view(s, uid)}
    except BaseException:
        if key:  # nothing was recorded: the retry is applied afresh
            credits.release_report(uid, key)
        raise
    if key:
        credits.remember_report(uid, key, results, applied)
    return jsonify(body)


@bp.get("/me/subscribe-credits")
@user_required
@doc("各类通知可用的订阅消息次数（小程序据此决定请用户授权哪些模板）", tags=["消息"])
def subscribe_credits():
    uid = current_user_id()
    with session_scope() as s:
        return jsonify(_credits_view(s, uid))


def register(app: Flask) -> None:
    from ..config import ConfigError
    from ..periodic import register_periodic
    from .kinds import load_kinds

    path = app.extensions["wxapp"].settings.notify_templates_path
    if path:
        # A file that cannot be read stops the start naming the variable; found later, it made every
        # notification, and GET /me/subscribe-credits, fail with a 500.
        try:
            load_kinds(path)
        except ConfigError as exc:
            raise ConfigError(f"环境变量 NOTIFY_TEMPLATES 指向的订阅消息模板文件有误：{exc}") from None
    app.register_blueprint(bp)
    register_periodic("notify_sweep", 600, "wxapp_backend.notices.jobs.sweep_pending_notifications")
