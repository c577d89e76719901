"""Console pages for appeals: queue, triage, detail with actions, catalogue, holiday table, weekly report."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select

from ..audit import audit
from ..auth.guard import console_required, current_actor
from ..auth.models import ROLE_RANK, StaffRole, StaffUser
from ..console import DASHBOARD_CARDS, add_nav, safe_console_path, without_refused_filters
from ..db import session_scope, utcnow
from ..enterprises.models import Building, Enterprise, Grid
from ..errors import AppError, NotFound, ValidationError
from ..validation import DB_INT_MAX, Field, clean_text, row_id, validate
from . import intake, metrics, reports, services
from .calendar import TZ, missing_holiday_years
from .models import Appeal, Holiday
from .states import LABELS, OPEN, AppealStatus, can_move

bp = Blueprint("appeals_console", __name__, url_prefix="/console")

FILTERS = (
    Field("status", "str", "状态", max_len=200), Field("category", "str", "类别", max_len=32),
    Field("department", "str", "部门", max_len=64), Field("grid_id", "int", "网格", min=1),
    Field("building_id", "int", "楼宇", min=1), Field("overdue", "bool", "超期"), Field("due_soon", "bool", "临期"),
    # the 企业问题清单's groups (its "在诉求列表中查看全部" links): an enterprise, a name typed and not verified, none
    Field("enterprise_id", "int", "企业", min=1), Field("no_enterprise", "bool", "未关联企业"),
    Field("typed_enterprise", "str", "填写的企业名称", max_len=200),
    Field("pending_requests", "bool", "待审核退单/延期"),
    Field("escalated", "bool", "办不成事"), Field("escalation_open", "bool", "办不成事待处理"),
    Field("triage", "bool", "待分拣"), Field("open_only", "bool", "在办"),
    Field("q", "str", "关键词", max_len=100), Field("page", "int", "页码", min=1, default=1),
)
ACTION_LABELS = {k: v[2] for k, v in services.ACTIONS.items()}
# Where the workflow lets an appeal become a duplicate (not while the enterprise owes material or 会办 runs).
MERGEABLE = frozenset(s for s in OPEN if can_move(s, AppealStatus.DUPLICATE))
# Where an accepted 退单 can re-route the appeal (交办 again): not in 会办, not once it is 办结 or ended.
REROUTABLE = frozenset({AppealStatus.ASSIGNED} | {s for s in OPEN if can_move(s, AppealStatus.ASSIGNED)})


@bp.context_processor
def _ctx() -> dict[str, Any]:
    staff = getattr(g, "staff", None)
    rank = ROLE_RANK[StaffRole(staff.role)] if staff is not None else 0
    return {"status_labels": LABELS, "is_staff": rank >= ROLE_RANK[StaffRole.STAFF],
            "is_admin": rank >= ROLE_RANK[StaffRole.ADMIN], "local": _local, "action_labels": ACTION_LABELS}


def _local(value) -> str:
    """Shanghai time for a datetime or an ISO string."""
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


def _args(fields) -> dict[str, Any]:
    return validate({k: v for k, v in request.args.items() if v != ""}, fields)


@bp.get("/appeals")
@console_required(StaffRole.DEPT)
def queue():
    now = utcnow()
    with session_scope() as s:
        def attempt(raw: dict[str, str]):
            args = validate(raw, FILTERS)
            return args, services.list_for_staff(s, current_actor(), per_page=30, now=now, **args)

        (args, page), note = without_refused_filters({k: v for k, v in request.args.items() if v != ""}, attempt)
        soon_before = services.due_soon_before(services.work_calendar(s), now)
        enterprise = s.get(Enterprise, args["enterprise_id"]) if args.get("enterprise_id") else None
        return render_template("console/appeals/list.html", page=page, args=args,
                               enterprise_name=enterprise.name if enterprise else "",
                               due_soon=lambda a: services.is_due_soon(a, soon_before, now),
                               link_args={k: v for k, v in args.items() if v not in (None, "") and k != "page"},
                               categories=services.categories(s, active_only=False),
                               departments=_departments(s), grids=list(s.scalars(select(Grid).order_by(Grid.name))),
                               buildings=list(s.scalars(select(Building).order_by(Building.name))),
                               filter_error=note), 422 if note else 200


# The triage page lists this many, the longest waiting first (their deadlines run from submission); the page says
# how many more there are. Newest first, a backlog past 100 hid its oldest appeals with nothing said.
TRIAGE_PER_PAGE = 100


@bp.get("/appeals/triage")
@console_required(StaffRole.STAFF)
def triage():
    with session_scope() as s:
        page = services.list_for_staff(s, current_actor(), triage=True, open_only=True, per_page=TRIAGE_PER_PAGE,
                                       oldest_first=True)
        suggestions = {c.id: c for c in services.categories(s, active_only=False)}
        return render_template("console/appeals/triage.html", page=page, suggestions=suggestions,
                               categories=services.categories(s))


@bp.get("/appeals/<int:appeal_id>")
@console_required(StaffRole.DEPT)
def detail(appeal_id: int):
    return _detail_page(appeal_id)


def _detail_page(appeal_id: int, typed=None, status: int = 200):
    """The appeal page; `typed` is a failed action's form, put back into that action's boxes."""
    actor = current_actor()
    dept_only = services._dept_only(actor)
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, actor)
        data = services.detail_for_staff(s, appeal, actor)
        # A department that only holds a 会办 / 整改 task here does its task and adds notes (services.perform):
        # the handling forms, and the other departments' tasks, are not its to use.
        handles = not dept_only or services._handles(actor, appeal)
        # Its department only suggested (no 交办 yet): it reads and notes until the centre gives it the appeal.
        not_given = dept_only and handles and not services._handed_to(s, actor, appeal)
        handles = handles and not not_given
        staff = list(s.scalars(select(StaffUser).where(StaffUser.active.is_(True)).order_by(StaffUser.username)))
        names = {st.id: st.display_name or st.username for st in staff}
        # 延期 this account asked for and may not grant itself (services.may_approve_own_extension): 不同意 only.
        own_extensions = set() if dept_only or services.may_approve_own_extension(s, actor) else {
            x["id"] for x in data["extensions"] if x["status"] == "pending"
            and services.own_extension_request(s, actor, s.get(services.AppealExtension, x["id"]))}
        # where a staff member may correct the building (set_building): every building, with the grid serving it
        buildings = list(s.scalars(select(Building).order_by(Building.name))) if not dept_only else []
        return render_template("console/appeals/detail.html", a=appeal, d=data, staff=staff, names=names,
                               buildings=buildings,
                               categories=services.categories(s), departments=_departments(s),
                               open_states=OPEN, merge_states=MERGEABLE, reroutable_states=REROUTABLE,
                               handles=handles, not_given=not_given, own_department=actor.department if dept_only else None,
                               S=AppealStatus, own_extensions=own_extensions,
                               rating_ends=services.rating_window_ends(appeal), now=utcnow(),
                               typed_form=typed or {}), status


NUMBER_LABELS = {"version": "页面版本", "handler_id": "承办人", "task_id": "会办任务", "return_id": "退单申请",
                 "extension_id": "延期申请", "building_id": "楼宇"}


def _number(value: str | None) -> int | None:
    """A whole number typed into a form; its range is checked by the service's fields (a number too long to
    be valid stays too large rather than disappearing, so a bad version is refused, not skipped)."""
    value = unicodedata.normalize("NFKC", value or "").strip()  # full-width １２ from a Chinese input method
    if not value.isascii() or not value.isdigit():
        return None
    return int(value) if len(value) <= 12 else DB_INT_MAX + 1


def _task_days(value: str | None) -> int:
    """The 会办 form's 期限: 3 when left empty; a typed 0 (or anything not a whole number) was taken as 3 without a
    word, and the task went out with a deadline nobody chose. Refused like the API's 1-30."""
    if not (value or "").strip():
        return 3
    days = _number(value)
    if days is None or not 1 <= days <= 30:
        raise ValidationError("会办期限应为 1-30 个工作日。", fields={"tasks": "期限应为 1-30 个工作日"})
    return days


