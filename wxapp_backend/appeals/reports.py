"""Weekly report (Asia/Shanghai ISO weeks) and the 企业问题清单, as dicts and as XLSX workbooks."""

from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from ..audit import SYSTEM, Actor, audit
from ..db import utcnow
from ..enterprises.importer import FORMULA_CHARS
from ..enterprises.models import Building, Enterprise
from ..enterprises.services import Page
from ..errors import NotFound, ValidationError
from ..validation import MAX_YEAR, MIN_YEAR
from . import metrics
from .calendar import TZ
from .models import Appeal, AppealCategory, AppealReport, handled_by
from .states import LABELS, OPEN, AppealStatus

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_WEEK_FORMAT = "周次格式不对，请用 2025-W40 这样的格式。"


def check_typed_week(raw: str | None) -> None:
    """A week sent with a control character in it (week=%00, a tab, U+0085) is a mistyped week: cleaned to nothing
    it was read as "no week" and answered with last week's report, as if nothing had been asked."""
    if raw and any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise ValidationError(_WEEK_FORMAT, fields={"week": "格式应为 2025-W40"})


def week_days(start: datetime) -> str:
    """“2026年3月2日 至 3月8日” (the year again when the week crosses into the next): the Shanghai days, Monday to
    Sunday, a week starting at `start` covers."""
    first = start.astimezone(TZ).date()
    last = first + timedelta(days=6)
    end = f"{last.year}年{last.month}月{last.day}日" if last.year != first.year else f"{last.month}月{last.day}日"
    return f"{first.year}年{first.month}月{first.day}日 至 {end}"


def parse_week(value: str | None, today: date | None = None) -> tuple[str, datetime, datetime]:
    """'2025-W40' -> (label, start, end) in UTC for Monday 00:00 .. next Monday 00:00 Shanghai time.

    Without a value: the last complete week.
    """
    if not value:
        today = today or utcnow().astimezone(TZ).date()
        last = today - timedelta(days=7)
        y, w, _ = last.isocalendar()
        value = f"{y}-W{w:02d}"
    m = _WEEK.match(value.strip())
    if not m:
        raise ValidationError(_WEEK_FORMAT, fields={"week": "格式应为 2025-W40"})
    if not MIN_YEAR <= int(m.group(1)) <= MAX_YEAR:  # Shanghai midnight of year 1 is before UTC's year 1
        raise ValidationError(f"周次的年份应在 {MIN_YEAR} 到 {MAX_YEAR} 之间。",
                              fields={"week": f"年份应在 {MIN_YEAR} 到 {MAX_YEAR} 之间"})
    try:
        monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError:
        raise ValidationError("没有这一周。", fields={"week": "没有这一周"}) from None
    start = datetime.combine(monday, datetime.min.time(), TZ)
    return value.strip(), start, start + timedelta(days=7)


def not_begun(label: str, start: datetime, now: datetime | None = None) -> None:
    """A week that has not begun yet (Monday 00:00 in Beijing) has no report: asked for one (a year typed wrong, next
    week), the live report answered with that week's name over today's open appeals, as if it were a real report."""
    if start > (now or utcnow()):
        raise ValidationError(f"{label}（{week_days(start)}）这一周还没有开始，没有周报；本周至今的情况请看本周的诉求周报。",
                              fields={"week": "这一周还没有开始"})


# The report's page lists this many of the open appeals past their deadline, the most overdue first, with the count
# of all and the way to the rest (a busy street had about 3,300, every one listed on the page). The workbooks and
# the stored report keep them all.
OVERDUE_SHOWN = 50
# Most overdue first: the earliest deadline; one without a deadline (none is overdue without one today) last.
MOST_OVERDUE_FIRST = (Appeal.due_at.is_(None), Appeal.due_at, Appeal.id)


# The staff JSON lists the week's appeals a page at a time (as the other staff lists: 20 a page, at most 100); the
# workbook writes them all, read this many at a time.
APPEALS_PER_PAGE = 20
WEEKLY_CHUNK = 1000


