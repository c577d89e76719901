"""Console pages for activities: list, editor, registrations (XLSX export), check-in, attendance statistics."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from sqlalchemy import func, select

from ..audit import audit
from ..auth.guard import console_required, current_actor
from ..auth.models import ROLE_RANK, StaffRole
from ..console import DASHBOARD_CARDS, add_nav, once, qrcode_button
from ..console.stale import differences, seen_stamp
from ..db import session_scope, utcnow
from ..edits import StaleEdit, locked_for_edit, refuse_stale
from ..enterprises.importer import FORMULA_CHARS
from ..enterprises.models import Building
from ..errors import AppError, ValidationError
from ..http import loads
from ..validation import Field, row_ids, validate
from . import checkin, services
from .models import (
    ACTIVITY_STATUS_LABELS,
    CATEGORIES,
    QUESTION_TYPES,
    Activity,
    ActivityStatus,
    Registration,
    RegStatus,
)

bp = Blueprint("activities_console", __name__, url_prefix="/console")

STATUS_NAMES = ACTIVITY_STATUS_LABELS
_DT_FIELDS = ("starts_at", "ends_at", "registration_opens_at", "registration_closes_at", "cancel_deadline")
_SPLIT = re.compile(r"[,，、\s]+")
# Industries are matched whole, and standard names hold 、 (交通运输、仓储和邮政业): split on commas, semicolons and
# line breaks only.
_LIST_SPLIT = re.compile(r"\s*[,，;；\n]\s*")


@bp.context_processor
def _perms() -> dict[str, Any]:
    """Department accounts read activities and check people in; editing and deciding is for staff."""
    staff = getattr(g, "staff", None)
    return {"can_edit": staff is not None and ROLE_RANK[StaffRole(staff.role)] >= ROLE_RANK[StaffRole.STAFF]}


def _local(dt: datetime | None) -> str:
    return dt.astimezone(services.SHANGHAI).strftime("%Y-%m-%d %H:%M") if dt else ""


def _local_input(dt: datetime | None) -> str:
    return dt.astimezone(services.SHANGHAI).strftime("%Y-%m-%dT%H:%M") if dt else ""


@bp.app_template_filter("local_time")
def _local_time_filter(dt: datetime | None) -> str:
    return _local(dt)


def _form_data() -> dict[str, Any]:
    """The editor form as the service's input (datetime-local values are Shanghai time)."""
    f = request.form
    data: dict[str, Any] = {}
    for name in ("category", "title", "description", "address", "cover_image", "status", "cancel_reason"):
        if name in f:
            data[name] = f.get(name, "")
    for name in _DT_FIELDS + ("capacity", "per_enterprise_cap", "building_id"):
        value = f.get(name, "").strip()
        data[name] = value or None
    for name in ("waitlist_enabled", "verified_only", "requires_approval"):
        data[name] = name in f
    data["audience_building_ids"] = row_ids(f.getlist("audience_building_ids"))
    data["audience_industries"] = [x for x in _LIST_SPLIT.split(f.get("audience_industries", "")) if x.strip()]
    data["audience_tags"] = [x for x in _SPLIT.split(f.get("audience_tags", "")) if x]
    raw = f.get("questions", "").strip()
    if raw:
        try:
            data["questions"] = loads(raw)  # not json.loads: NaN, "\ud800" or [[[[... would get through or fail
        except ValueError:
            raise ValidationError("报名问题应为 JSON 列表，例如 [{\"key\":\"size\",\"label\":\"尺码\",\"type\":\"choice\","
                                  "\"options\":[\"S\",\"M\"]}]", fields={"questions": "格式不对"}) from None
    else:
        data["questions"] = []
    return data


def _choices(s) -> dict[str, Any]:
    return {"categories": CATEGORIES, "buildings": s.scalars(select(Building).order_by(Building.name)).all(),
            "question_types": QUESTION_TYPES, "status_names": STATUS_NAMES}


@bp.get("/activities")
@console_required(StaffRole.DEPT)
def activities():
    q = {"category": request.args.get("category") or None,
         "page": max(1, min(request.args.get("page", 1, type=int) or 1, 100000)),
         "per_page": 30, "include_past": True}
    if q["category"] not in CATEGORIES:
        q["category"] = None
    with session_scope() as s:
        items, total = services.list_activities(s, q, staff=True)
    return render_template("console/activities/list.html", items=items, total=total, q=q, categories=CATEGORIES,
                           status_names=STATUS_NAMES, span=_span)