# The texts of an action, with the limits of the API's action fields (the form's maxlength says the same).
ACTION_TEXTS = (
    Field("note", "text", "说明", max_len=1000), Field("reason", "text", "理由", max_len=1000),
    Field("resolution", "text", "办理结果", max_len=2000), Field("category", "str", "类别", max_len=32),
    Field("department", "str", "部门", max_len=64), Field("result", "text", "任务结果", max_len=1000),
    Field("master", "str", "主诉求编号", max_len=20),
)


@bp.post("/appeals/<int:appeal_id>/action")
@console_required(StaffRole.DEPT)
def action(appeal_id: int):
    form = request.form
    name = form.get("action", "")
    data: dict[str, Any] = {}
    not_numbers = {}
    for key in ("version", "handler_id", "task_id", "return_id", "extension_id", "working_days", "building_id"):
        if (number := _number(form.get(key))) is not None:
            data[key] = number
        elif key == "working_days" and (form.get(key) or "").strip():
            data[key] = form[key].strip()  # “abc”, “2.5”: refused as not 1-30, not as if the box were empty
        elif (form.get(key) or "").strip():
            # “abc” was taken as an empty box: version=abc skipped the stale-page check, handler_id=abc made a 交办
            # without the handler chosen
            not_numbers[key] = f"{NUMBER_LABELS[key]}应为数字"
    for key in ("accept", "cancel"):
        if key in form:
            data[key] = form.get(key) in ("1", "true", "on", "yes")
    try:
        if not_numbers:
            raise ValidationError("、".join(not_numbers.values()) + "，请刷新页面后重新选择。", fields=not_numbers)
        texts = validate({f.name: form.get(f.name) for f in ACTION_TEXTS}, ACTION_TEXTS, partial=True)
        master = texts.pop("master", None)
        data.update({k: v for k, v in texts.items() if v is not None})
        with session_scope() as s:
            if master:
                data["master_id"] = _master_id(s, master)
            if name == "coordinate":
                data["tasks"] = [{"department": form.get("task_department", "").strip(),
                                  "description": form.get("task_description", "").strip(),
                                  "working_days": _task_days(form.get("task_days")),
                                  "required": form.get("task_required", "1") == "1"}]
            services.perform(s, current_actor(), appeal_id, name, data)
    except AppError as exc:
        if exc.status == 404 and not _still_shown(appeal_id):
            raise  # the appeal itself is gone (or no longer this account's): the 404 page says so
        # A 404 about what the form named (a 延期 / 退单 request or a 会办 task withdrawn or removed since the page
        # was loaded) comes back to the appeal's page with the reason, like any other stale action.
        flash(f"操作未完成：{exc.message}", "error")
        return _detail_page(appeal_id, typed=form, status=exc.status)
    flash(_done_text(name, data))
    back = safe_console_path(form.get("next")) or ""
    return redirect(back if back.startswith("/console/") else url_for("appeals_console.detail", appeal_id=appeal_id))