def weekly(session: Session, week: str | None, actor: Actor | None = None, *, now: datetime | None = None,
           overdue_limit: int | None = None, page: int | None = None, per_page: int = APPEALS_PER_PAGE,
           stream: bool = False) -> dict:
    """The report of `week` as `actor` may see it. "overdue" lists the open appeals past their deadline, the most
    overdue first: all of them, or the first `overdue_limit`; totals.overdue_now and overdue_total count all.

    "appeals" lists the week's appeals by id: all of them (what the Monday job stores); with `page`, that page of
    `per_page` and appeals_total, page, per_page, pages (a busy week holds thousands, every one in the staff JSON);
    with `stream`, an iterator reading them WEEKLY_CHUNK at a time while the session is open (the workbook), and
    "overdue" one reading every overdue appeal as many at a time.

    Counted in the database and read as plain columns: a busy week holds tens of thousands of appeals, which were
    loaded one by one as objects (with their category, enterprise and building) only to be counted and listed."""
    label, start, end = parse_week(week)
    not_begun(label, start, now)
    m = metrics.compute(session, start, end, actor, now=now)  # as the tick's `now` sees it (None: the real clock)
    scope = [handled_by(dept)] if (dept := _dept_of(actor)) is not None else []
    in_week = [Appeal.submitted_at >= start, Appeal.submitted_at < end, *scope]
    submitted, escalated = session.execute(
        select(func.count(Appeal.id), func.coalesce(func.sum(case((Appeal.escalated == true(), 1), else_=0)), 0))
        .where(*in_week)).one()
    # Every appeal still open is counted in the database; only the overdue ones, which the report lists, are read.
    open_cond = [Appeal.status.in_([s.value for s in OPEN]), Appeal.submitted_at < end, *scope]
    open_now = session.scalar(select(func.count(Appeal.id)).where(*open_cond)) or 0
    late_cond = [*open_cond, Appeal.overdue.is_(True)]
    if stream:  # the workbook lists every one (about 3,300 on a busy street), read a chunk at a time as written
        overdue: list[dict] | Iterator[dict] = _stream_overdue(session, late_cond)
        overdue_now = session.scalar(select(func.count(Appeal.id)).where(*late_cond)) or 0
    else:
        late = _rows().where(*late_cond).order_by(*MOST_OVERDUE_FIRST)
        overdue = [_format(*r) for r in session.execute(late if overdue_limit is None else late.limit(overdue_limit))]
        overdue_now = len(overdue) if overdue_limit is None or len(overdue) < overdue_limit else (
            session.scalar(select(func.count(Appeal.id)).where(*late_cond)) or 0)
    statuses = _tally(session, in_week, (Appeal.status,))
    return {
        "week": label, "start": start.isoformat(), "end": end.isoformat(),
        "scope": dept or "",  # the department it is narrowed to; "" for the whole centre
        "metrics": m.as_dict(),
        "totals": {"submitted": int(submitted), "open_now": open_now, "overdue_now": overdue_now,
                   "escalated": int(escalated)},
        "by_category": _tally(session, in_week, (AppealCategory.name,), lambda name: "未分类" if name is None else name,
                              (AppealCategory, AppealCategory.id == Appeal.category_id)),
        # Given out (交办) only: the department the rules merely guessed at submission never had the appeal (its own
        # report, scoped by handled_by, does not count it either).
        "by_department": _tally(session, in_week, (Appeal.department, Appeal.given_to),
                                lambda dept_, given: dept_ if dept_ and given == dept_ else "未交办"),
        # In the workflow's order (已提交 → … → 已撤回), as staff read a state list, not in the order rows came.
        "by_status": {LABELS[st]: statuses[st.value] for st in AppealStatus if statuses.get(st.value)},
        "by_building": _tally(session, in_week, (Building.name,), lambda name: "未填写" if name is None else name,
                              (Building, Building.id == Appeal.building_id)),
        "appeals": _stream(session, in_week) if stream else _listed(session, in_week, page, per_page),
        "overdue": overdue,
        "overdue_total": overdue_now,  # how many "overdue" would hold without `overdue_limit`
        # how many "appeals" would hold without `page`: the week's appeals (totals.submitted), and which page it is
        **({} if page is None else {"appeals_total": int(submitted), "page": page, "per_page": per_page,
                                    "pages": Page([], int(submitted), page, per_page).pages}),
    }


def _listed(session: Session, where: list, page: int | None, per_page: int) -> list[dict]:
    """The rows of the appeals `where` picks, by id: all of them, or page `page` of `per_page`."""
    q = _rows().where(*where).order_by(Appeal.id)
    if page is not None:
        q = q.limit(per_page).offset((page - 1) * per_page)
    return [_format(*r) for r in session.execute(q)]


def _stream(session: Session, where: list, chunk: int | None = None) -> Iterator[dict]:
    """The rows of the appeals `where` picks, by id, read `chunk` at a time (each chunk a query of its own after the
    last id read: no cursor held open while the rows are written out, no list of them all)."""
    chunk = chunk or WEEKLY_CHUNK
    last = 0
    while True:
        rows = session.execute(_joined(select(Appeal.id, *_row_columns())).where(*where, Appeal.id > last)
                               .order_by(Appeal.id).limit(chunk)).all()
        for _, *values in rows:
            yield _format(*values)
        if len(rows) < chunk:
            return
        last = rows[-1][0]


def _stream_overdue(session: Session, where: list, chunk: int | None = None) -> Iterator[dict]:
    """The rows of the overdue appeals `where` picks, the most overdue first (MOST_OVERDUE_FIRST), read `chunk` at
    a time: each chunk a query of its own after the last (deadline, id) read, as _stream reads the week's."""
    chunk = chunk or WEEKLY_CHUNK
    after: list = []
    while True:
        rows = session.execute(_joined(select(Appeal.due_at, Appeal.id, *_row_columns()))
                               .where(*where, *after).order_by(*MOST_OVERDUE_FIRST).limit(chunk)).all()
        for _, _, *values in rows:
            yield _format(*values)
        if len(rows) < chunk:
            return
        due, last = rows[-1][0], rows[-1][1]
        # after (due, last) in MOST_OVERDUE_FIRST: a later deadline, or the same one and a larger id; those without
        # a deadline come after every one with one
        after = ([and_(Appeal.due_at.is_(None), Appeal.id > last)] if due is None else
                 [or_(Appeal.due_at > due, and_(Appeal.due_at == due, Appeal.id > last), Appeal.due_at.is_(None))])