def _span(starts_iso: str, ends_iso: str) -> str:
    """“2026-12-09 12:00 – 13:00”, or the end's date too when it is another day (past midnight, several days)."""
    starts, ends = datetime.fromisoformat(starts_iso), datetime.fromisoformat(ends_iso)
    same_day = starts.astimezone(services.SHANGHAI).date() == ends.astimezone(services.SHANGHAI).date()
    return f"{_local(starts)} – {_local(ends)[11:] if same_day else _local(ends)}"


@bp.route("/activities/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def new_activity():
    return _editor(None)


@bp.route("/activities/<int:activity_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def edit_activity(activity_id: int):
    return _editor(activity_id)


def _editor(activity_id: int | None):
    with session_scope() as s:
        activity = services.get_activity(s, activity_id, staff=True) if activity_id is not None else None
        ctx = _choices(s)
        values = _values(activity)
        # Told in the question asked before the status is set to 已取消: how many people that notifies.
        ctx["waiting"] = s.scalar(select(func.count(Registration.id)).where(
            Registration.activity_id == activity.id, Registration.status.in_(services.STILL_TO_COME))) or 0 \
            if activity is not None else 0
        # Beside 满员后可候补: unticking it releases those waiting (update_activity), and staff should know before.
        ctx["queued"] = services.waitlist_length(s, activity.id) if activity is not None else 0
        if activity is not None:
            from ..wechat.qrcodes import known_qrcode

            ctx["qrcode"] = known_qrcode(s, "activity", activity.id)
    if request.method == "GET":
        return render_template("console/activities/edit.html", activity=activity, v=values, errors={},
                               stamp=activity.updated_at.isoformat() if activity is not None else None, **ctx)
    if activity is None and (first := once.claim(current_actor().id)) is not None:
        # The same 新建活动 form sent again (a double-click): its first post's activity, not another.
        if not first:
            flash("这个活动正在保存，请稍候在活动列表中查看，不要重复提交。")
            return redirect(url_for("activities_console.activities"))
        flash("这个活动已经保存过了（表单提交了两次），没有再建一个。")
        return redirect(url_for("activities_console.registrations", activity_id=int(first)))
    seen, conflict = seen_stamp(), []
    try:
        with session_scope() as s:
            if activity is not None:
                # Before update_activity tells the registrants anything: a page loaded before a colleague saved
                # the activity would put back what they changed (every box is sent). What differs is shown
                # beside theirs, and the page moves to their version.
                current = locked_for_edit(s, Activity, activity.id, "没有找到这个活动，可能已被删除。")
                conflict = differences(_shown(_values(current), ctx), _shown(_typed(values), ctx), LABELS)
                stamp = current.updated_at.isoformat()
                refuse_stale(current, conflict, seen, "活动信息")
            data = _form_data()
            for name in _DT_FIELDS if activity is not None else ():
                # The form shows times to the minute: one sent back as shown is unchanged. Taken as typed, a
                # start set through the API with seconds moved, and every registrant was told it had changed.
                if data.get(name) is not None and data[name] == _local_input(getattr(activity, name)):
                    del data[name]
            if activity is None:
                saved = services.create_activity(s, current_actor(), data)
            else:
                # The form sends every box: one left empty removes that optional setting (报名截止, 所在楼宇...).
                # (Judged on the form itself: a time sent back unchanged was taken out of data above.)
                cleared = [name for name in services.CLEARABLE
                           if name in request.form and not request.form.get(name, "").strip()]
                waiting = s.scalar(select(func.count(Registration.id)).where(
                    Registration.activity_id == activity.id, Registration.status.in_(services.STILL_TO_COME))) or 0
                queued = _waitlist(s, activity.id)
                saved = services.update_activity(s, current_actor(), activity.id, data, clear=cleared)
            saved_id = saved.id
            done = _saved_text(activity, saved, waiting) if activity is not None else _created_text(saved)
            if services.open_past_cancel_deadline(saved):
                # A deadline typed in the past (a wrong month) locked in everyone registering from now on, unsaid.
                done += ("注意：取消报名截止时间已过而报名仍开放，现在报名的人不能在线取消（小程序会提醒报名者）；"
                         "如非有意，请修改取消报名截止时间。")
            if activity is not None and activity.waitlist_enabled and not saved.waitlist_enabled and queued:
                # 候补 switched off releases those waiting (update_activity): staff are told that they were told.
                released = s.scalar(select(func.count(Registration.id)).where(
                    Registration.id.in_(queued), Registration.status == RegStatus.CANCELLED.value)) or 0
                if released and saved.status == ActivityStatus.PUBLISHED.value:
                    done += f"候补已关闭，已通知 {released} 位候补者取消候补。"
            if activity is not None and saved.status != ActivityStatus.CANCELLED.value and any(
                    getattr(activity, k) != getattr(saved, k) for k in services.AUDIENCE_FIELDS):
                # Narrowed after people registered: those now outside it keep their place (staff decide), and staff
                # heard nothing of them.
                outside = services.out_of_audience(s, saved)
                if outside:
                    done += (f"注意：有 {outside} 位报名者不在新的报名范围内，报名没有自动取消，"
                             "如需取消，请在报名名单中处理。")
                    queued_outside = services.out_of_audience(s, saved, (RegStatus.WAITLISTED.value,))
                    if queued_outside:
                        # The waitlist promotes people inside the audience first (services.promote).
                        done += f"其中 {queued_outside} 位在候补中：有名额空出时，范围内的候补者先递补。"
    except BaseException as exc:
        if activity is None:
            once.release(current_actor().id)
        if not isinstance(exc, AppError) or exc.status in {403, 404}:
            raise
        if not isinstance(exc, StaleEdit):  # the page stays on its version: a colleague's save is still caught
            stamp = seen.isoformat() if seen else None
        return render_template("console/activities/edit.html", activity=activity, v=_typed(values),
                               error=exc.message, errors=exc.fields, conflict=conflict, stamp=stamp,
                               **ctx), exc.status
    if activity is None:
        once.saved(current_actor().id, saved_id)
    flash(done)
    return redirect(url_for("activities_console.registrations", activity_id=saved_id))


@bp.post("/activities/<int:activity_id>/qrcode")
@console_required(StaffRole.STAFF)
def activity_qrcode(activity_id: int):
    """The activity's poster QR code (公众号带参数二维码): made once, then shown on the activity's page."""
    return qrcode_button("activity", activity_id, url_for(".edit_activity", activity_id=activity_id),
                         made="活动二维码已生成，可下载后印在活动海报上。", shown="这个活动的二维码之前已生成，下面就是。")


def _created_text(saved: Activity) -> str:
    """Publishing tells nobody by itself: the subscribers of the category hear of it from a notice staff send."""
    if saved.status != ActivityStatus.PUBLISHED.value:
        return "活动已保存。"
    return f"活动已发布。订阅了“{saved.category_label}”的用户还不知道，可点“通知订阅者”给他们发通知。"


def _saved_text(before: Activity, saved: Activity, waiting: int) -> str:
    """What the save did for the registrants: cancelling and moving tell each of them (update_activity), and staff
    who read only “活动已保存” could not know whether anyone had been told. A draft published here gets the hint a
    published-at-once activity gets: its category's subscribers do not know yet."""
    if all(getattr(before, f.name) == getattr(saved, f.name) for f in services.ACTIVITY_FIELDS):
        return "没有改动，活动保持原样。"
    if before.status == ActivityStatus.DRAFT.value and saved.status == ActivityStatus.PUBLISHED.value:
        return _created_text(saved)
    if not waiting:
        return "活动已保存。"
    if saved.status == ActivityStatus.CANCELLED.value and before.status != ActivityStatus.CANCELLED.value:
        return f"活动已取消，已通知 {waiting} 位报名者。"
    moved = any(getattr(before, k) != getattr(saved, k) for k in ("starts_at", "ends_at", "address", "building_id"))
    if saved.status == ActivityStatus.PUBLISHED.value and moved:
        return f"活动已保存，已把新的时间和地点通知 {waiting} 位报名者。"
    return "活动已保存。"


def _values(a: Activity | None) -> dict[str, Any]:
    if a is None:
        return {"waitlist_enabled": True, "status": "published", "category": "lunch_hour", "questions": "",
                "audience_building_ids": []}
    v: dict[str, Any] = {k: getattr(a, k) for k in ("category", "title", "description", "address", "capacity",
                                                     "per_enterprise_cap", "building_id", "cover_image", "status",
                                                     "waitlist_enabled", "verified_only", "requires_approval")}
    for k in _DT_FIELDS:
        v[k] = _local_input(getattr(a, k))
    v["audience_building_ids"] = list(a.audience_building_ids or [])
    v["audience_industries"] = "，".join(a.audience_industries or [])
    v["audience_tags"] = "、".join(a.audience_tags or [])
    v["questions"] = json.dumps(a.questions, ensure_ascii=False) if a.questions else ""
    return v


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """The editor form as sent, in _values' shape (kept in the page when the save is refused)."""
    values = {**values, **{k: request.form.get(k, "") for k in request.form}}
    values["audience_building_ids"] = row_ids(request.form.getlist("audience_building_ids"))
    for name in ("waitlist_enabled", "verified_only", "requires_approval"):  # a box left unticked is not sent
        values[name] = name in request.form
    return values


LABELS = {"category": "活动类别", "status": "状态", "title": "活动名称", "description": "活动介绍",
          "building_id": "所在楼宇", "address": "地点", "starts_at": "开始时间", "ends_at": "结束时间",
          "registration_opens_at": "报名开始", "registration_closes_at": "报名截止", "cancel_deadline": "取消截止",
          "capacity": "名额", "per_enterprise_cap": "每家企业上限", "waitlist_enabled": "满员后可候补",
          "requires_approval": "报名需审核", "audience_building_ids": "面向楼宇", "audience_industries": "面向行业",
          "audience_tags": "面向企业标签", "verified_only": "仅限已核实的企业联系人", "questions": "报名问题",
          "cover_image": "封面图片地址"}


def _shown(v: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The editor's values as the page shows them, codes and ids by name and lists as one line: compared field by
    field with the form sent, and shown in the conflict table."""
    buildings = {str(b.id): b.name for b in ctx["buildings"]}
    out = {k: v.get(k) for k in LABELS}
    out["category"] = CATEGORIES.get(v.get("category"), v.get("category"))
    out["status"] = STATUS_NAMES.get(v.get("status"), v.get("status"))
    out["building_id"] = buildings.get(str(v.get("building_id") or ""), v.get("building_id"))
    out["audience_building_ids"] = sorted(buildings.get(str(b), str(b)) for b in v.get("audience_building_ids") or [])
    out["audience_industries"] = "，".join(x for x in _LIST_SPLIT.split(v.get("audience_industries") or "") if x)
    out["audience_tags"] = "、".join(x for x in _SPLIT.split(v.get("audience_tags") or "") if x)
    for k in _DT_FIELDS:
        out[k] = (v.get(k) or "").replace("T", " ")
    return out


def _registration_rows(s, activity: Activity) -> tuple[list[dict[str, Any]], list[dict]]:
    """The roster's rows, and the questions their answers are shown under (one removed after it was answered too)."""
    out = []
    full = services.sees_phones(g.staff.role)  # a department account reads 138****8000
    roster = services.registration_roster(s, activity.id)
    questions = services.roster_questions(s, activity, (reg.answers for reg, *_ in roster))
    for reg, user, ent, place in roster:
        out.append({"id": reg.id, "status": reg.status, "status_label": services.roster_label(reg, place),
                    "user": services.roster_name(user), "phone": services.roster_phone(user.phone, full),
                    "enterprise": ent.name if ent else "", "building": user.building.name if user.building else "",
                    "answers": services.roster_answers(reg.answers, questions, full),
                    "created_at": _local(reg.created_at),
                    "checked_in_at": _local(reg.checked_in_at), "no_shows": user.no_show_count})
    return out, questions


@bp.get("/activities/<int:activity_id>/registrations")
@console_required(StaffRole.DEPT)
def registrations(activity_id: int):
    with session_scope() as s:
        activity = services.get_activity(s, activity_id, staff=True)
        rows, questions = _registration_rows(s, activity)
        taken, queued = services.seats_taken(s, activity_id), services.waitlist_length(s, activity_id)
        stats = services.attendance_stats(s, activity_id)
    return render_template("console/activities/registrations.html", activity=activity, rows=rows, taken=taken,
                           queued=queued, stats=stats, status_names=STATUS_NAMES,
                           question_labels={q["key"]: q["label"] for q in questions},
                           started=utcnow() >= activity.starts_at,
                           checkin_open=utcnow() >= activity.starts_at - checkin.CHECKIN_OPENS_BEFORE)


@bp.get("/activities/<int:activity_id>/registrations.xlsx")
@console_required(StaffRole.DEPT)
def export_registrations(activity_id: int):
    from openpyxl import Workbook

    with session_scope() as s:
        activity = services.get_activity(s, activity_id, staff=True)
        rows, questions = _registration_rows(s, activity)
        title = activity.title
        # A list of names and phone numbers leaves the system: who took it, and when, is on record.
        audit(s, current_actor(), "activity.registrations_exported", activity, rows=len(rows))
    wb = Workbook()
    ws = wb.active
    ws.title = "报名名单"
    ws.append(["报名编号", "姓名/昵称", "手机", "企业", "楼宇", "状态", "报名时间", "签到时间"]
              + [_cell(ws, q["label"]) for q in questions])
    for r in rows:
        answers = [r["answers"].get(q["key"], "") for q in questions]
        ws.append([r["id"], *(_cell(ws, r[k]) for k in ("user", "phone", "enterprise", "building")),
                   r["status_label"], r["created_at"], r["checked_in_at"]]
                  + [_cell(ws, _answer_text(a)) for a in answers])
    buf = io.BytesIO()
    wb.save(buf)
    from urllib.parse import quote

    name = quote(f"{title}-报名名单.xlsx")
    return Response(buf.getvalue(), mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f"attachment; filename=registrations.xlsx; filename*=UTF-8''{name}"})


def _answer_text(answer: Any) -> Any:
    """An answer as the registrations page shows it: 是 / 否 for a yes/no question (Excel showed TRUE / FALSE),
    choices joined with 、."""
    if isinstance(answer, bool):
        return "是" if answer else "否"
    return "、".join(map(str, answer)) if isinstance(answer, list) else answer


def _cell(ws: Any, value: Any) -> Any:
    if isinstance(value, str):
        # Control characters (a vertical tab pasted from Word) cannot be held by a workbook: openpyxl refuses
        # the whole export.
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    # Spreadsheet formula injection: text starting with = + - @ is stored as text, never evaluated, and shown as
    # typed (an apostrophe put in front of it was read as part of a phone number or an answer).
    if isinstance(value, str) and value.startswith(FORMULA_CHARS):
        cell = Cell(ws, value=value)
        cell.data_type = "s"
        cell.quotePrefix = True  # still text when staff edit the cell in Excel
        return cell
    return value


NOTE_FORM = (Field("note", "str", "说明", max_len=200, default=""),)  # as the API's DECIDE_FIELDS


@bp.post("/registrations/<int:registration_id>/<any(approve,reject,cancel,attended,admit):action>")
@console_required(StaffRole.STAFF)
def registration_action(registration_id: int, action: str):
    try:
        note = validate(request.form, NOTE_FORM)["note"]
        with session_scope() as s:
            if action == "cancel":
                queued = _waitlisted(s, registration_id)
                reg = services.cancel_registration(s, current_actor(), registration_id)
                done = _cancelled_text(s, reg, queued)
            elif action == "attended":
                reg = checkin.mark_attended(s, current_actor(), registration_id, note)
            elif action == "admit":
                reg = checkin.admit_waitlisted(s, current_actor(), registration_id, note)
            else:
                reg = services.decide(s, current_actor(), registration_id, action == "approve", note)
            activity_id = reg.activity_id
    except AppError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
        back = request.referrer or ""  # the page the form was on; a Referer naming another site is not followed
        return redirect(back if back.startswith(request.host_url + "console/") else
                        url_for("activities_console.activities"))
    flash(done if action == "cancel" else {"approve": "已通过。", "reject": "已驳回。",
                                           "attended": "已更正为已到场。", "admit": "已现场候补入场并签到。"}[action])
    return redirect(url_for("activities_console.registrations", activity_id=activity_id))


def _waitlisted(s, registration_id: int) -> set[int]:
    """The waitlist of the registration's activity before a cancel, to tell who it moved up."""
    reg = s.get(Registration, registration_id)
    if reg is None:
        return set()
    return _waitlist(s, reg.activity_id)


def _waitlist(s, activity_id: int) -> set[int]:
    return set(s.scalars(select(Registration.id).where(Registration.activity_id == activity_id,
                                                       Registration.status == RegStatus.WAITLISTED.value)))


def _cancelled_text(s, reg: Registration, queued: set[int]) -> str:
    """What the cancel did: a freed seat goes to the waitlist's head, but only a seat, only before the start and
    only when someone waits; saying “已递补” every time had staff believe someone was told who was not."""
    def name(r: Registration) -> str:
        return r.user.nickname or f"用户{r.user_id}"

    moved = [r for r in (s.get(Registration, i) for i in sorted(queued)) if r is not None
             and r.status in (RegStatus.CONFIRMED.value, RegStatus.PENDING_APPROVAL.value)]
    if not moved:
        return f"已取消{name(reg)}的报名。"
    names = "、".join(name(r) + ("（待审核）" if r.status == RegStatus.PENDING_APPROVAL.value else "") for r in moved)
    return f"已取消{name(reg)}的报名，空出的名额已递补给候补：{names}。"


@bp.route("/checkin", methods=["GET", "POST"])
@console_required(StaffRole.DEPT)
def checkin_page():
    with session_scope() as s:
        choices = [(a.id, f"{_local(a.starts_at).replace('T', ' ')} {a.title}") for a in checkin.open_for_checkin(s)]
    # The activity at this door: kept from scan to scan; preselected when only one is open.
    chosen = row_ids([request.values.get("activity_id", "")])
    activity_id = chosen[0] if chosen else (choices[0][0] if len(choices) == 1 and request.method == "GET" else None)
    page = {"choices": choices, "activity_id": activity_id}
    if request.method == "GET":
        return render_template("console/activities/checkin.html", result=None, error=None, **page)
    token = (request.form.get("token") or "").strip()[:100]
    try:
        with session_scope() as s:
            result = checkin.check_in(s, current_actor(), current_app.extensions["wxapp"].settings.secret_key, token,
                                      activity_id=activity_id)
    except AppError as exc:
        if exc.status >= 500:
            raise
        return render_template("console/activities/checkin.html", result=None, error=exc.message, **page), exc.status
    return render_template("console/activities/checkin.html", result=result, error=None, **page)


@bp.get("/activities/stats")
@console_required(StaffRole.DEPT)
def stats():
    with session_scope() as s:
        data = services.attendance_stats(s)
    return render_template("console/activities/stats.html", stats=data)


def _card_pending() -> dict | None:
    """Registrations waiting for a staff decision (报名需审核) on activities still to end; unseen, they wait until
    the activity ends and are then cancelled unanswered. Department accounts decide nothing: no card."""
    if ROLE_RANK[StaffRole(g.staff.role)] < ROLE_RANK[StaffRole.STAFF]:
        return None
    with session_scope() as s:
        rows = s.execute(select(Activity.id, func.count(Registration.id))
                         .join(Registration, Registration.activity_id == Activity.id)
                         .where(Registration.status == RegStatus.PENDING_APPROVAL.value,
                                Activity.status == ActivityStatus.PUBLISHED.value, Activity.ends_at > utcnow())
                         .group_by(Activity.id, Activity.starts_at).order_by(Activity.starts_at, Activity.id)).all()
    if not rows:
        return {"title": "待审核报名", "value": 0, "hint": "没有等待审核的报名",
                "href": url_for("activities_console.activities")}
    return {"title": "待审核报名", "value": sum(n for _, n in rows),
            "hint": f"涉及 {len(rows)} 个活动，点开最近开始的一个",
            "href": url_for("activities_console.registrations", activity_id=rows[0][0])}


if all(getattr(c, "__qualname__", "") != _card_pending.__qualname__ or getattr(c, "__module__", "") != __name__
       for c in DASHBOARD_CARDS):
    DASHBOARD_CARDS.append(_card_pending)
add_nav("activities_console.activities", "活动", StaffRole.DEPT, "白领服务")
add_nav("activities_console.checkin_page", "签到", StaffRole.DEPT, "白领服务")