def _still_shown(appeal_id: int) -> bool:
    """Whether the appeal's page can still be shown to the one acting."""
    try:
        with session_scope() as s:
            services.get_appeal(s, appeal_id, current_actor())
    except AppError:
        return False
    return True


def _done_text(name: str, data: dict[str, Any]) -> str:
    """What the page says after an action: “已{label}” unless that misreads it (a 退单 waits for the centre; a
    decision says which way it went)."""
    if name == "return":
        return "已提交退单申请，等待中心审核。"
    if name == "note":
        return "已添加备注。"
    if name == "decide_return":
        return "已同意退单并改派。" if data.get("accept") else "已驳回退单申请，仍由原部门办理。"
    if name == "decide_extension":
        return "已同意延期。" if data.get("accept") else "已不同意延期。"
    return f"已{ACTION_LABELS.get(name, '操作')}。"


def _master_id(s, value: str) -> int:
    # Typed in a Chinese input method's full-width mode (ＳＱ２０２５…－０００７, １２): the same number.
    value = unicodedata.normalize("NFKC", value)
    if (appeal_id := row_id(value)) is not None:
        return appeal_id
    found = s.scalar(select(Appeal.id).where(Appeal.number == value.upper()))
    if found is None:
        raise ValidationError(f"没有编号为 {value} 的诉求。", fields={"master_id": "没有这个编号"})
    return found