def _joined(stmt: Select) -> Select:
    """`stmt` over the appeals with their category, enterprise and building (each may be missing)."""
    return (stmt.select_from(Appeal)
            .outerjoin(AppealCategory, AppealCategory.id == Appeal.category_id)
            .outerjoin(Enterprise, Enterprise.id == Appeal.enterprise_id)
            .outerjoin(Building, Building.id == Appeal.building_id))


def _row_columns() -> tuple:
    """_format's arguments as columns: what a report row shows of an appeal, read without building the object."""
    return (Appeal.number, Appeal.status, func.coalesce(AppealCategory.name, ""),
            # 承办部门: the department the appeal was given to and still is with; "" while only guessed (handled_by)
            case((Appeal.given_to == Appeal.department, Appeal.department), else_=""),
            func.coalesce(Enterprise.name, Appeal.enterprise_name), func.coalesce(Building.name, ""),
            # the 200 characters a row shows (_format), not a week of long contents read whole
            func.substr(Appeal.content, 1, 200), Appeal.submitted_at, Appeal.due_at, Appeal.overdue,
            Appeal.escalated, Appeal.reopen_count)


def _rows() -> Select:
    return _joined(select(*_row_columns()))


def _tally(session: Session, where: list, columns: tuple, name: Callable[..., str] = lambda value: value,
           join: tuple = ()) -> dict:
    """The appeals `where` picks counted (COUNT ... GROUP BY) by `columns` (of Appeal, or of the table `join` names
    with its ON clause), each group named by `name(*values)` and groups of one name added up, in the order each
    name first comes among the appeals by id, as a Counter over the rows had them. Grouped by the plain columns:
    PostgreSQL does not take GROUP BY coalesce(x, $1) for the same expression selected as coalesce(x, $2)."""
    q = select(*columns, func.count(Appeal.id)).select_from(Appeal)
    if join:
        q = q.outerjoin(*join)
    q = q.where(*where).group_by(*columns).order_by(func.min(Appeal.id))
    out: dict = {}
    for *values, n in session.execute(q):
        key = name(*values)
        out[key] = out.get(key, 0) + n
    return out


def most_overdue(rows: list[dict], limit: int = OVERDUE_SHOWN) -> list[dict]:
    """The first `limit` of a report's overdue rows, the most overdue first (a stored report of an earlier version
    kept them in the order they were filed); "YYYY-MM-DD HH:MM" deadlines sort as the times they are."""
    return sorted(rows, key=lambda a: (not a.get("due_at"), a.get("due_at") or "", a.get("number") or ""))[:limit]


def _format(number: str, status: str, category: str, department: str, enterprise: str, building: str, content: str,
            submitted_at: datetime, due_at: datetime | None, overdue: bool, escalated: bool, reopen_count: int) -> dict:
    return {"number": number, "status": LABELS[status], "category": category, "department": department,
            "enterprise": enterprise, "building": building, "content": content[:200],
            "submitted_at": submitted_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M"),
            "due_at": due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if due_at else "",
            "overdue": overdue, "escalated": escalated, "reopen_count": reopen_count}


