"""Console pages for 精准推送: notice composer with reach estimate, test send, publish, live send progress."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select

from ..auth.guard import console_required, current_actor
from ..auth.models import ROLE_RANK, StaffRole
from ..console import add_nav, once
from ..console.stale import differences, seen_stamp
from ..db import session_scope
from ..edits import StaleEdit, locked_for_edit, refuse_stale
from ..enterprises.models import Building
from ..enterprises.services import paginate
from ..errors import AppError, Conflict, ValidationError
from ..notices import broadcast
from ..notices.broadcast_models import Notice, StaffTestRecipient
from ..validation import row_id, row_ids
from .models import CATEGORIES, Activity

bp = Blueprint("notices_console", __name__, url_prefix="/console")

_SPLIT = re.compile(r"[,，、\s]+")
# Industries are matched whole, and standard names hold 、 (交通运输、仓储和邮政业): split on commas, semicolons and
# line breaks only.
_LIST_SPLIT = re.compile(r"\s*[,，;；\n]\s*")
PER_PAGE = 50


@bp.context_processor
def _perms() -> dict[str, Any]:
    """Department accounts follow notices; writing, testing and publishing them is for staff."""
    staff = getattr(g, "staff", None)
    return {"can_edit": staff is not None and ROLE_RANK[StaffRole(staff.role)] >= ROLE_RANK[StaffRole.STAFF]}


# A field name and its value: “=”, or the “＝” and “：” a Chinese input method types (and “:”), the first one on the line.
_FIELD_SEP = re.compile(r"\s*[=＝:：]\s*")


def _template_lines(text: str, *, strict: bool = True) -> dict[str, str]:
    """The 订阅消息字段 box, one “字段名=取值” a line. A line that names no field, or a field written twice, is a
    ValidationError (`strict`; else left out, to show the refused form again): “thing1＝…” from a Chinese input
    method, or a line without a name, was dropped without a word and the notice went out with values made from the
    title instead of the ones written."""
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = _FIELD_SEP.split(line.strip(), maxsplit=1)
        key = unicodedata.normalize("NFKC", parts[0]).strip() if len(parts) == 2 else ""
        if not key or key in fields:
            if not strict:
                continue
            problem = (f"第 {number} 行写了两次字段 {key[:40]}，请只留一行" if key else
                       f"第 {number} 行“{line.strip()[:20]}”没有写字段名，请按“字段名=取值”每行写一个，"
                       "例如 thing1=稳岗补贴申报开始")
            raise ValidationError(f"订阅消息字段{problem}。", fields={"template_fields": problem})
        fields[key] = parts[1]
    return fields


def _form_data(*, strict: bool = True) -> dict[str, Any]:
    f = request.form
    fields = _template_lines(f.get("template_fields", ""), strict=strict)
    audience: dict[str, Any] = {
        "all": "audience_all" in f,
        "categories": [c for c in f.getlist("categories") if c in CATEGORIES],
        "building_ids": row_ids(f.getlist("building_ids")),
        "industries": [x for x in _LIST_SPLIT.split(f.get("industries", "")) if x.strip()],
        "tags": [x for x in _SPLIT.split(f.get("tags", "")) if x],
        "verified_only": "verified_only" in f,
    }
    if (registrants_of := row_id(f.get("registrants_of"))) is not None:
        audience["registrants_of"] = registrants_of
    data: dict[str, Any] = {"kind": f.get("kind", "policy"), "title": f.get("title", ""),
                            "summary": f.get("summary", ""), "page": f.get("page", ""),
                            "template_fields": fields, "audience": audience}
    if (activity_id := row_id(f.get("activity_id"))) is not None:
        data["activity_id"] = activity_id  # no page given: the notice opens the activity (broadcast._clean)
    return data


def _choices(s) -> dict[str, Any]:
    return {"categories": CATEGORIES, "buildings": s.scalars(select(Building).order_by(Building.name)).all(),
            "activities": s.scalars(select(Activity).order_by(Activity.starts_at.desc()).limit(100)).unique().all()}


_TYPED_TEST_USER = "notices.typed_test_user"


@bp.get("/notices")
@console_required(StaffRole.DEPT)
def notices():
    # Every notice stays reachable (the page showed the latest 100 only); a page number past the end shows the last.
    number = min(row_id(request.args.get("page")) or 1, 100_000)
    with session_scope() as s:
        page = paginate(s, select(Notice).order_by(Notice.id.desc()), number, PER_PAGE)
        if page.page > page.pages:
            page = paginate(s, select(Notice).order_by(Notice.id.desc()), page.pages, PER_PAGE)
        link = s.get(StaffTestRecipient, current_actor().id)
        test_user = link.user_id if link else None
    # A refused test recipient (test_recipient below) comes back with the number typed still in the box, to correct.
    typed = session.pop(_TYPED_TEST_USER, None)
    if typed is not None:
        test_user = typed
    return render_template("console/notices/list.html", rows=page.items, page=page,
                           labels=broadcast.NOTICE_STATUS_LABELS, test_user=test_user)


@bp.route("/notices/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def new_notice():
    with session_scope() as s:
        ctx = _choices(s)
        about = s.get(Activity, row_id(request.args.get("activity_id")) or 0) if request.method == "GET" else None
        v = _about_activity(about) if about is not None else {"audience": {}}
    if request.method == "GET":
        return render_template("console/notices/edit.html", v=v, errors={}, **ctx)
    try:
        data = _form_data()
    except ValidationError as exc:
        return _refused_form(exc, ctx)
    first = once.claim(current_actor().id)
    if first is not None:  # the same form sent again (a double-click): its first post's draft, not another
        return _sent_twice(first)
    try:
        with session_scope() as s:
            notice_id = broadcast.create_notice(s, current_actor(), data).id
    except BaseException as exc:
        once.release(current_actor().id)
        if not isinstance(exc, AppError) or exc.status in {403, 404}:
            raise
        data["template_fields_text"] = request.form.get("template_fields", "")
        return render_template("console/notices/edit.html", v=data, error=exc.message, errors=exc.fields,
                               **ctx), exc.status
    once.saved(current_actor().id, notice_id)
    flash("通知草稿已保存，请查看送达预估后发布。")
    return redirect(url_for("notices_console.notice", notice_id=notice_id))


def _refused_form(exc: ValidationError, ctx: dict[str, Any], **page: Any):
    """The form shown again as it was sent, with what is wrong in it (nothing saved)."""
    data = _form_data(strict=False)
    data["template_fields_text"] = request.form.get("template_fields", "")
    return render_template("console/notices/edit.html", v=data, error=exc.message, errors=exc.fields, **page,
                           **ctx), exc.status


def _sent_twice(first: str):
    if not first:
        flash("这份通知正在保存，请稍候在列表中查看，不要重复提交。")
        return redirect(url_for("notices_console.notices"))
    flash("这份通知已经保存过了（表单提交了两次），这是第一次保存的草稿，没有再建一份。")
    return redirect(url_for("notices_console.notice", notice_id=int(first)))


@bp.route("/notices/<int:notice_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def edit_notice(notice_id: int):
    """A draft's edit page, the create form filled in (a typo could be fixed through the API only); a notice once
    published is not edited: it has gone out."""
    with session_scope() as s:
        n = broadcast._get(s, notice_id)
        ctx = _choices(s)
        v = _notice_values(n)
        status, updated_at = n.status, n.updated_at
    if status != "draft":
        flash("通知已发布，不能再修改。", "error")
        return redirect(url_for("notices_console.notice", notice_id=notice_id))
    if request.method == "GET":
        return render_template("console/notices/edit.html", v=v, errors={}, editing=notice_id,
                               stamp=updated_at.isoformat(), **ctx)
    try:
        data = _form_data()
    except ValidationError as exc:  # the page stays on the version it was loaded on
        seen = seen_stamp()
        return _refused_form(exc, ctx, editing=notice_id, stamp=seen.isoformat() if seen else None)
    if "activity_id" not in data and "activity_id" in request.form:
        data["activity_id"] = None  # 相关活动 set back to （无）
    seen, conflict = seen_stamp(), []
    try:
        with session_scope() as s:
            current = locked_for_edit(s, Notice, notice_id, "没有找到这条通知。")
            if current.status == "draft":  # published meanwhile: update_notice says so
                # The form sends every box: saved from a page loaded before a colleague's save, it would put
                # back what they changed. What differs is shown beside theirs, and the page moves to their version.
                conflict = differences(_shown(_notice_values(current), ctx), _shown(_typed(data), ctx), LABELS)
                stamp = current.updated_at.isoformat()
                refuse_stale(current, conflict, seen, "通知草稿")
            broadcast.update_notice(s, current_actor(), notice_id, data)
    except StaleEdit as exc:
        data["template_fields_text"] = request.form.get("template_fields", "")
        return render_template("console/notices/edit.html", v=data, error=exc.message, errors={},
                               conflict=conflict, editing=notice_id, stamp=stamp, **ctx), exc.status
    except AppError as exc:
        if exc.status == 409:  # published by a colleague meanwhile
            flash(exc.message, "error")
            return redirect(url_for("notices_console.notice", notice_id=notice_id))
        if exc.status in {403, 404}:
            raise
        data["template_fields_text"] = request.form.get("template_fields", "")
        # The page stays on the version it was loaded on: a colleague's save meanwhile is still caught.
        return render_template("console/notices/edit.html", v=data, error=exc.message, errors=exc.fields,
                               editing=notice_id, stamp=seen.isoformat() if seen else None, **ctx), exc.status
    flash("通知草稿已修改，请查看送达预估后发布。")
    return redirect(url_for("notices_console.notice", notice_id=notice_id))


LABELS = {"kind": "类型", "activity_id": "相关活动", "title": "标题", "summary": "摘要", "page": "打开的小程序页面",
          "template_fields_text": "订阅消息字段", "all": "全部用户", "categories": "订阅的活动类别",
          "building_ids": "楼宇", "industries": "行业", "tags": "企业标签", "verified_only": "仅限已核实的企业联系人",
          "registrants_of": "某个活动的报名人"}


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    """The form as sent, in _notice_values' shape (template fields as typed in their box)."""
    return {**data, "activity_id": data.get("activity_id"), "audience": dict(data["audience"]),
            "template_fields_text": request.form.get("template_fields", "").strip()}