@bp.get("/appeals/<int:appeal_id>/images/<name>")
@console_required(StaffRole.DEPT)
def image(appeal_id: int, name: str):
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, current_actor())
        path, mimetype = intake.image_path(current_app.instance_path, appeal.images, name)
    return intake.send_photo(path, mimetype)


# --- catalogue and holidays -------------------------------------------------------------------------

CATEGORY_FORM = (
    Field("code", "str", "代码", max_len=32), Field("name", "str", "名称", required=True, max_len=32),
    Field("department", "str", "责任部门", required=True, max_len=64),
    Field("promised_days", "int", "承诺办结工作日", required=True, min=1, max=60),
    Field("keywords", "text", "分类关键词", max_len=4000), Field("required_fields", "str", "必填项", max_len=200),
    Field("description", "text", "说明", max_len=1000), Field("active", "bool", "启用", default=False),
)


# What a category can ask the enterprise for, as staff name it; the codes are what the catalogue stores.
REQUIRABLE_LABELS = {"enterprise_id": "企业", "building_id": "楼宇", "images": "照片"}


def _required_fields(text: str | None) -> list[str]:
    """必填项 typed as names (企业、楼宇、照片) or codes, with any separator; anything else is refused, not dropped."""
    codes = {**{code: code for code in REQUIRABLE_LABELS}, **{name: code for code, name in REQUIRABLE_LABELS.items()}}
    parts = [p for p in re.split(r"[,，、;；\s]+", text or "") if p]
    unknown = [p for p in parts if p not in codes]
    if unknown:
        allowed = "、".join(REQUIRABLE_LABELS.values())
        raise ValidationError(f"必填项只能填{allowed}，不认识：{'、'.join(unknown)}",
                              fields={"required_fields": f"只能填{allowed}"})
    return list(dict.fromkeys(codes[p] for p in parts))


@bp.route("/appeal-categories", methods=["GET", "POST"])
@console_required(StaffRole.DEPT)
def categories():
    error, status, typed, typed_id = None, 200, {}, None
    if request.method == "POST":
        if ROLE_RANK[StaffRole(g.staff.role)] < ROLE_RANK[StaffRole.ADMIN]:
            raise AppError("只有管理员可以修改政府服务清单。", status=403, code="forbidden")
        try:
            data = validate({k: v for k, v in request.form.items() if k != "csrf_token"}, CATEGORY_FORM)
            data["keywords"] = [k.strip() for k in (data["keywords"] or "").replace("，", ",").split(",") if k.strip()]
            data["required_fields"] = _required_fields(data["required_fields"])
            with session_scope() as s:
                category_id = row_id(request.form.get("id"))
                if category_id is None and not data.get("code"):
                    raise ValidationError("新类别请填写代码。", fields={"code": "必填"})
                services.save_category(s, current_actor(), data, category_id)
            flash("已保存。")
            return redirect(url_for("appeals_console.categories"))
        except AppError as exc:
            error, status = exc.message, exc.status
            # The refused form keeps what was typed: the new category's, or the row being edited (it showed the
            # saved values again, a long keyword list typed for nothing, and the reason far above it).
            typed, typed_id = request.form, row_id(request.form.get("id"))
    with session_scope() as s:
        rows = services.categories(s, active_only=False)
        return render_template("console/appeals/categories.html", rows=rows, error=error, typed=typed,
                               typed_id=typed_id, requirable=REQUIRABLE_LABELS), status


HOLIDAY_FORM = (Field("day", "date", "日期", required=True), Field("is_workday", "bool", "是否上班", default=False),
                Field("name", "str", "名称", max_len=64))