def prepare_weekly(session: Session, week: str | None = None, *, now: datetime | None = None,
                   **how: object) -> tuple[AppealReport, bool]:
    """The Monday job: store last week's report once (created=False when it was already there), as of `now`; a
    stored report is audited (appeal.weekly_report, with `how` it was made: via tick / cli)."""
    label, _, end = parse_week(week)
    row = session.scalar(select(AppealReport).where(AppealReport.week == label))
    if row is not None:
        return row, False
    if end > (now or utcnow()):
        # Stored once: a report of a week still running (or to come) would stand for that week for good.
        raise ValidationError(f"{label} 这一周还没有结束，周报要到下周一才能生成；本周至今的情况请看工作台的诉求统计。",
                              fields={"week": "这一周还没有结束"})
    # generated_at is the moment the figures were counted at ("生成于 …，为当时的数据"), not the write's wall clock.
    data = weekly(session, label, now=now)
    row = AppealReport(week=label, data=data, summary=summary(data), generated_at=now or utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # stored at the same moment (the CLI beside the Monday tick; PostgreSQL only)
        row = session.scalar(select(AppealReport).where(AppealReport.week == label))
        if row is None:
            raise
        return row, False
    audit(session, SYSTEM, "appeal.weekly_report", row, week=label, **how)
    return row, True


# --- stored weekly reports (the Monday job's snapshots) -----------------------------------------------------

def _dept_of(actor: Actor | None) -> str | None:
    """The department a report is narrowed to, as the live report narrows it (metrics._scope): dept accounts only."""
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        return actor.department
    return None


def stored_view(row: AppealReport, actor: Actor | None = None) -> dict:
    """A stored report as it was generated, seen by `actor`. Reports are stored for the whole centre: a department
    account sees the rows its department handled then (承办部门, the rule of handled_by), and the tallies counted
    again from those rows; the centre's rates and its 在办 count are not its own and are left out (metrics None,
    open_now None), as the live report would never show them to it."""
    data = dict(row.data or {})
    # Reports stored by earlier versions lack some parts: shown empty, not as a 500.
    for key in ("by_status", "by_category", "by_department", "by_building"):
        data.setdefault(key, {})
    data.setdefault("appeals", [])
    data.setdefault("overdue", [])
    data.setdefault("totals", {})
    data["generated_at"] = row.generated_at.isoformat()
    data["generated_text"] = f"生成于 {row.generated_at.astimezone(TZ).strftime('%Y-%m-%d %H:%M')}，为当时的数据"
    dept = _dept_of(actor)
    metrics_ = data.get("metrics") or None
    data["returns_by_department"] = dict((metrics_ or {}).get("returns_by_department") or {})
    data["scope"] = dept or ""
    data["overdue_total"] = len(data["overdue"])  # a stored report keeps them all (as its workbook lists them)
    if dept is None:
        return data
    new = [a for a in data["appeals"] if a.get("department") == dept]
    overdue = [a for a in data["overdue"] if a.get("department") == dept]
    order = {label: i for i, label in enumerate(LABELS[st] for st in AppealStatus)}
    statuses = Counter(a.get("status", "") for a in new)
    data.update({
        "metrics": None,
        "appeals": new, "overdue": overdue,
        "totals": {"submitted": len(new), "open_now": None, "overdue_now": len(overdue),
                   "escalated": sum(1 for a in new if a.get("escalated"))},
        "overdue_total": len(overdue),
        "by_category": dict(Counter(a.get("category") or "未分类" for a in new)),
        "by_department": {dept: len(new)} if new else {},
        "by_status": dict(sorted(statuses.items(), key=lambda kv: order.get(kv[0], len(order)))),
        "by_building": dict(Counter(a.get("building") or "未填写" for a in new)),
        "returns_by_department": {k: v for k, v in data["returns_by_department"].items() if k == dept},
    })
    return data


def summary(data: dict) -> dict:
    """What the list of stored reports shows of one report, kept beside it (AppealReport.summary): the centre's
    totals and 诉求解决率, and for each department (承办部门) its appeals, 办不成事 and overdue ones, counted from the
    rows as stored_view counts a department's. (Migration 0010 holds a copy, to fill in the reports stored before.)"""
    res = (data.get("metrics") or {}).get("resolution")
    departments: dict[str, dict[str, int]] = {}

    def of(row: dict) -> dict[str, int] | None:
        dept = row.get("department") if isinstance(row, dict) else None
        if not isinstance(dept, str):
            return None
        return departments.setdefault(dept, {"submitted": 0, "escalated": 0, "overdue_now": 0})

    for row in data.get("appeals") or []:
        if (counts := of(row)) is not None:
            counts["submitted"] += 1
            counts["escalated"] += 1 if row.get("escalated") else 0
    for row in data.get("overdue") or []:
        if (counts := of(row)) is not None:
            counts["overdue_now"] += 1
    return {"totals": dict(data.get("totals") or {}),
            "resolution": [res["numerator"], res["denominator"]] if res else None,
            "departments": departments}


def headline(week: str, generated_at: datetime, summary_: dict, actor: Actor | None = None) -> dict:
    """The figures a list of stored reports shows for one week, as `actor` sees them (as stored_view narrows a
    report: a department its own counts, without the centre's 在办 and 诉求解决率)."""
    head = {"week": week, "generated_at": generated_at.isoformat()}
    dept = _dept_of(actor)
    if dept is None:
        res = summary_.get("resolution")
        return {**head, **(summary_.get("totals") or {}),
                "resolution": metrics.percent_text(res[0], res[1]) if res else None}
    own = (summary_.get("departments") or {}).get(dept) or {}
    return {**head, "submitted": own.get("submitted", 0), "open_now": None, "overdue_now": own.get("overdue_now", 0),
            "escalated": own.get("escalated", 0), "resolution": None}


def stored_weeklies(session: Session, page: int, per_page: int, actor: Actor | None = None) -> Page:
    """One page of the stored weekly reports, newest week first, each as its headline figures: read from each
    report's summary, not its data (every appeal of the week, about a megabyte a week)."""
    total = session.scalar(select(func.count(AppealReport.id))) or 0
    rows = session.execute(select(AppealReport.id, AppealReport.week, AppealReport.generated_at, AppealReport.summary)
                           .order_by(AppealReport.week.desc(), AppealReport.id.desc())
                           .limit(per_page).offset((page - 1) * per_page)).all()
    items = []
    for report_id, week, generated_at, summary_ in rows:
        if summary_ is None:  # stored some other way than prepare_weekly: counted from its data, as before
            data = session.scalar(select(AppealReport.data).where(AppealReport.id == report_id))
            summary_ = summary(data if isinstance(data, dict) else {})
        items.append(headline(week, generated_at, summary_, actor))
    return Page(items, total, page, per_page)


def stored_weekly(session: Session, week: str, actor: Actor | None = None, *, page: int | None = None,
                  per_page: int = APPEALS_PER_PAGE) -> dict:
    """The stored report of `week` as `actor` may see it; a week mistyped is a 422, one never stored a 404. Every
    row of it (the workbook), or with `page` as the live JSON lists it: one page of `per_page` of its appeals
    (appeals_total, page, per_page, pages) and its OVERDUE_SHOWN most overdue (overdue_total counts them all).

    The report is one stored JSON document: it is still read and parsed whole, only the page and the few are
    served (a busy week's report is megabytes, about 1 KB an appeal; its answer held every appeal). Cutting the
    page out in the database (json_each / json_array_elements) was tried: each statement parses the whole document
    again, two to five times slower and on the one database every web process shares."""
    if not week or not week.strip():
        raise ValidationError("请写明周次，如 2025-W40。", fields={"week": "请填写周次"})
    label, start, _ = parse_week(week)
    row = session.scalar(select(AppealReport).where(AppealReport.week == label))
    if row is None:
        not_begun(label, start)  # not “never stored, see the live report”: there is none either
        raise NotFound(f"{label} 没有存档的周报（周报在每周一生成上一周的；更早的周或还没生成的，请看实时的诉求周报）。")
    data = stored_view(row, actor)
    if page is None:
        return data
    appeals = data["appeals"]
    return {**data, "appeals": appeals[(page - 1) * per_page:page * per_page],
            "overdue": most_overdue(data["overdue"]),  # as the live JSON lists them; overdue_total counts all
            "appeals_total": len(appeals), "page": page, "per_page": per_page,
            "pages": Page([], len(appeals), page, per_page).pages}


# The 企业问题清单's parts. A merged appeal (DUPLICATE) is its master's row, when that is in the same enterprise's list:
# merged into another enterprise's, it stays in its own enterprise's list (as 已合并), open while its master is.
_MASTER = aliased(Appeal, name="master_appeal")
_STATUS_NOW = case((and_(Appeal.status == AppealStatus.DUPLICATE.value, _MASTER.status.is_not(None)), _MASTER.status),
                   else_=Appeal.status)
# The name typed on an appeal that is not linked to an enterprise: the key of its group (NULL for a linked one).
_TYPED = case((Enterprise.id.is_(None), Appeal.enterprise_name))
# The workbook of the whole list reads the appeals of this many enterprises at a time.
ISSUES_CHUNK = 200
# ... and at most about this many appeals at a time (one enterprise with more is read this many at a time).
ISSUES_CHUNK_APPEALS = 5000
# A page of the list shows this many of each enterprise's appeals, with the count of all and the way to the rest (the
# appeals list filtered to that enterprise): 未关联企业 alone gathers thousands over the years, all on its page.
ISSUES_SHOWN = 50
_OPEN_NOW = _STATUS_NOW.in_([s.value for s in OPEN])
# An enterprise's appeals in the order staff follow them up: the open ones first, the most overdue first (the earliest
# deadline; one without a deadline after those with one), then the ended ones, the latest first (what was settled
# lately, not years ago). Plain CASEs: SQLite and PostgreSQL put NULLs at different ends.
GROUP_ORDER = (case((_OPEN_NOW, 0), else_=1), case((and_(_OPEN_NOW, Appeal.due_at.is_not(None)), 0), else_=1),
               case((_OPEN_NOW, Appeal.due_at)), case((_OPEN_NOW, Appeal.id), else_=-Appeal.id))


def _issues_select(columns: Iterable, enterprise_id: int | None, actor: Actor | None) -> Select:
    """The appeals the 企业问题清单 holds, as `actor` may see them (a department: those it handles)."""
    q = (select(*columns).select_from(Appeal)
         .outerjoin(Enterprise, Enterprise.id == Appeal.enterprise_id)
         .outerjoin(_MASTER, _MASTER.id == Appeal.master_id)
         .where(or_(Appeal.status != AppealStatus.DUPLICATE.value, Appeal.enterprise_id.is_(None),
                    _MASTER.enterprise_id.is_(None), _MASTER.enterprise_id != Appeal.enterprise_id)))
    if enterprise_id:
        q = q.where(Appeal.enterprise_id == enterprise_id)
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        q = q.where(handled_by(actor.department))
    return q


def _group_name(ename: str | None, typed: str | None) -> str:
    return ename if ename is not None else (f"{typed}（未核实）" if typed else "未关联企业")


def issue_groups(session: Session, enterprise_id: int | None = None, actor: Actor | None = None) -> list[dict]:
    """The 企业问题清单's groups in its order (by name), each with its open and total counts, counted in the database
    (GROUP BY): one row an enterprise or typed name, not one an appeal. "typed" holds the names typed on the
    unlinked appeals of a group ("未关联企业": "" and none), to find its appeals again."""
    typed = _TYPED.label("typed")
    open_now = func.sum(case((_STATUS_NOW.in_([s.value for s in OPEN]), 1), else_=0))
    q = (_issues_select((Enterprise.id, Enterprise.name, typed, open_now, func.count(Appeal.id)), enterprise_id, actor)
         .group_by(Enterprise.id, Enterprise.name, typed))
    groups: dict[tuple[str, int | None], dict] = {}
    for eid, ename, typed_name, open_, total in session.execute(q):
        key = (_group_name(ename, typed_name), eid)
        g = groups.setdefault(key, {"enterprise": key[0], "enterprise_id": eid, "open": 0, "total": 0, "typed": []})
        g["open"] += int(open_ or 0)
        g["total"] += int(total or 0)
        if ename is None:
            g["typed"].append(typed_name)
    return [g for _, g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))]