def _shown(v: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """A draft's values as the form shows them, flat, ids and codes by name: compared field by field with the
    form sent, and shown in the conflict table."""
    activities = {a.id: a.title for a in ctx["activities"]}
    buildings = {b.id: b.name for b in ctx["buildings"]}
    audience = v.get("audience") or {}
    return {"kind": {"policy": "政策通知", "activity": "活动通知"}.get(v.get("kind"), v.get("kind")),
            "activity_id": activities.get(v.get("activity_id"), v.get("activity_id")),
            "title": v.get("title"), "summary": v.get("summary"), "page": v.get("page"),
            "template_fields_text": "\n".join(line.strip() for line in (v.get("template_fields_text") or "")
                                              .strip().splitlines()),
            "all": bool(audience.get("all")),
            "categories": sorted(CATEGORIES.get(c, c) for c in audience.get("categories") or []),
            "building_ids": sorted(buildings.get(b, str(b)) for b in audience.get("building_ids") or []),
            "industries": list(audience.get("industries") or []), "tags": list(audience.get("tags") or []),
            "verified_only": bool(audience.get("verified_only")),
            "registrants_of": activities.get(audience.get("registrants_of"), audience.get("registrants_of"))}


def _notice_values(n) -> dict[str, Any]:
    """A draft as the form shows it. Template values made from the title and summary are left out of their box:
    sent back, they would stay as they were after the title was corrected (made again when the box is empty)."""
    own = not broadcast._made_from_text(n)
    return {"kind": n.kind, "activity_id": n.activity_id, "title": n.title, "summary": n.summary, "page": n.page,
            "template_fields_text": "\n".join(f"{k}={val}" for k, val in (n.template_fields or {}).items()) if own
            else "", "audience": dict(n.audience or {})}


def _about_activity(a: Activity) -> dict[str, Any]:
    """The composer filled in for announcing `a` (the activity page's “通知订阅者”): to the subscribers of its
    category, narrowed to its audience's buildings, industries, tags and verified contacts only, so nobody is told of
    what they cannot join."""
    from .services import SHANGHAI

    local = a.starts_at.astimezone(SHANGHAI)
    title = f"新活动：{a.title}"[:100]
    summary = f"{local.month}月{local.day}日 {local:%H:%M}，{a.place or '详见活动页面'}，欢迎报名。"
    return {"kind": "activity", "activity_id": a.id, "title": title, "summary": summary,
            "template_fields_text": _activity_template_text(a, title, summary),
            "audience": {"categories": [a.category], "building_ids": list(a.audience_building_ids or []),
                         "industries": list(a.audience_industries or []), "tags": list(a.audience_tags or []),
                         "verified_only": bool(a.verified_only)}}


def _activity_template_text(a: Activity, title: str, summary: str) -> str:
    """The subscribe-message values with the activity's start as the time (made from the text alone, the time is the
    moment the notice was written, which a subscriber reads as the activity's), one “key=value” a line."""
    from ..notices.kinds import get_kind, render
    from ..wechat.templates import TemplateFieldError

    kind = get_kind(broadcast.NOTICE_KIND)
    if kind is None or not kind.template_id:
        return ""
    try:
        data = render(kind, {"title": title, "time": a.starts_at.isoformat(), "note": summary}, title=title,
                      body=summary)
    except TemplateFieldError:
        return ""  # a template without these fields: the composer makes them from the text as before
    return "\n".join(f"{k}={v}" for k, v in data.items())


@bp.get("/notices/<int:notice_id>")
@console_required(StaffRole.DEPT)
def notice(notice_id: int):
    with session_scope() as s:
        n = broadcast._get(s, notice_id)
        estimate = broadcast.reach(s, n) if n.status == "draft" else None
        prog = broadcast.progress(s, notice_id)
    return render_template("console/notices/show.html", n=n, reach=estimate, p=prog,
                           labels=broadcast.STATUS_LABELS, categories=CATEGORIES)


@bp.get("/notices/<int:notice_id>/progress.json")
@console_required(StaffRole.DEPT)
def progress_json(notice_id: int):
    with session_scope() as s:
        return jsonify(broadcast.progress(s, notice_id))


@bp.post("/notices/<int:notice_id>/<any(test,publish,resume,stop):action>")
@console_required(StaffRole.STAFF)
def notice_action(notice_id: int, action: str):
    try:
        with session_scope() as s:
            if action == "test":
                result = broadcast.send_test(s, current_actor(), notice_id)
                if not result["sent"]:  # skipped (no test recipient linked): nothing went out, said as a refusal
                    raise Conflict(result["reason"], code="test_skipped")
                message = "测试消息已发给您的测试接收人。"
            elif action == "publish":
                broadcast.publish(s, current_actor(), notice_id)
                message = "已发布，正在发送。"
            elif action == "stop":
                _, stopped_now = broadcast.stop(s, current_actor(), notice_id)
                reached = broadcast.progress(s, notice_id)["reached"]
                message = (f"已停止发送：停止前已发出订阅消息 {reached} 人，其余不再发送。" if stopped_now
                           else "这条通知已经停止发送了。")
            else:
                message = ""
                status = broadcast._get(s, notice_id).status
                if status == "stopped":
                    raise Conflict(broadcast.STOPPED_FOR_GOOD)
                # Pressed on a draft, or on a notice finished meanwhile (a progress page left open in another tab):
                # it answered “已重新启动发送” and logged a restart of something that was not going out.
                if status == "draft":
                    raise Conflict("这条通知还是草稿，尚未发布，无需重新启动；确认无误后请点“确认发布”。",
                                   code="not_sending")
                if status == "done":
                    raise Conflict("这条通知已全部发送完成，无需重新启动。", code="already_finished")
        if action == "resume":  # after a Redis restart or dead workers: recover leases, restart the jobs
            r = broadcast.sweep_leases(force=True, actor=current_actor(), notice_id=notice_id)
            message = f"已重新启动发送（收回 {r['requeued'] + r['returned']} 条未发出的领取）。"
    except AppError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
        return redirect(url_for("notices_console.notice", notice_id=notice_id))
    flash(message)
    return redirect(url_for("notices_console.notice", notice_id=notice_id))


@bp.post("/notices/test-recipient")
@console_required(StaffRole.STAFF)
def test_recipient():
    # Full-width digits (a Chinese input method's ２３) are the same number.
    raw = unicodedata.normalize("NFKC", request.form.get("user_id", "")).strip()
    user_id = row_id(raw)
    if raw and user_id is None:  # a typo must not clear the recipient already set
        flash("用户编号应为正整数，测试接收人没有改动。", "error")
        session[_TYPED_TEST_USER] = raw[:64]
        return redirect(url_for("notices_console.notices"))
    try:
        with session_scope() as s:
            broadcast.set_test_recipient(s, current_actor(), user_id)
        flash("测试接收人已保存。" if raw else "已清除测试接收人。")
    except AppError as exc:
        flash(exc.message, "error")
        session[_TYPED_TEST_USER] = raw[:64]  # the list showed the saved number: what was typed had to be typed again
    return redirect(url_for("notices_console.notices"))


@bp.post("/notices/link-code")
@console_required(StaffRole.STAFF)
def link_code():
    """A code to send from one's own WeChat: it links that WeChat as the test recipient (no user number typed)."""
    code = broadcast.issue_link_code(current_app.extensions["wxapp"].redis, current_actor().id)
    flash(f"请在 {broadcast.LINK_CODE_TTL // 60} 分钟内，用您自己的微信在公众号或小程序的在线咨询里发送：绑定 {code}"
          "（只能用一次；绑定后测试通知和办不成事提醒会发到这个微信）。")
    return redirect(url_for("notices_console.notices"))


add_nav("notices_console.notices", "通知推送", StaffRole.DEPT, "白领服务")