@bp.route("/appeal-holidays", methods=["GET", "POST"])
@console_required(StaffRole.DEPT)
def holidays():
    error, typed, status = None, {}, 200
    if request.method == "POST":
        if ROLE_RANK[StaffRole(g.staff.role)] < ROLE_RANK[StaffRole.STAFF]:
            raise AppError("部门账号不能修改节假日表。", status=403, code="forbidden")
        try:
            with session_scope() as s:
                if delete_id := row_id(request.form.get("delete_id")):
                    services.delete_holiday(s, current_actor(), delete_id)
                else:
                    data = validate({k: v for k, v in request.form.items() if k != "csrf_token"}, HOLIDAY_FORM)
                    services.set_holiday(s, current_actor(), data["day"], bool(data["is_workday"]), data["name"] or "")
            flash("已保存。")
            return redirect(url_for("appeals_console.holidays"))
        except AppError as exc:
            # Refused: said with its status, and the form keeps what was typed (the name and the choice were
            # emptied, with a 200 as if the page had simply been opened).
            error, status = exc.message, exc.status
            if not request.form.get("delete_id"):
                typed = {k: request.form.get(k, "") for k in ("day", "is_workday", "name")}
    with session_scope() as s:
        rows = list(s.scalars(select(Holiday).order_by(Holiday.day.desc())))
        cal = services.work_calendar(s)
        today = utcnow().astimezone(TZ).date()
        upcoming = [(today + timedelta(days=i), cal.is_workday(today + timedelta(days=i)),
                     cal.source(today + timedelta(days=i))) for i in range(0, 21)]
        missing = missing_holiday_years(cal.overrides, today)
        return render_template("console/appeals/holidays.html", rows=rows, upcoming=upcoming, error=error,
                               missing_years=missing, typed=typed), status


# --- reports ----------------------------------------------------------------------------------------

@bp.get("/appeals/report")
@console_required(StaffRole.DEPT)
def report():
    try:
        reports.check_typed_week(request.args.get("week"))
        args = _args((Field("week", "str", "周次", max_len=8),))
        with session_scope() as s:
            # The page shows the week's tallies, not its rows: one page of them is read (thousands in a busy week).
            data = reports.weekly(s, args["week"], current_actor(), overdue_limit=reports.OVERDUE_SHOWN, page=1)
    except ValidationError as exc:
        # Said on the report's own page, the week typed still in its box to correct (the bare error page had no
        # way back but the browser's).
        return render_template("console/appeals/report.html", r=None, error=exc.message,
                               week=clean_text(request.args.get("week") or "")[:20]), exc.status
    return render_template("console/appeals/report.html", r=data, pct=metrics.percent_text, week=data["week"],
                           days=_week_days(data["start"]), definitions=metrics.DEFINITIONS,
                           **_overdue(data))


def _overdue(report: dict) -> dict[str, Any]:
    """The report's 超期在办 as its page lists it: the most overdue few, and how many there are in all (the rest are
    in the workbook, and today's in the queue filtered to overdue open appeals)."""
    return {"overdue": reports.most_overdue(report["overdue"]), "overdue_total": report["overdue_total"]}


def _week_days(start_iso: str) -> str:
    return reports.week_days(datetime.fromisoformat(start_iso))