def _issue_lists(session: Session, groups: list[dict], enterprise_id: int | None, actor: Actor | None, *,
                 every: bool = False, limit: int | None = None) -> list[dict]:
    """The appeals of `groups` (every one the list holds when `every`) in GROUP_ORDER, in the groups' order: all of
    each group's, or its first `limit` (open and total count them all, as issue_groups counted them)."""
    if not groups:
        return []
    # Read as plain columns, not as objects with their category, enterprise and building (and theirs) joined in,
    # which took seconds for a few years of appeals.
    columns = (Enterprise.id, Enterprise.name, _TYPED, *_row_columns(), _STATUS_NOW)
    if limit is not None:  # numbered within each group in its order, the rest left in the database
        columns = (*(c.label(f"c{i}") for i, c in enumerate(columns)),
                   *(k.label(f"k{i}") for i, k in enumerate(GROUP_ORDER)),
                   func.row_number().over(partition_by=(Enterprise.id, func.coalesce(_TYPED, "")),
                                          order_by=GROUP_ORDER).label("n"))
    q = (_issues_select(columns, enterprise_id, actor)
         .outerjoin(AppealCategory, AppealCategory.id == Appeal.category_id)
         .outerjoin(Building, Building.id == Appeal.building_id))
    if not every:  # only the appeals of these groups: a page of the list must not read every appeal filed
        q = q.where(_of_groups(groups))
    if limit is None:
        q = q.order_by(*GROUP_ORDER)
    else:
        numbered = q.subquery()
        shown = len(columns) - len(GROUP_ORDER) - 1  # the c<i> columns, without the order keys and the number
        q = (select(*(numbered.c[f"c{i}"] for i in range(shown)))
             .where(numbered.c.n <= limit)
             .order_by(*(numbered.c[f"k{i}"] for i in range(len(GROUP_ORDER)))))
    # One group per enterprise row: a name typed on an appeal (anyone may type any name) or a namesake company
    # must not join an enterprise's list, which holds only what its verified contacts filed.
    rows: dict[tuple[str, int | None], list[dict]] = {(g["enterprise"], g["enterprise_id"]): [] for g in groups}
    for eid, ename, typed, *values, status in session.execute(q):
        key = (_group_name(ename, typed), eid)
        if key in rows:
            rows[key].append({**_format(*values), "open": status in OPEN})
    counts = {(g["enterprise"], g["enterprise_id"]): g for g in groups}
    out = []
    for (name, eid), appeals in rows.items():
        g = counts[(name, eid)]
        out.append({"enterprise": name, "enterprise_id": eid, "open": g["open"], "total": g["total"],
                    "appeals": appeals, "appeals_query": _group_query(eid, g.get("typed", ()))})
    return [g for g in out if g["appeals"]]


def _of_groups(groups: list[dict]) -> ColumnElement[bool]:
    """The appeals of `groups` (of issue_groups), by enterprise or by the names typed on unlinked appeals."""
    eids = [g["enterprise_id"] for g in groups if g["enterprise_id"] is not None]
    names = [t for g in groups for t in g.get("typed", ()) if t is not None]
    wanted = [Enterprise.id.in_(eids)] if eids else []
    if names:
        wanted.append(and_(Enterprise.id.is_(None), Appeal.enterprise_name.in_(names)))
    if any(t is None for g in groups for t in g.get("typed", ())):
        wanted.append(and_(Enterprise.id.is_(None), Appeal.enterprise_name.is_(None)))
    return or_(*wanted)


def _after_in_group_order(key: tuple) -> ColumnElement[bool]:
    """The appeals after the one whose GROUP_ORDER values are `key`, in that order (a keyset: the last key is the
    id, so no two appeals share a key and an appeal filed meanwhile moves no other one, as an OFFSET would)."""
    k0, k1, k2, k3 = GROUP_ORDER
    a0, a1, a2, a3 = key
    # the deadline key is NULL for a whole class (open without a deadline, ended): then the id decides alone
    tail = k3 > a3 if a2 is None else or_(k2 > a2, and_(k2 == a2, k3 > a3))
    return or_(k0 > a0, and_(k0 == a0, or_(k1 > a1, and_(k1 == a1, tail))))