@bp.get("/appeals/report.xlsx")
@console_required(StaffRole.DEPT)
def report_xlsx():
    reports.check_typed_week(request.args.get("week"))
    args = _args((Field("week", "str", "周次", max_len=8),))
    with session_scope() as s:
        # every appeal of the week, read a thousand at a time as the workbook is written
        data = reports.weekly(s, args["week"], current_actor(), stream=True)
        audit(s, current_actor(), "appeal.weekly_exported", None, week=data["week"])
        workbook = reports.weekly_xlsx(data)
    resp = Response(workbook, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    resp.headers["Content-Disposition"] = f'attachment; filename="appeals-weekly-{data["week"]}.xlsx"'
    return resp


STORED_PER_PAGE = 20


@bp.get("/appeals/reports")
@console_required(StaffRole.DEPT)
def stored_reports():
    """The weekly reports the Monday job stored, newest week first: what was reported then, not a recompute."""
    number = min(row_id(request.args.get("page")) or 1, 100_000)  # a mistyped page is the first, as other lists
    with session_scope() as s:
        page = reports.stored_weeklies(s, number, STORED_PER_PAGE, current_actor())
    return render_template("console/appeals/stored_reports.html", page=page, rows=page.items)


@bp.get("/appeals/reports/<week>")
@console_required(StaffRole.DEPT)
def stored_report(week: str):
    try:
        with session_scope() as s:
            # The page shows the tallies and the most overdue few, not the rows: one page of them is read.
            data = reports.stored_weekly(s, week, current_actor(), page=1)
    except (ValidationError, NotFound) as exc:
        # A mistyped or never-stored week (a link edited by hand, a week before the first Monday job): said on the
        # report's own page, as the live report says it, with the week in its box and the way to the archive (the
        # bare error page offered only 返回工作台).
        live = reports.parse_week(week)[0] if isinstance(exc, NotFound) else None  # a real week, never stored
        return render_template("console/appeals/report.html", r=None, error=exc.message, stored=True,
                               week=clean_text(week)[:20], live_week=live), exc.status
    return render_template("console/appeals/report.html", r=data, pct=metrics.percent_text, week=data["week"],
                           days=_week_days(data["start"]), definitions=metrics.DEFINITIONS, stored=True,
                           **_overdue(data))


@bp.get("/appeals/reports/<week>.xlsx")
@console_required(StaffRole.DEPT)
def stored_report_xlsx(week: str):
    with session_scope() as s:
        data = reports.stored_weekly(s, week, current_actor())
        audit(s, current_actor(), "appeal.weekly_exported", None, week=data["week"], stored=True)
    resp = Response(reports.weekly_xlsx(data),
                    mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    resp.headers["Content-Disposition"] = f'attachment; filename="appeals-weekly-{data["week"]}-stored.xlsx"'
    return resp


ISSUES_FIELDS = (Field("enterprise_id", "int", "企业", min=1),
                 Field("page", "int", "页码", min=1, max=100_000, default=1),
                 Field("per_page", "int", "每页企业数", min=1, max=100, default=20))


@bp.get("/appeals/issues")
@console_required(StaffRole.DEPT)
def issues():
    """企业问题清单, a page of enterprises at a time (every appeal ever filed on one page was about 20 MB)."""
    with session_scope() as s:
        def attempt(raw: dict[str, str]):
            args = validate(raw, ISSUES_FIELDS)
            return args, reports.enterprise_issues(s, args["enterprise_id"], current_actor(), page=args["page"],
                                                   per_page=args["per_page"])

        (args, data), note = without_refused_filters({k: v for k, v in request.args.items() if v != ""}, attempt)
    link_args = {k: args[k] for k in ("enterprise_id", "per_page") if request.args.get(k) and args[k]}
    return render_template("console/appeals/issues.html", r=data, args=args, link_args=link_args,
                           shown=reports.ISSUES_SHOWN, filter_error=note), 422 if note else 200


@bp.get("/appeals/issues.xlsx")
@console_required(StaffRole.DEPT)
def issues_xlsx():
    args = _args((Field("enterprise_id", "int", "企业", min=1),))
    with session_scope() as s:
        audit(s, current_actor(), "appeal.issues_exported", None, enterprise_id=args["enterprise_id"])
        # Every enterprise, not a page: read a few hundred enterprises at a time into a write-only workbook.
        data = reports.issues_xlsx({"enterprises": reports.iter_enterprise_issues(s, args["enterprise_id"],
                                                                                  current_actor())})
    resp = Response(data, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    resp.headers["Content-Disposition"] = 'attachment; filename="enterprise-issues.xlsx"'
    return resp


def _departments(s) -> list[str]:
    return services.known_departments(s)


# --- navigation and dashboard ------------------------------------------------------------------------

add_nav("appeals_console.queue", "诉求", StaffRole.DEPT, "诉求")
add_nav("appeals_console.triage", "诉求分拣", StaffRole.STAFF, "诉求")
add_nav("appeals_console.report", "诉求周报", StaffRole.DEPT, "诉求")
add_nav("appeals_console.categories", "服务清单", StaffRole.DEPT, "诉求")
add_nav("appeals_console.holidays", "节假日", StaffRole.DEPT, "诉求")


def _count(s, *where) -> int:
    """Appeals matching `where` that the logged-in staff member may see (a department account: its own)."""
    stmt = select(func.count(Appeal.id)).where(*where)
    actor = current_actor()
    if services._dept_only(actor):
        stmt = stmt.where(services._dept_clause(actor.department))
    return s.scalar(stmt) or 0


def _card_open() -> dict:
    with session_scope() as s:
        n = _count(s, Appeal.status.in_([x.value for x in OPEN]))
        late = _count(s, Appeal.status.in_([x.value for x in OPEN]), Appeal.overdue.is_(True))
        # 首问负责: accepted within one working day. One still waiting past that was on no card and in no reminder,
        # so nobody at the centre (who accepts) heard of it until the enterprise called.
        unanswered = 0 if services._dept_only(current_actor()) else _count(
            s, Appeal.status == AppealStatus.SUBMITTED.value, Appeal.response_due_at <= utcnow())
    hint = f"其中超期 {late} 件" + (f"；超过 1 个工作日未受理 {unanswered} 件" if unanswered else "")
    return {"title": "在办诉求", "value": n, "hint": hint,
            "href": url_for("appeals_console.queue", open_only="true")}


def _card_requests() -> dict | None:
    """退单 and 延期 wait for the centre (staff and admins decide them): they were on each appeal's page only, so a
    延期 asked for in time sat there while the deadline passed. Shown while there are any."""
    if services._dept_only(current_actor()):
        return None
    with session_scope() as s:
        n = _count(s, services.requests_pending())
    if not n:
        return None
    return {"title": "待审核的退单、延期申请", "value": n, "hint": "部门提交的退单、延期申请，请及时审核",
            "href": url_for("appeals_console.queue", pending_requests="true")}


def _card_rates() -> dict:
    now = utcnow()
    with session_scope() as s:
        m = metrics.compute(s, now - timedelta(days=30), now, current_actor())
    return {"title": "诉求解决率（近 30 天）", "value": _pct(m.resolution),
            "hint": f"目标 ≥ 90%；响应率 {_pct(m.response)}，按时办结 {_pct(m.on_time)}，"
                    f"满意率 {_pct(m.satisfaction)}",
            "href": url_for("appeals_console.report")}


def _card_escalated() -> dict:
    with session_scope() as s:
        n = _count(s, services.escalation_pending())
        late = _count(s, services.escalation_overdue(utcnow()))
        t = _count(s, Appeal.needs_triage.is_(True), Appeal.status.in_([x.value for x in OPEN]))
    hint = f"待分拣 {t} 件" + (f"；超过 3 个工作日未处理 {late} 件" if late else "")
    return {"title": "办不成事（在办）", "value": n, "hint": hint,
            "href": url_for("appeals_console.queue", escalation_open="true")}


def _card_holidays() -> dict | None:
    """Shown only while a year the SLA clocks need has no holiday data (see calendar.missing_holiday_years)."""
    with session_scope() as s:
        cal = services.work_calendar(s)
    missing = missing_holiday_years(cal.overrides, utcnow().astimezone(TZ).date())
    if not missing:
        return None
    years = "、".join(f"{y} 年" for y in missing)
    return {"title": "节假日表待补充", "value": years,
            "hint": "内置日历还没有这些年份的放假和调休安排，请按国务院办公厅通知录入，否则办结期限按周一至周五计算",
            "href": url_for("appeals_console.holidays")}


def _pct(r: metrics.Rate) -> str:
    return metrics.percent_text(r.numerator, r.denominator)


for _card in (_card_open, _card_requests, _card_rates, _card_escalated, _card_holidays):
    if all(getattr(c, "__qualname__", "") != _card.__qualname__ or getattr(c, "__module__", "") != __name__
           for c in DASHBOARD_CARDS):
        DASHBOARD_CARDS.append(_card)