def _group_chunk(session: Session, group: dict, enterprise_id: int | None, actor: Actor | None, limit: int,
                 after: tuple | None) -> tuple[list[dict], tuple | None]:
    """The next `limit` appeals of one group in GROUP_ORDER after the key `after` (None: from its first), and the
    key to read on from (None when fewer than `limit` were left: the end of the group)."""
    columns = (Enterprise.id, Enterprise.name, _TYPED, *_row_columns(), _STATUS_NOW, *GROUP_ORDER)
    q = (_issues_select(columns, enterprise_id, actor)
         .outerjoin(AppealCategory, AppealCategory.id == Appeal.category_id)
         .outerjoin(Building, Building.id == Appeal.building_id)
         .where(_of_groups([group]), *(() if after is None else (_after_in_group_order(after),)))
         .order_by(*GROUP_ORDER).limit(limit))
    appeals, last, n = [], None, 0
    want = (group["enterprise"], group["enterprise_id"])
    for eid, ename, typed, *values in session.execute(q):
        *values, status, k0, k1, k2, k3 = values
        last, n = (k0, k1, k2, k3), n + 1
        if (_group_name(ename, typed), eid) == want:
            appeals.append({**_format(*values), "open": status in OPEN})
    return appeals, (last if n == limit else None)


def _group_query(enterprise_id: int | None, typed: Iterable[str | None]) -> dict[str, str | int]:
    """The filters of the staff appeals list (GET /api/v1/staff/appeals, the console's 诉求 page) that list every
    appeal of a group: its enterprise; for one linked to none, the name typed (exactly), or 未关联企业."""
    if enterprise_id is not None:
        return {"enterprise_id": enterprise_id}
    name = next((t for t in typed if t), None)
    return {"typed_enterprise": name} if name else {"no_enterprise": "true"}


def enterprise_issues(session: Session, enterprise_id: int | None = None, actor: Actor | None = None, *,
                      page: int | None = None, per_page: int = 20) -> dict:
    """企业问题清单: each enterprise's appeals (GROUP_ORDER: open ones first), enterprises by name. With `page`, that
    page of `per_page` enterprises and {total, page, per_page, pages} (total: the enterprises in the list), each
    with its first ISSUES_SHOWN appeals (its open and total count all; appeals_query finds the rest): only those
    are read. Without, every appeal of every enterprise (what the workbook holds; iter_enterprise_issues streams
    it)."""
    groups = issue_groups(session, enterprise_id, actor)
    if page is None:
        return {"enterprises": _issue_lists(session, groups, enterprise_id, actor, every=True)}
    shown = groups[(page - 1) * per_page:page * per_page]
    result = Page(_issue_lists(session, shown, enterprise_id, actor, limit=ISSUES_SHOWN), len(groups), page, per_page)
    return {"enterprises": result.items, "total": result.total, "page": result.page, "per_page": result.per_page,
            "pages": result.pages}


def iter_enterprise_issues(session: Session, enterprise_id: int | None = None, actor: Actor | None = None, *,
                           chunk: int | None = None) -> Iterator[dict]:
    """Every group of the 企业问题清单 in its order, as enterprise_issues lists them, read `chunk` enterprises (and
    at most about ISSUES_CHUNK_APPEALS appeals) at a time: the workbook of every appeal ever filed, without holding
    them all at once. A group larger than that (未关联企业 over the years) is read ISSUES_CHUNK_APPEALS at a time
    as it is written: its "appeals" is an iterator, to be read before the next group is."""
    chunk = chunk or ISSUES_CHUNK
    batch: list[dict] = []
    size = 0
    for g in [*issue_groups(session, enterprise_id, actor), None]:  # None: the end, the last batch out
        if batch and (g is None or len(batch) >= chunk or size + g["total"] > ISSUES_CHUNK_APPEALS):
            yield from _issue_lists(session, batch, enterprise_id, actor)
            batch, size = [], 0
        if g is not None and g["total"] > ISSUES_CHUNK_APPEALS:
            yield {"enterprise": g["enterprise"], "enterprise_id": g["enterprise_id"], "open": g["open"],
                   "total": g["total"], "appeals": _large_group(session, g, enterprise_id, actor),
                   "appeals_query": _group_query(g["enterprise_id"], g.get("typed", ()))}
        elif g is not None:
            batch.append(g)
            size += g["total"]


def _large_group(session: Session, group: dict, enterprise_id: int | None, actor: Actor | None) -> Iterator[dict]:
    """The appeals of one large group in GROUP_ORDER, ISSUES_CHUNK_APPEALS at a time, each chunk after the key of
    the last appeal read (not an OFFSET: an appeal filed while the workbook is written, ahead of the place reached,
    would push the next chunk back one and list an appeal twice)."""
    after = None
    while True:
        appeals, after = _group_chunk(session, group, enterprise_id, actor, ISSUES_CHUNK_APPEALS, after)
        yield from appeals
        if after is None:
            return


COLUMNS = (("number", "编号"), ("status", "状态"), ("category", "类别"), ("department", "承办部门"),
           ("enterprise", "企业"), ("building", "楼宇"), ("content", "内容"), ("submitted_at", "提交时间"),
           ("due_at", "办结期限"), ("overdue", "超期"), ("escalated", "办不成事"), ("reopen_count", "重办次数"))


def _append(ws: WriteOnlyWorksheet, values: list) -> None:
    """Add a row; text that starts with "=" stays text (openpyxl would write it as a formula, which Excel runs), and
    so does text starting with + - @ (Excel and WPS run it as a formula once staff edit the cell).

    Control characters (a chat message may carry them) are dropped: a workbook cannot hold them and openpyxl
    refuses the whole export."""
    cells = []
    for value in values:
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        if isinstance(value, str) and value.startswith(FORMULA_CHARS):
            value = WriteOnlyCell(ws, value=value)
            value.data_type = "s"
            value.quotePrefix = True  # still text when staff edit the cell in Excel
        cells.append(value)
    ws.append(cells)


def _sheet(wb: Workbook, title: str, rows: Iterable[dict]) -> None:
    ws = wb.create_sheet(title)
    ws.append([c for _, c in COLUMNS])
    for r in rows:
        _append(ws, [("是" if r[k] else "否") if isinstance(r[k], bool) else r[k] for k, _ in COLUMNS])


def weekly_xlsx(report: dict) -> bytes:
    wb = Workbook(write_only=True)  # rows go to the file as they are added, see issues_xlsx
    ws = wb.create_sheet("概览")
    # The days too, beside the label: “2025-W43” alone did not tell whoever the workbook went to which Monday it was.
    _, start, _ = parse_week(report["week"])
    ws.append(["周次", report["week"], f"{week_days(start)}（上海时间周一至周日）"])
    if report.get("generated_text"):  # a stored report (stored_view): its figures are those of that moment
        ws.append(["存档", report["generated_text"]])
    if report.get("scope"):
        _append(ws, ["范围", f"{report['scope']}承办的诉求"])
    m = report["metrics"]
    names = {"response": "响应率", "on_time": "按时办结率", "resolution": "诉求解决率", "satisfaction": "满意率"}
    if m is None:  # a department's view of a stored report: the centre's rates are not its own
        ws.append(["指标", "存档的周报只有全中心的比率；本部门的比率请在工作台看实时的诉求周报"])
    else:
        # 百分比 as the page shows it (rounded down, “—” for a rate of nothing) and 口径, what the rate counts: the
        # workbook sent upwards had a bare 0.8971 and no word on what was in it.
        ws.append(["指标", "分子", "分母", "比率", "百分比", "口径"])
        for key, name in names.items():
            ws.append([name, m[key]["numerator"], m[key]["denominator"], m[key]["rate"],
                       metrics.percent_text(m[key]["numerator"], m[key]["denominator"]), metrics.DEFINITIONS[key]])
        ws.append([])
        ws.append(["平均满意度（星）", m["satisfaction"].get("average")])
    ws.append([])
    ws.append(["本周新增", report["totals"]["submitted"]])
    ws.append(["其中办不成事", report["totals"]["escalated"]])
    # Counted when the report is made, not at the week's end: a past week's workbook must not pass them off as its own.
    if report["totals"].get("open_now") is not None:
        ws.append(["当前在办（生成报表时）", report["totals"]["open_now"]])
    ws.append(["当前超期在办（生成报表时）", report["totals"]["overdue_now"]])
    # The page and the JSON count this week's appeals per state: the workbook sent upwards left them out.
    for title, key in (("按状态", "by_status"), ("按类别", "by_category"), ("按部门", "by_department"),
                       ("按楼宇", "by_building")):
        ws.append([])
        ws.append([title])
        for k, v in report[key].items():
            _append(ws, [k, v])
    ws.append([])
    ws.append(["退单（按部门）"])
    for k, v in (m["returns_by_department"] if m is not None else report.get("returns_by_department", {})).items():
        _append(ws, [k, v])
    _sheet(wb, "本周诉求", report["appeals"])
    _sheet(wb, "当前超期在办", report["overdue"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def issues_xlsx(report: dict) -> bytes:
    # Every appeal ever filed, a row each: a workbook kept whole in memory took about 4 KB a row (200 MB and seven
    # seconds for 50,000 appeals), a write-only one streams them to its file.
    wb = Workbook(write_only=True)
    rows = ({**r, "enterprise": e["enterprise"]} for e in report["enterprises"] for r in e["appeals"])
    _sheet(wb, "企业问题清单", rows)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
