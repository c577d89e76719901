"""一企一档 / 一楼一档 / 网格化: create, change and find grids, buildings, enterprises and user bindings."""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, Text, and_, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ..audit import Actor, AuditLog, audit
from ..auth.models import BINDING_LABELS, BindingState, StaffUser, User, UserRole
from ..db import refusal
from ..edits import StaleEdit as StaleEdit  # re-exported: the console catches services.StaleEdit
from ..edits import locked_for_edit, refuse_stale
from ..errors import AppError, Conflict, NotFound, ValidationError
from ..validation import (
    Field,
    building_name_problem,
    credit_code_problem,
    enterprise_name_problem,
    strip_invisible,
    validate,
)
from .models import (
    NOTE_BINDING_PENDING,
    NOTE_BINDING_REJECTED,
    NOTE_BINDING_VERIFIED,
    Building,
    Enterprise,
    Grid,
)

# Tags are written in one cell as "a|b", "a、b" or "a,b"; a tag itself never contains a separator,
# so a list survives the trip through a spreadsheet unchanged.
log = logging.getLogger(__name__)

TAG_SPLIT_RE = re.compile(r"[|、,，;；]")
MAX_TAGS = 20


def split_tags(value: str | Sequence[str] | None) -> list[str]:
    """A tags cell or list -> clean, de-duplicated tags in their original order."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else [str(v) for v in value]
    parts = [p for item in items for p in TAG_SPLIT_RE.split(item)]
    seen: dict[str, None] = {}
    for p in parts:
        p = p.strip()
        if p:
            seen.setdefault(p, None)
    return list(seen)


GRID_FIELDS = (
    Field("name", "str", "网格名称", required=True, max_len=64),
    Field("specialist_name", "str", "服务专员", max_len=32),
    Field("specialist_phone", "phone", "专员电话"),
    Field("specialist_staff_id", "int", "专员工作人员账号", min=1),
    Field("note", "text", "备注", max_len=2000),
)

BUILDING_FIELDS = (
    Field("name", "str", "楼宇名称", required=True, max_len=100, check=building_name_problem),
    Field("address", "str", "地址", max_len=200),
    Field("grid_id", "int", "所属网格", min=1),
    Field("note", "text", "备注", max_len=2000),
)

ENTERPRISE_FIELDS = (
    Field("name", "str", "企业名称", required=True, max_len=200, min_len=2,
          check=enterprise_name_problem),
    Field("credit_code", "credit_code", "统一社会信用代码", required=True),
    Field("industry", "str", "行业", max_len=64),
    Field("building_id", "int", "所在楼宇", min=1),
    Field("floor_room", "str", "楼层房间", max_len=64),
    Field("tax_bracket", "str", "纳税规模", max_len=32),
    Field("tags", "list", "标签", item=Field("tag", "str", "标签", max_len=20),
          max_items=MAX_TAGS),
    Field("contact_name", "str", "联系人", max_len=32),
    Field("contact_phone", "phone", "联系电话"),
    Field("note", "text", "备注", max_len=2000),
)

ENTERPRISE_FILTERS = (
    Field("q", "str", "企业名称或信用代码", max_len=100),
    Field("building_id", "int", "楼宇", min=1),
    Field("grid_id", "int", "网格", min=1),
    Field("industry", "str", "行业", max_len=64),
    Field("tag", "str", "标签", max_len=20),
    Field("page", "int", "页码", min=1, max=100000, default=1),
    Field("per_page", "int", "每页条数", min=1, max=100, default=20),
)

USER_FILTERS = (
    Field("state", "enum", "绑定状态", choices=tuple(s.value for s in BindingState), choice_names=BINDING_LABELS),
    Field("q", "str", "昵称、手机号或企业", max_len=64),
    Field("page", "int", "页码", min=1, max=100000, default=1),
    Field("per_page", "int", "每页条数", min=1, max=100, default=20),
    # Only the users staff have blocked (true), or only the others (false): auth.blocking.
    Field("blocked", "bool", "是否已屏蔽"),
)

BINDING_FIELDS = (
    Field("approve", "bool", "是否通过", required=True),
    # The enterprise the decision was made about: the user can change their application meanwhile.
    Field("enterprise_id", "int", "核实的企业", min=1),
    # Said to the applicant with a rejection: what to fix before applying again.
    Field("reason", "str", "驳回原因", max_len=200),
)

# The form fields of each kind of file, by table (their labels name a column in a message).
_FIELDS_OF = {"grids": GRID_FIELDS, "buildings": BUILDING_FIELDS, "enterprises": ENTERPRISE_FIELDS}

# Columns holding text: an emptied field is stored as "", not NULL.
_TEXT_DEFAULTS = {"industry": "", "floor_room": "", "tax_bracket": "", "contact_name": "", "contact_phone": "",
                  "note": "", "address": "", "specialist_name": "", "specialist_phone": ""}


@dataclass
class Page:
    """One page of a listing."""

    items: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    """One page of `stmt`'s rows, with the total."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = list(session.scalars(stmt.limit(per_page).offset((page - 1) * per_page)).unique())
    return Page(items, total, page, per_page)


def clean_values(data: Mapping[str, Any], fields: tuple[Field, ...], *, partial: bool) -> dict[str, Any]:
    """Validate (tags may come as one cell of text), then turn emptied optional values into "" / []."""
    if "tags" in data and isinstance(data["tags"], str):
        data = {**data, "tags": split_tags(data["tags"])}
    values = validate(data, fields, partial=partial)
    if partial:
        # In an edit, an optional field sent as null is cleared (validate() leaves it out).
        values.update({f.name: None for f in fields if not f.required and f.name in data and data[f.name] is None})
    for k, v in list(values.items()):
        if v is None and k in _TEXT_DEFAULTS:
            values[k] = _TEXT_DEFAULTS[k]
        elif v is None and k == "tags":
            values[k] = []
    if "tags" in values:
        values["tags"] = split_tags(values["tags"])
    return values


# A row a save points at that is gone by the time it is written (checked, then deleted or merged away by a colleague):
# what the database's foreign key refuses, said as the checks before the write say it.
_GONE = {
    "building_id": ("没有找到这栋楼宇，它可能已被合并或删除；请刷新页面后重新选择。", "楼宇不存在"),
    "grid_id": ("没有找到这个网格，它可能已被删除；请刷新页面后重新选择。", "网格不存在"),
    "specialist_staff_id": ("没有找到这个工作人员账号，它可能已被删除；请刷新页面后重新选择。", "账号不存在"),
}


def _flush(session: Session, row: Grid | Building | Enterprise, clash: str, field: str) -> None:
    """Write the grid, building or enterprise `row` being saved. The checks before it answer almost every problem; a
    colleague's write can still come in between, and the database then refuses: a clash on `field` (its unique
    column) is said with `clash` (409), anything else with what it is about. Every refusal once read as a clash
    (“统一社会信用代码 … 已登记”) whatever it was, such as a building merged away meanwhile."""
    with session.no_autoflush:  # (read before the write, which expires the row when it fails)
        pointing = tuple(fk.parent.name for fk in row.__table__.foreign_keys
                         if getattr(row, fk.parent.name) is not None)
        row_id = row.id
    try:
        session.flush()
    except IntegrityError as exc:
        raise _refused(exc, row.__table__.name, clash, field, pointing=pointing, row_id=row_id,
                       session=session) from None


def _refused(exc: IntegrityError, table: str, clash: str, field: str, *, pointing: tuple[str, ...] = (),
             row_id: int | None = None, session: Session | None = None) -> AppError:
    """The error to show for a save of a row of `table` the database refused; `pointing`: the row's foreign-key
    columns holding a value (when SQLite's foreign key refusal could not be traced to its column through the
    `session`, see db.refusal: the one the row points with is meant)."""
    said = refusal(exc, session)
    columns = said.columns if said.table in ("", table) else ()
    if said.kind == "unique" and columns == (field,):
        return Conflict(clash, fields={field: "已存在"})
    if said.kind == "foreign_key" and not said.table:
        columns = pointing
    if said.kind == "foreign_key" and len(columns) == 1 and columns[0] in _GONE:
        message, problem = _GONE[columns[0]]
        return ValidationError(message, fields={columns[0]: problem})
    # None of these is expected (the form's checks cover them): worth a look, with what the database named.
    log.warning("%s %s not saved: the database refused it (%s, constraint %s, columns %s)", table, row_id or "(new)",
                said.kind or "unknown", said.constraint or "-", ",".join(columns) or "-")
    labels = {f.name: f.label for f in _FIELDS_OF[table]} | {"id": "档案编号"}
    named = "、".join(labels.get(c, c) for c in columns)
    if said.kind == "unique":
        return Conflict(f"{named or '填写的内容'}与已有的记录重复，没有保存。请刷新页面核对后再试；如果一直这样，"
                        "请联系管理员。", fields={c: "已存在" for c in columns if c in labels and c != "id"})
    if said.kind == "foreign_key":
        return ValidationError("选择的楼宇、网格或工作人员账号可能已被合并或删除，没有保存；请刷新页面后重新选择。")
    if said.kind == "not_null":
        return ValidationError(f"{named or '必填的内容'}不能为空，没有保存；请填写后再试。",
                               fields={c: "必填" for c in columns if c in labels})
    if said.kind == "check":
        return ValidationError("填写的内容不符合要求，没有保存；请核对后再试。")
    return Conflict("保存没有成功，可能有其他人同时修改了相关的档案；请刷新页面后再试。")


def changed_fields(row: Any, values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the values that differ from the row (for the audit log: a phone number keeps its
    last four digits only, as a user's own does in user.profile_updated; admins read this log, not a phone book)."""
    return {k: [_audited(k, getattr(row, k)), _audited(k, v)] for k, v in values.items() if getattr(row, k) != v}


def _audited(field: str, value: Any) -> Any:
    return "***" + value[-4:] if field.endswith("phone") and isinstance(value, str) and value else value


# --- grids ------------------------------------------------------------------------------------------

def list_grids(session: Session) -> list[tuple[Grid, int]]:
    """Every grid with how many buildings it covers."""
    counts = (select(Building.grid_id, func.count(Building.id).label("n")).group_by(Building.grid_id)
              .subquery())
    rows = session.execute(select(Grid, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.grid_id == Grid.id)
                           .order_by(Grid.name))
    return [(g, n) for g, n in rows]


def get_grid(session: Session, grid_id: int) -> Grid:
    grid = session.get(Grid, grid_id)
    if grid is None:
        raise NotFound("没有找到这个网格，可能已被删除。")
    return grid


def name_taken(session: Session, model: Any, name: str, row_id: int | None = None) -> Any:
    """The other grid or building (`model`) filed under `name`, written the same or another way (blanks, full- or
    half-width brackets, ASCII case: “新华 大厦” is “新华大厦”, which it made a second building of, with its
    enterprises and users split between the two). A row renamed to its own name written another way is not held
    up by an old near-twin of it."""
    exact = session.scalar(select(model).where(model.name == name).limit(1))
    if exact is not None:
        return exact if exact.id != row_id else None
    own = session.get(model, row_id) if row_id else None
    key = place_name_key(name)
    if own is not None and place_name_key(own.name) == key:
        return None
    # Full-width letters and digits too (“创智天地３号楼” is “创智天地3号楼”, as a Chinese input method writes it),
    # which SQL does not fold: buildings and grids are few, so their names are compared here.
    for other_id, other_name in session.execute(select(model.id, model.name).where(model.id != (row_id or 0))
                                                .order_by(model.id)):
        if place_name_key(other_name) == key:
            return session.get(model, other_id)
    return None


def place_name_key(name: str) -> str:
    """A building's or grid's name folded for comparison: as `normalized_name`, with full-width letters, digits and
    signs as half-width (NFKC)."""
    return normalized_name(unicodedata.normalize("NFKC", name or ""))


def _check_grid(session: Session, values: Mapping[str, Any], grid_id: int | None = None) -> None:
    if "name" in values:
        other = name_taken(session, Grid, values["name"], grid_id)
        if other is not None:
            raise Conflict(f"已有名为「{other.name}」的网格，请换一个名称。", fields={"name": "名称已存在"})
    staff_id = values.get("specialist_staff_id")
    if staff_id is not None and session.get(StaffUser, staff_id) is None:
        raise ValidationError("没有找到这个工作人员账号。", fields={"specialist_staff_id": "账号不存在"})


def create_grid(session: Session, actor: Actor, data: Mapping[str, Any]) -> Grid:
    """Create a grid team (网格); names are unique."""
    values = clean_values(data, GRID_FIELDS, partial=False)
    _check_grid(session, values)
    grid = Grid(**values)
    session.add(grid)
    _flush(session, grid, f"已有名为「{values['name']}」的网格，请换一个名称。", "name")
    audit(session, actor, "grid.created", grid, name=grid.name)
    return grid


def _cleared_links(session: Session, **columns: Any) -> dict[str, list[int]]:
    """Ids of other domains' rows that still name the row being deleted, by the column the database will clear
    (ON DELETE SET NULL): `cleared_appeals=(Appeal.id, Appeal.grid_id == grid.id)`. Listed in the deletion's
    audit row, so the change to those records is on file."""
    out = {}
    for name, (id_column, clause) in columns.items():
        ids = list(session.scalars(select(id_column).where(clause).order_by(id_column)))
        if ids:
            out[name] = ids
    return out


# The stale-page check lives in ..edits (activities, notices and staff accounts use it too).
_locked_for_edit = locked_for_edit
_refuse_stale = refuse_stale


def update_grid(session: Session, actor: Actor, grid_id: int, data: Mapping[str, Any], *,
                seen: datetime | None = None) -> Grid:
    """Change a grid's name, specialist or note; `seen` as for update_enterprise."""
    grid = get_grid(session, grid_id)
    if seen is not None:
        grid = _locked_for_edit(session, Grid, grid_id, "没有找到这个网格，可能已被删除。")
    values = clean_values(data, GRID_FIELDS, partial=True)
    _check_grid(session, values, grid.id)
    changes = changed_fields(grid, values)
    _refuse_stale(grid, changes, seen, "网格档案")
    for k, v in values.items():
        setattr(grid, k, v)
    _flush(session, grid, f"已有名为「{grid.name}」的网格，请换一个名称。", "name")
    if changes:
        rerouted: dict[str, Any] = {}
        ids: list[int] = []
        if "specialist_staff_id" in changes:
            # Its open appeals name the specialist who now serves the grid, as a new one would.
            from ..appeals.services import follow_grid_specialist

            if ids := follow_grid_specialist(session, grid.id, grid.specialist_staff_id):
                rerouted["rerouted_appeals"] = ids
        row = audit(session, actor, "grid.updated", grid, changes=changes, **rerouted)
        if ids:
            # ...and the new specialist hears of them once, in one message, keyed by this change's audit row,
            # which says who was told (nobody: the specialist is the one acting, or has no linked WeChat).
            from ..appeals.services import notify_grid_specialist

            session.flush()
            told = notify_grid_specialist(session, grid, ids, f"grid.updated:{row.id}", actor=actor)
            staff = session.get(StaffUser, grid.specialist_staff_id) if told else None
            notified = [{"staff_id": staff.id, "name": staff.display_name or staff.username,
                         "appeals": len(ids)}] if staff is not None else []
            row.data = {**row.data, "notified": notified}
    return grid


def delete_grid(session: Session, actor: Actor, grid_id: int) -> None:
    """Delete a grid that no longer covers any building."""
    grid = get_grid(session, grid_id)
    n = session.scalar(select(func.count(Building.id)).where(Building.grid_id == grid.id)) or 0
    if n:
        raise Conflict(f"网格「{grid.name}」下还有 {n} 栋楼宇，请先把这些楼宇调整到其他网格再删除。")
    from ..appeals.models import Appeal

    audit(session, actor, "grid.deleted", grid, name=grid.name,
          **_cleared_links(session, cleared_appeals=(Appeal.id, Appeal.grid_id == grid.id)))
    session.delete(grid)
    session.flush()


# --- buildings --------------------------------------------------------------------------------------

def list_buildings(session: Session, *, q: str | None = None, grid_id: int | None = None) -> list[tuple[Building, int]]:
    """Buildings (optionally filtered) with how many enterprises each houses: all of them (the pickers)."""
    return [(b, n) for b, n in session.execute(_buildings_query(q, grid_id)).unique()]


def page_buildings(session: Session, *, q: str | None = None, grid_id: int | None = None, page: int = 1,
                   per_page: int = 20) -> Page:
    """One page of list_buildings (the buildings list: a street has hundreds), as (building, enterprises) pairs."""
    stmt = _buildings_query(q, grid_id)
    total = session.scalar(select(func.count()).select_from(
        stmt.with_only_columns(Building.id).order_by(None).subquery())) or 0
    rows = session.execute(stmt.limit(per_page).offset((page - 1) * per_page)).unique()
    return Page([(b, n) for b, n in rows], total, page, per_page)


def _buildings_query(q: str | None, grid_id: int | None) -> Select:
    counts = (select(Enterprise.building_id, func.count(Enterprise.id).label("n"))
              .where(Enterprise.retired_at.is_(None)).group_by(Enterprise.building_id).subquery())
    stmt = (select(Building, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.building_id == Building.id)
            .order_by(Building.name, Building.id))
    if q:
        # icontains: "soho" finds "SOHO东海广场" on PostgreSQL too (its LIKE is case-sensitive, SQLite's is not).
        stmt = stmt.where(or_(Building.name.icontains(q, autoescape=True),
                              # blanks and brackets as typed: “新华 大厦”, “(一期)” find “新华大厦（一期）”
                              name_key(Building.name).contains(normalized_name(q), autoescape=True),
                              # and full-width digits and letters (“３号楼”) find the half-width ones on file
                              name_key(Building.name).contains(place_name_key(q), autoescape=True),
                              Building.address.icontains(q, autoescape=True)))
    if grid_id:
        stmt = stmt.where(Building.grid_id == grid_id)
    return stmt


def get_building(session: Session, building_id: int) -> Building:
    building = session.get(Building, building_id)
    if building is None:
        raise NotFound("没有找到这栋楼宇，可能已被删除。")
    return building


MERGE_HOPS = 20  # a chain of merges longer than this is not followed (a loop in hand-edited data)


def building_carried_on(session: Session, building_id: int) -> Building | None:
    """The building a stored id stands for now (a poster's QR code printed before a merge): the building itself, or,
    merged away as a duplicate (`merge_buildings` deletes it and keeps a building.merged audit row), the building it
    was merged into, along a chain of merges; None when it was deleted, or is unknown. Read only."""
    seen: set[int] = set()
    current = building_id
    for _ in range(MERGE_HOPS):
        found = session.get(Building, current)
        if found is not None:
            return found
        seen.add(current)
        # Few rows (one per merge): read them all rather than reach into the JSON, which each database spells its way.
        into = next((int(target) for target, data in session.execute(
            select(AuditLog.target_id, AuditLog.data).where(AuditLog.action == "building.merged")
            .order_by(AuditLog.id.desc()))
            if isinstance(data, dict) and data.get("duplicate_id") == current and str(target).isdigit()), None)
        if into is None or into in seen:
            return None
        current = into
    return None


def building_to_point_at(session: Session, building_id: int, *, current: int | None = None) -> Building | None:
    """The building a row (an appeal, an enterprise, a user, an activity) is about to be pointed at, locked FOR KEY
    SHARE and read afresh, or None when it is gone. A merge or a deletion of it (which lock it FOR UPDATE first)
    either waits for the caller's commit and then moves or counts the row with the others, or the caller waits for
    theirs and finds the building gone. Read without the lock, a building being merged away looked present and the
    write then failed on the foreign key (a 500, or a credit-code clash for an enterprise), and a deletion's
    ON DELETE SET NULL cleared the row it had just been pointed at. (SQLite queues writers: no lock needed.)

    `current`: the building the row points at now. Sent again unchanged (a form saves every field) it is not
    re-pointed, and is read without the lock: the caller holds the row, which a merge of that building locks after
    the building, so waiting for the building here was a deadlock. The merge moves the row after the caller commits.
    A caller holding such a row for another reason takes the lock before it (submit_appeal)."""
    if current is not None and building_id == current:
        return session.get(Building, building_id)
    return session.scalar(select(Building).where(Building.id == building_id)
                          .with_for_update(read=True, key_share=True, of=Building)
                          .execution_options(populate_existing=True))


def _check_building(session: Session, values: Mapping[str, Any], building_id: int | None = None) -> None:
    if "name" in values:
        other = name_taken(session, Building, values["name"], building_id)
        if other is not None:
            raise Conflict(f"已有名为「{other.name}」的楼宇，请换一个名称。", fields={"name": "名称已存在"})
    if values.get("grid_id") is not None and session.get(Grid, values["grid_id"]) is None:
        raise ValidationError("没有找到这个网格。", fields={"grid_id": "网格不存在"})


def create_building(session: Session, actor: Actor, data: Mapping[str, Any]) -> Building:
    """Create a building (一楼一档); names are unique."""
    values = clean_values(data, BUILDING_FIELDS, partial=False)
    _check_building(session, values)
    building = Building(**values)
    session.add(building)
    _flush(session, building, f"已有名为「{values['name']}」的楼宇，请换一个名称。", "name")
    audit(session, actor, "building.created", building, name=building.name, grid_id=building.grid_id)
    return building


def update_building(session: Session, actor: Actor, building_id: int, data: Mapping[str, Any], *,
                    seen: datetime | None = None) -> Building:
    """Change a building's name, address, grid or note; `seen` as for update_enterprise."""
    building = get_building(session, building_id)
    if seen is not None:
        building = _locked_for_edit(session, Building, building_id, "没有找到这栋楼宇，可能已被删除。")
    values = clean_values(data, BUILDING_FIELDS, partial=True)
    _check_building(session, values, building.id)
    changes = changed_fields(building, values)
    _refuse_stale(building, changes, seen, "楼宇档案")
    for k, v in values.items():
        setattr(building, k, v)
    _flush(session, building, f"已有名为「{building.name}」的楼宇，请换一个名称。", "name")
    session.expire(building, ["grid"])
    if changes:
        audit(session, actor, "building.updated", building, changes=changes,
              **building_moved(session, actor, building, changes))
    return building


def building_moved(session: Session, actor: Actor, building: Building, changes: Mapping[str, Any]) -> dict[str, Any]:
    """After a change to a building (`changes` as changed_fields gives them): moved to another grid, its open
    appeals go along to the team now serving it. For its audit row: {"rerouted_appeals": [ids]}, or {}."""
    if "grid_id" not in changes:
        return {}
    from ..appeals.services import follow_building_to_grid, specialist_alerts

    with specialist_alerts(session, actor) as alerts:
        moved = follow_building_to_grid(session, actor, building, changes["grid_id"][0])
    return {"rerouted_appeals": moved, **alerts.audited(moved)} if moved else {}


def _audiences_naming(session: Session, building_id: int) -> list[str]:
    """Activities still to come and draft notices whose audience lists this building (a JSON list, no foreign
    key): deleting it would leave a dangling id there, or an empty list that means everyone."""
    from ..activities.models import Activity, ActivityStatus
    from ..db import utcnow
    from ..notices.broadcast_models import Notice, NoticeStatus

    names = [f"活动「{a.title}」" for a in session.scalars(select(Activity).where(
        Activity.status != ActivityStatus.CANCELLED.value, Activity.ends_at > utcnow()))
        if building_id in (a.audience_building_ids or [])]
    names += [f"通知「{n.title}」" for n in session.scalars(select(Notice).where(
        Notice.status == NoticeStatus.DRAFT.value)) if building_id in ((n.audience or {}).get("building_ids") or [])]
    return names


def _activities_held_in(session: Session, building_id: int) -> list[str]:
    """Activities still to come held in this building: deleting it would clear their venue silently."""
    from ..activities.models import Activity, ActivityStatus
    from ..db import utcnow

    return [f"活动「{title}」" for title in session.scalars(select(Activity.title).where(
        Activity.building_id == building_id, Activity.status != ActivityStatus.CANCELLED.value,
        Activity.ends_at > utcnow()).order_by(Activity.starts_at))]


def _building_in_use(session: Session, building: Building) -> str | None:
    """Why the building cannot be deleted yet, naming everything that still hangs off it and what to do (all at
    once: one reason at a time sent staff back and forth), or None."""
    from ..appeals.models import Appeal
    from ..appeals.states import TERMINAL

    found: list[str] = []
    todo: list[str] = []
    n = session.scalar(select(func.count(Enterprise.id)).where(Enterprise.building_id == building.id,
                                                               Enterprise.retired_at.is_(None))) or 0
    if n:
        found.append(f"还登记着 {n} 家企业")
        todo.append("把这些企业调整到其他楼宇（它们未办结的诉求会随企业转过去）")
    # Not yet closed, rejected or withdrawn: still handled (or awaiting the rating, which may reopen it), and the
    # building is where the problem is (the database would clear it silently).
    numbers = list(session.scalars(select(Appeal.number).where(
        Appeal.building_id == building.id, Appeal.status.not_in([s.value for s in TERMINAL])).order_by(Appeal.id)))
    if numbers:
        found.append(f"还有 {len(numbers)} 件未关闭的诉求（{'、'.join(numbers[:3])}{'等' if len(numbers) > 3 else ''}）")
        todo.append("等这些诉求关闭")
    held = _activities_held_in(session, building.id)
    if held:
        found.append(f"还是{'、'.join(held[:3])}{'等' if len(held) > 3 else ''}的举办地点")
        todo.append("修改活动地点")
    using = _audiences_naming(session, building.id)
    if using:
        found.append(f"还是{'、'.join(using[:3])}{'等' if len(using) > 3 else ''}的推送或报名范围")
        todo.append("调整这些范围")
    if not found:
        return None
    return (f"楼宇「{building.name}」{'，'.join(found)}，现在不能删除。如果它是另一栋楼宇的重复建档，请管理员打开保留的那栋"
            f"楼宇的编辑页，用「合并重复楼宇」把它合并过去，这些会一并转过去；否则请先{'、'.join(todo)}，再删除。")


def delete_building(session: Session, actor: Actor, building_id: int) -> None:
    """Delete a building nothing current hangs off any more: no enterprise on file, no appeal still open, no
    activity to come held in it or meant for it, no draft notice for it (a duplicate is merged instead)."""
    # Locked before the checks, as a merge locks it: a row being pointed at it meanwhile (building_to_point_at) is
    # waited for and then counted below, instead of being cleared by ON DELETE SET NULL after the checks missed it.
    building = session.scalar(select(Building).where(Building.id == building_id).with_for_update(of=Building)
                              .execution_options(populate_existing=True))
    if building is None:
        raise NotFound("没有找到这栋楼宇，可能已被删除。")
    problem = _building_in_use(session, building)
    if problem:
        raise Conflict(problem)
    # Users who picked this building keep their account; the database clears their building.
    cleared = list(session.scalars(select(User.id).where(User.building_id == building.id).order_by(User.id)))
    from ..activities.models import Activity
    from ..appeals.models import Appeal

    audit(session, actor, "building.deleted", building, name=building.name, cleared_users=cleared,
          **_cleared_links(session, cleared_appeals=(Appeal.id, Appeal.building_id == building.id),
                           cleared_activities=(Activity.id, Activity.building_id == building.id),
                           # retired duplicates filed here (they count nowhere, so they do not stop it)
                           cleared_enterprises=(Enterprise.id, Enterprise.building_id == building.id)))
    session.delete(building)
    session.flush()


BUILDING_MERGE_FIELDS = (
    Field("duplicate", "str", "重复楼宇的编号或名称", required=True, max_len=100),
    # The duplicate is in another grid: its open appeals go to the kept building's grid team, said and confirmed.
    Field("confirm_grid", "bool", "确认以保留楼宇的网格为准", default=False),
)


def find_building(session: Session, ref: str, *, other_than: int | None = None) -> Building:
    """The building named by its number (id) or its name, written as on file or another way (blanks, width, case);
    `other_than` is skipped when a name is read (the kept building's own name written another way)."""
    ref = strip_invisible(ref).strip()
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:  # past any id (and SQLite's integers): a name, if any
        found = session.get(Building, int(ref))
        if found is not None:
            return found
    exact = session.scalar(select(Building).where(Building.name == ref).limit(1))
    if exact is not None:
        return exact
    key = place_name_key(ref)
    for bid, name in session.execute(select(Building.id, Building.name).order_by(Building.id)):
        if bid != other_than and place_name_key(name) == key:
            return session.get(Building, bid)
    raise NotFound(f"没有找到要合并的楼宇「{ref}」，它可能已被合并或删除；请检查编号或名称。",
                   fields={"duplicate": "楼宇不存在"})


def _move_audiences(session: Session, duplicate_id: int, keep_id: int) -> dict[str, list[int]]:
    """Activities and notices whose audience lists the duplicate (a JSON list, no foreign key) list the kept building
    instead, each once: {"activity_audiences": [ids], "notice_audiences": [ids]} (those changed)."""
    from ..activities.models import Activity
    from ..notices.broadcast_models import Notice

    def swapped(ids: list | None) -> list | None:
        if duplicate_id not in (ids or []):
            return None
        out: list = []
        for b in ids or []:
            b = keep_id if b == duplicate_id else b
            if b not in out:
                out.append(b)
        return out

    moved: dict[str, list[int]] = {}
    for activity in session.scalars(select(Activity).order_by(Activity.id)):
        ids = swapped(activity.audience_building_ids)
        if ids is not None:
            activity.audience_building_ids = ids
            moved.setdefault("activity_audiences", []).append(activity.id)
    for notice in session.scalars(select(Notice).order_by(Notice.id)):
        ids = swapped((notice.audience or {}).get("building_ids"))
        if ids is not None:
            notice.audience = {**notice.audience, "building_ids": ids}
            moved.setdefault("notice_audiences", []).append(notice.id)
    return moved


def merge_buildings(session: Session, actor: Actor, keep_id: int, duplicate_id: int, *,
                    confirm_grid: bool = False) -> dict[str, Any]:
    """Merge a duplicate building (“环球港 A座” beside “环球港A座”) into the one kept: its enterprises, users,
    appeals, activities (venue and audience) and notice audiences move over, its open appeals go to the kept
    building's grid team with a timeline row each, and the duplicate is deleted; one audit row with the counts.
    A duplicate in another grid is merged only with `confirm_grid` (the kept building's grid wins). All of it in
    the caller's transaction: an error leaves nothing half moved. Returns the audit row's data."""
    from ..activities.models import Activity
    from ..appeals.models import Appeal
    from ..appeals.services import grid_words, move_to_building, specialist_alerts
    from ..appeals.states import OPEN, AppealStatus
    from ..db import utcnow

    if keep_id == duplicate_id:
        raise ValidationError("不能把同一栋楼宇合并到它自己，请选择另一栋重复建档的楼宇。",
                              fields={"duplicate": "不能是同一栋楼宇"})
    # Both rows locked in id order: two admins merging the same pair the other way round cannot both win. The
    # duplicate FOR UPDATE (it is deleted): a row being pointed at it (building_to_point_at) is waited for and moved
    # below, or waits and finds it gone. The kept one FOR NO KEY UPDATE, which keeps it from being deleted or merged
    # away meanwhile but lets rows be pointed at it: an appeal moved from the duplicate to the kept building by hand
    # held its own row while waiting for the building, and the merge waited for that row below (a deadlock).
    rows = {bid: session.scalar(select(Building).where(Building.id == bid)
                                .with_for_update(of=Building, key_share=bid == keep_id)
                                .execution_options(populate_existing=True))
            for bid in sorted({keep_id, duplicate_id})}
    keep, dup = rows.get(keep_id), rows.get(duplicate_id)
    if keep is None:
        raise NotFound("没有找到这栋楼宇，可能已被删除。")
    if dup is None:
        raise NotFound("没有找到要合并的楼宇，它可能已被合并或删除。", fields={"duplicate": "楼宇不存在"})
    regridded = dup.grid_id is not None and dup.grid_id != keep.grid_id
    if regridded and not confirm_grid:
        raise Conflict(f"「{dup.name}」属于{grid_words(session, dup.grid_id)}，「{keep.name}」属于"
                       f"{grid_words(session, keep.grid_id)}。合并后以「{keep.name}」的网格为准：「{dup.name}」的企业和"
                       f"未办结的诉求转由{grid_words(session, keep.grid_id)}服务。确认无误请勾选“以保留楼宇的网格为准”"
                       "后再合并。", code="grid_differs", fields={"confirm_grid": "请确认以保留楼宇的网格为准"})
    moved: dict[str, list[int]] = {}
    # The rows to move are locked as they are read (and read again after any wait): one a colleague is moving to
    # another building at this moment is left where they put it, not moved back over their change. FOR NO KEY
    # UPDATE, the lock the update takes anyway: rows naming them (an appeal's timeline, a notification) may still
    # be written meanwhile, which FOR UPDATE made wait (a deadlock with a colleague's save holding the appeal).
    for model, key in ((Enterprise, "enterprises"), (User, "users"), (Activity, "activities")):
        ids = list(session.scalars(select(model.id).where(model.building_id == dup.id).order_by(model.id)
                                   .with_for_update(of=model, key_share=True)))
        if ids:
            session.execute(update(model).where(model.id.in_(ids)).values(building_id=keep.id)
                            .execution_options(synchronize_session=False))
            moved[key] = ids
    appeal_ids = list(session.scalars(select(Appeal.id).where(Appeal.building_id == dup.id).order_by(Appeal.id)
                                      .with_for_update(of=Appeal, key_share=True)))
    still_open = list(session.scalars(select(Appeal).where(
        Appeal.building_id == dup.id, Appeal.status.in_([s.value for s in OPEN])).order_by(Appeal.id)
        .execution_options(populate_existing=True)).unique())
    # Merged into a main appeal (已合并, often another enterprise's): the same problem at the same building, moved as
    # the open ones are (timeline row, the kept building's grid), not only re-pointed: split off later it was handled
    # by the grid of a building that is gone, and nobody was told it had come.
    merged_along = list(session.scalars(select(Appeal).where(
        Appeal.building_id == dup.id, Appeal.status == AppealStatus.DUPLICATE.value).order_by(Appeal.id)
        .execution_options(populate_existing=True)).unique())
    note = (f"楼宇「{dup.name}」是「{keep.name}」的重复建档，已合并，诉求随之转到「{keep.name}」"
            + (f"，由{grid_words(session, keep.grid_id)}办理" if regridded else ""))
    with specialist_alerts(session, actor) as alerts:  # one message per specialist for all of them
        rerouted = move_to_building(session, actor, still_open, keep, note)
        for child in merged_along:
            child.version += 1
            child.updated_at = utcnow()
        move_to_building(session, actor, merged_along, keep, note)
    if appeal_ids:
        # the closed ones keep the grid that handled them; their building is the one that carries on
        session.execute(update(Appeal).where(Appeal.building_id == dup.id).values(building_id=keep.id)
                        .execution_options(synchronize_session=False))
        moved["appeals"] = appeal_ids
    moved.update(_move_audiences(session, dup.id, keep.id))
    session.flush()
    data: dict[str, Any] = {
        "duplicate_id": dup.id, "duplicate_name": dup.name, "kept_name": keep.name,
        "counts": {k: len(moved.get(k, [])) for k in ("enterprises", "appeals", "activities", "activity_audiences",
                                                      "notice_audiences", "users")},
        "moved": moved,
    }
    if dup.grid_id != keep.grid_id:
        data["grid_id"] = [dup.grid_id, keep.grid_id]
    if rerouted:
        data["rerouted_appeals"] = rerouted
    if merged_along:
        data["merged_appeals"] = [a.id for a in merged_along]
    data.update(alerts.audited(still_open or merged_along))
    audit(session, actor, "building.merged", keep, **data)
    session.delete(dup)
    session.flush()
    session.expire_all()  # enterprises, users and appeals loaded before the bulk updates follow them
    return data


# --- enterprises ------------------------------------------------------------------------------------

def get_enterprise(session: Session, enterprise_id: int) -> Enterprise:
    enterprise = session.get(Enterprise, enterprise_id)
    if enterprise is None:
        raise NotFound("没有找到这家企业，可能已被删除。")
    return enterprise


# The invisible characters old files may hold (written before validation removed them: see strip_invisible), left out
# when a stored name or code is compared: zero-width space, joiners and marks, the word joiner, a BOM, a soft hyphen.
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad")


def code_key(column: Any) -> Any:
    """SQL: a stored credit code folded the way `normalized_code` folds a typed one (upper case, no blanks). Old
    files were written in lower case or with blanks, and the unique index compares the text as stored: an exact
    comparison missed them (a binding made a second file of the same enterprise)."""
    for blank in (" ", "\u3000", "\t", *INVISIBLE):
        column = func.replace(column, blank, "")
    return func.upper(column)


def find_by_code(session: Session, code: str, *, lock: bool = False) -> Enterprise | None:
    """The file on record for a credit code however an old file wrote it: a current file before a retired one,
    the exact spelling before another. `lock`: the row is locked FOR KEY SHARE and read afresh: a merge or a
    deletion of it (FOR UPDATE) waits for the caller's commit, and the caller waited for theirs; a merge of the
    file it went into only re-points it (a no-key update), which must not wait, or the two would deadlock."""
    code = normalized_code(code)
    if not code:
        return None
    stmt = (select(Enterprise).where(or_(Enterprise.credit_code == code, code_key(Enterprise.credit_code) == code))
            .order_by(Enterprise.retired_at.is_not(None), Enterprise.credit_code != code, Enterprise.id).limit(1))
    if lock:
        stmt = stmt.with_for_update(read=True, key_share=True, of=Enterprise).execution_options(populate_existing=True)
    return session.scalar(stmt)


def carrying_on(session: Session, enterprise: Enterprise, *, lock: bool = False) -> Enterprise | None:
    """The file that carries on for `enterprise`: itself, or the file a merged duplicate went into (followed
    along a chain of merges). None for a retired file whose kept file is gone (old data: deleting a kept file
    now deletes its duplicates too). `lock`: each file on the way is share-locked and read afresh, so a merge
    committing meanwhile is either waited for or waits."""
    seen = {enterprise.id}
    while enterprise.retired:
        into = enterprise.merged_into_id
        if into is None or into in seen:
            return None
        seen.add(into)
        stmt = select(Enterprise).where(Enterprise.id == into)
        if lock:
            stmt = stmt.with_for_update(read=True, key_share=True, of=Enterprise).execution_options(populate_existing=True)
        enterprise = session.scalar(stmt)
        if enterprise is None:
            return None
    return enterprise


def credit_code_conflict(session: Session, code: str, enterprise_id: int | None = None) -> Conflict | None:
    """The Conflict to raise when `code` is already on file for another enterprise (however an old file wrote it).
    A retired duplicate merged into the file being edited holds that code for the record, and is no conflict."""
    other = None
    for found in session.scalars(select(Enterprise).where(
            or_(Enterprise.credit_code == code, code_key(Enterprise.credit_code) == normalized_code(code)),
            Enterprise.id != (enterprise_id or 0)).order_by(Enterprise.retired_at.is_not(None), Enterprise.id)):
        current = carrying_on(session, found) if found.retired else found
        if found.credit_code == code or current is None:  # the very text is taken (the unique index says so)
            other = found
            break
        if current.id != enterprise_id:
            other = current  # the file that carries on for a retired duplicate with this code
            break
    if other is None:
        return None
    return Conflict(f"统一社会信用代码 {code} 已登记为「{other.name}」，请勿重复建档。",
                    fields={"credit_code": "已存在"})


def _check_enterprise(session: Session, values: Mapping[str, Any], enterprise_id: int | None = None,
                      current_building: int | None = None) -> None:
    if "credit_code" in values:
        conflict = credit_code_conflict(session, values["credit_code"], enterprise_id)
        if conflict:
            raise conflict
    if values.get("building_id") is not None and building_to_point_at(
            session, values["building_id"], current=current_building) is None:
        raise ValidationError("没有找到这栋楼宇，它可能已被合并或删除；请刷新页面后重新选择。",
                              fields={"building_id": "楼宇不存在"})


def create_enterprise(session: Session, actor: Actor, data: Mapping[str, Any]) -> Enterprise:
    """Create an enterprise file (一企一档); the credit code is checked and unique."""
    values = clean_values(data, ENTERPRISE_FIELDS, partial=False)
    _check_enterprise(session, values)
    enterprise = Enterprise(**values)
    session.add(enterprise)
    _flush(session, enterprise, f"统一社会信用代码 {values['credit_code']} 已登记，请勿重复建档。", "credit_code")
    audit(session, actor, "enterprise.created", enterprise, name=enterprise.name,
          credit_code=enterprise.credit_code)
    return enterprise


def keeps_its_spelling(session: Session, enterprise: Enterprise, code: str | None) -> bool:
    """Whether `code`, sent for `enterprise`, is its own code written the standard way while that spelling is held
    by a duplicate merged into it (kept on record): the old file's code, in lower case, comes back from a form or
    an import folded, and writing it would collide with the retired file; it is the same code, left as stored."""
    if not code or code == enterprise.credit_code or normalized_code(enterprise.credit_code) != code:
        return False
    holder = session.scalar(select(Enterprise).where(Enterprise.credit_code == code))
    return holder is not None and holder.retired and getattr(carrying_on(session, holder), "id", None) == enterprise.id


def update_enterprise(session: Session, actor: Actor, enterprise_id: int, data: Mapping[str, Any], *,
                      seen: datetime | None = None) -> Enterprise:
    """Change an enterprise file; only the fields given change. `seen` is the file's updated_at on the page the
    edit was made on: a change to a file saved since is refused (StaleEdit), see _refuse_stale."""
    enterprise = get_enterprise(session, enterprise_id)
    if seen is not None:
        enterprise = _locked_for_edit(session, Enterprise, enterprise_id, "没有找到这家企业，可能已被删除。")
    if enterprise.retired:
        into = enterprise.merged_into.name if enterprise.merged_into else "另一份档案"
        raise Conflict(f"「{enterprise.name}」已合并到「{into}」，这份档案只作留底，不能再修改；请修改「{into}」的档案。",
                       code="enterprise_retired")
    values = clean_values(data, ENTERPRISE_FIELDS, partial=True)
    if keeps_its_spelling(session, enterprise, values.get("credit_code")):
        del values["credit_code"]
    _check_enterprise(session, values, enterprise.id, enterprise.building_id)
    changes = changed_fields(enterprise, values)
    _refuse_stale(enterprise, changes, seen, "企业档案")
    for k, v in values.items():
        setattr(enterprise, k, v)
    _flush(session, enterprise, f"统一社会信用代码 {enterprise.credit_code} 已登记，请勿重复建档。", "credit_code")
    session.expire(enterprise, ["building"])  # follow a changed building_id
    if changes:
        audit(session, actor, "enterprise.updated", enterprise, changes=changes,
              **enterprise_moved(session, actor, enterprise, changes))
    return enterprise


def enterprise_moved(session: Session, actor: Actor, enterprise: Enterprise, changes: Mapping[str, Any]) -> dict[str, Any]:
    """After a change to an enterprise (`changes` as changed_fields gives them): moved to another building, the open
    appeals it filed at the old one go along. For its audit row: {"moved_appeals": [ids]}, or {}. Moved out to no
    building, they stay where the problem was reported."""
    old, new = changes.get("building_id", (None, None))
    if old is None or new is None:
        return {}
    from ..appeals.services import follow_enterprise_to_building, specialist_alerts

    with session.no_autoflush, specialist_alerts(session, actor) as alerts:
        # (no autoflush: an import flushes its rows itself, turning a clash into a line of its report)
        moved = follow_enterprise_to_building(session, actor, enterprise, old)
    return {"moved_appeals": moved, **alerts.audited(moved)} if moved else {}


def delete_enterprise(session: Session, actor: Actor, enterprise_id: int, *,
                      with_kept_file: int | None = None) -> list[int]:
    """Delete an enterprise file; its contacts lose the binding (they can apply again). The retired duplicates
    merged into it go with it (each with its own audit row): they are records of the same enterprise that live
    only behind this file, and left behind they pointed at nothing, so that a user typing one's code was bound
    to a file no list shows, which staff could neither edit nor merge. Returns the ids of those duplicates."""
    # The row is locked first, as a merge and a binding request take it: a request binding a user to this file
    # meanwhile is waited for (and its user unbound below), or it waits and finds the file gone.
    enterprise = session.scalar(select(Enterprise).where(Enterprise.id == enterprise_id)
                                .with_for_update(of=Enterprise).execution_options(populate_existing=True))
    if enterprise is None:
        raise NotFound("没有找到这家企业，可能已被删除。")
    retired = list(session.scalars(select(Enterprise.id).where(Enterprise.merged_into_id == enterprise.id,
                                                               Enterprise.id != enterprise.id)
                                   .order_by(Enterprise.id)))
    for duplicate_id in retired:
        delete_enterprise(session, actor, duplicate_id, with_kept_file=enterprise.id)
    bound = list(session.scalars(select(User.id).where(User.enterprise_id == enterprise.id)))
    # Contacts verified or still waiting lose their binding without having done anything: tell them, or they keep
    # waiting for a check that will never come (a rejected one has heard already and needs nothing more).
    told = list(session.scalars(select(User.id).where(
        User.enterprise_id == enterprise.id,
        User.binding_state.in_([BindingState.PENDING.value, BindingState.VERIFIED.value])).order_by(User.id)))
    # Verified contacts applying to another enterprise: their application becomes their binding request.
    switching = dict(session.execute(select(User.id, User.pending_enterprise_id).where(
        User.enterprise_id == enterprise.id, User.pending_enterprise_id.is_not(None))).all())
    # Verified contacts of another enterprise who applied to this one: the application is gone, the binding stays.
    applied = dict(session.execute(select(User.id, User.enterprise_id).where(
        User.pending_enterprise_id == enterprise.id).order_by(User.id)).all())
    # Each of them gets a row of their own (the user's history in the audit log), as with a merge.
    states = dict(session.execute(select(User.id, User.binding_state).where(
        or_(User.enterprise_id == enterprise.id, User.pending_enterprise_id == enterprise.id))).all())
    for user_id in sorted(states):
        if user_id in switching:
            now: dict[str, Any] = {"now": BindingState.PENDING.value, "pending_enterprise_id": switching[user_id]}
        elif user_id in applied:
            now = {"now": "application_dropped", "verified_enterprise_id": applied[user_id]}
        else:
            now = {"now": BindingState.NONE.value}
        audit(session, actor, "binding.removed", _UserRef(user_id), enterprise_id=enterprise.id,
              enterprise_name=enterprise.name, binding_state=states[user_id], **now)
    for user_id in sorted({*told, *applied}):
        if user_id in switching:
            _tell_binding_removed(session, user_id, enterprise, still_applying=session.get(Enterprise,
                                                                                           switching[user_id]))
        elif user_id in applied:
            _tell_binding_removed(session, user_id, enterprise, still_bound=session.get(Enterprise, applied[user_id]))
        else:
            _tell_binding_removed(session, user_id, enterprise)
    if switching:
        session.execute(update(User).where(User.id.in_(list(switching)))
                        .values(enterprise_id=User.pending_enterprise_id, pending_enterprise_id=None,
                                binding_state=BindingState.PENDING.value))
    rest = [i for i in bound if i not in switching]
    if rest:
        session.execute(update(User).where(User.id.in_(rest))
                        .values(enterprise_id=None, binding_state=BindingState.NONE.value,
                                role=UserRole.WHITE_COLLAR.value))  # no longer anyone's contact
    if applied:
        session.execute(update(User).where(User.id.in_(list(applied))).values(pending_enterprise_id=None))
    from ..activities.models import Registration
    from ..appeals.models import Appeal

    kept = {"with_kept_file": with_kept_file} if with_kept_file is not None else {}
    if retired:
        kept["retired_files_deleted"] = retired
    audit(session, actor, "enterprise.deleted", enterprise, name=enterprise.name,
          credit_code=enterprise.credit_code, unbound_users=bound, applications_dropped=sorted(applied),
          pending_from_switch=sorted(switching), **kept,
          **_cleared_links(session, cleared_appeals=(Appeal.id, Appeal.enterprise_id == enterprise.id),
                           cleared_registrations=(Registration.id, Registration.enterprise_id == enterprise.id)))
    session.delete(enterprise)
    try:
        session.flush()
    except IntegrityError:
        # Rows of other domains (appeals, registrations) that must keep their enterprise.
        raise Conflict(f"企业「{enterprise.name}」还有关联的业务记录，不能删除。") from None
    return retired


def drop_unclaimed_file(session: Session, actor: Actor, enterprise_id: int | None) -> bool:
    """Delete the file a binding request made (an unknown credit code) once the application it was made for is
    withdrawn or replaced and nothing else names it: nobody bound to it or applying for it, no appeal, registration
    or merged duplicate, and staff have not touched it (its note still says 待核实, no staff row on it). Left, it
    stayed in 一企一档 under whatever name was typed with nothing leading staff to check it. A file locked by a
    request binding to it at this moment (or a merge, a deletion) is left alone: it is someone's business now."""
    from ..activities.models import Registration
    from ..appeals.models import Appeal

    if enterprise_id is None:
        return False
    enterprise = session.scalar(select(Enterprise).where(Enterprise.id == enterprise_id)
                                .with_for_update(of=Enterprise, skip_locked=True)
                                .execution_options(populate_existing=True))
    if enterprise is None or enterprise.retired or enterprise.note != NOTE_BINDING_PENDING:
        return False
    named = (select(User.id).where(or_(User.enterprise_id == enterprise.id, User.pending_enterprise_id == enterprise.id)),
             select(Appeal.id).where(Appeal.enterprise_id == enterprise.id),
             select(Registration.id).where(Registration.enterprise_id == enterprise.id),
             select(Enterprise.id).where(Enterprise.merged_into_id == enterprise.id),
             select(AuditLog.id).where(AuditLog.target_type == Enterprise.__tablename__,
                                       AuditLog.target_id == str(enterprise.id), AuditLog.actor_type != "user"))
    if any(session.scalar(stmt.limit(1)) is not None for stmt in named):
        return False
    audit(session, actor, "enterprise.deleted", enterprise, name=enterprise.name, credit_code=enterprise.credit_code,
          via="binding_withdrawn")
    session.delete(enterprise)
    session.flush()
    return True


# --- merging duplicate files -------------------------------------------------------------------------

MERGE_FIELDS = (Field("duplicate", "str", "重复档案的编号或统一社会信用代码", required=True, max_len=64),)
# Columns a merge copies from the duplicate into the kept file when the kept file has them empty.
_MERGE_FILL = ("industry", "building_id", "floor_room", "tax_bracket", "contact_name", "contact_phone")


def normalized_code(code: str) -> str:
    """A credit code as validation stores it: full-width folded, upper case, no blanks (old files may differ)."""
    return re.sub(r"\s", "", unicodedata.normalize("NFKC", strip_invisible(code or ""))).upper()


def find_enterprise(session: Session, ref: str, *, other_than: int | None = None) -> Enterprise:
    """The file a staff member named by its number (档案编号, the id) or its credit code. `other_than`: the file
    the duplicate is named from, which the code names too when the duplicate is an old file with the same code
    written in lower case: the other file is meant."""
    ref = normalized_code(ref)
    enterprise = None
    if ref.isdigit() and len(ref) <= 9:
        enterprise = session.get(Enterprise, int(ref))
    if enterprise is None and ref:
        enterprise = session.scalar(select(Enterprise).where(code_key(Enterprise.credit_code) == ref)
                                    .order_by(Enterprise.id == (other_than or 0), Enterprise.retired_at.is_not(None),
                                              Enterprise.id).limit(1))
    if enterprise is None:
        problem = f"没有找到编号或统一社会信用代码为「{ref}」的企业档案，请核对后再试。"
        raise ValidationError(problem, fields={"duplicate": "没有找到这份档案"})
    return enterprise


# How the same company name is written differently: full- or half-width brackets (“（集团）”, “(集团)”), blanks.
_NAME_FOLDS = (("（", "("), ("）", ")"), (" ", ""), ("\u3000", ""), *((ch, "") for ch in INVISIBLE))


def normalized_name(name: str) -> str:
    """A company name folded for comparison with `name_key` (brackets half-width, no blanks, ASCII lower case)."""
    name = strip_invisible(name or "")
    for a, b in _NAME_FOLDS:
        name = name.replace(a, b)
    return re.sub(r"[A-Z]+", lambda m: m.group().lower(), name)


def name_key(column: Any) -> Any:
    """SQL: a stored company name folded as `normalized_name` folds a typed one."""
    for a, b in _NAME_FOLDS:
        column = func.replace(column, a, b)
    return func.lower(column)


def possible_duplicates(session: Session, enterprise: Enterprise) -> list[Enterprise]:
    """Other current files that look like the same enterprise: the same name (brackets and blanks as they come),
    or the same credit code written differently (an old file in lower case, with blanks)."""
    code = normalized_code(enterprise.credit_code)
    stmt = (select(Enterprise).where(Enterprise.id != enterprise.id, Enterprise.retired_at.is_(None),
                                     or_(name_key(Enterprise.name) == normalized_name(enterprise.name),
                                         code_key(Enterprise.credit_code) == code))
            .order_by(Enterprise.id).limit(20))
    return list(session.scalars(stmt))


def merged_from(session: Session, enterprise_id: int) -> list[Enterprise]:
    """The retired duplicates merged into this file."""
    return list(session.scalars(select(Enterprise).where(Enterprise.merged_into_id == enterprise_id)
                                .order_by(Enterprise.id)))


def _merge_problem(keep: Enterprise, dup: Enterprise) -> AppError | None:
    if keep.id == dup.id:
        return ValidationError("不能把档案合并到它自己，请选择另一份重复的档案。", fields={"duplicate": "不能是同一份档案"})
    if keep.retired:
        into = keep.merged_into.name if keep.merged_into else "另一份档案"
        return Conflict(f"「{keep.name}」已经合并到「{into}」，不能再作为保留的档案；请在「{into}」的档案里合并。",
                        code="enterprise_retired")
    if dup.retired:
        into = dup.merged_into.name if dup.merged_into else "另一份档案"
        return Conflict(f"「{dup.name}」已经合并到「{into}」了，不需要再合并。", code="enterprise_retired",
                        fields={"duplicate": "已合并过"})
    keep_code, dup_code = normalized_code(keep.credit_code), normalized_code(dup.credit_code)
    if keep_code == dup_code:
        return None
    keep_ok, dup_ok = credit_code_problem(keep_code) is None, credit_code_problem(dup_code) is None
    if keep_ok and dup_ok:
        return ValidationError(f"「{keep.name}」和「{dup.name}」的统一社会信用代码（{keep.credit_code}、{dup.credit_code}）"
                               "都是有效代码且不相同，是两家不同的企业，不能合并。",
                               fields={"duplicate": "信用代码不同"})
    if dup_ok:
        return ValidationError(f"「{keep.name}」的统一社会信用代码 {keep.credit_code} 校验不通过，而「{dup.name}」的 "
                               f"{dup.credit_code} 有效：请打开「{dup.name}」的档案，把「{keep.name}」合并进去。",
                               fields={"duplicate": "请保留信用代码有效的档案"})
    return None


def merge_enterprises(session: Session, actor: Actor, keep_id: int, duplicate_id: int) -> Enterprise:
    """Merge a duplicate file into the one kept: its contacts, applications, appeals and registrations move
    over, empty fields of the kept file are filled from it, and the duplicate is retired (kept on record,
    pointing at the kept file), not deleted. Two files with different valid credit codes are two enterprises."""
    from ..activities.models import Registration
    from ..appeals.models import Appeal
    from ..appeals.services import follow_enterprise_to_building, specialist_alerts
    from ..db import utcnow

    # The building the kept file may take from the duplicate (it has none) is share-locked first (building_to_point_at),
    # before the files, as a building merge takes the building before the files it moves: one merging it away at this
    # moment is waited for (it moves the duplicate to the building that carries on, read below), or waits for this
    # merge and then moves both files. Taken after the files, it made the two wait for each other (a deadlock, a 500).
    peek = dict(session.execute(select(Enterprise.id, Enterprise.building_id)
                                .where(Enterprise.id.in_([keep_id, duplicate_id]))).all())
    locked = peek.get(duplicate_id) if peek.get(keep_id) is None else None
    if locked is not None:
        building_to_point_at(session, locked)
    # Both rows locked in id order: two staff merging the same pair the other way round cannot both win.
    rows = {e.id: e for e in session.scalars(
        select(Enterprise).where(Enterprise.id.in_([keep_id, duplicate_id])).order_by(Enterprise.id)
        .with_for_update(of=Enterprise).execution_options(populate_existing=True))}
    keep, dup = rows.get(keep_id), rows.get(duplicate_id)
    if keep is None or dup is None:
        raise NotFound("没有找到这家企业，可能已被删除。")
    problem = _merge_problem(keep, dup)
    if problem is not None:
        raise problem
    if dup.name != keep.name:
        # Their enterprise shows under another name from now on: say why, and that nothing is asked of them.
        told = list(session.scalars(select(User.id).where(
            or_(and_(User.enterprise_id == dup.id, User.binding_state.in_([BindingState.PENDING.value,
                                                                           BindingState.VERIFIED.value])),
                User.pending_enterprise_id == dup.id)).order_by(User.id)))
        for user_id in told:
            _tell_merged(session, user_id, dup, keep)
    moved: dict[str, Any] = {}
    # Every user whose binding or application moves gets a row of their own: the history of a user (the audit log
    # filtered to them) otherwise showed a binding requested for one file and verified for another, nothing between.
    affected = session.execute(select(User.id, User.binding_state, User.enterprise_id)
                               .where(or_(User.enterprise_id == dup.id, User.pending_enterprise_id == dup.id))
                               .order_by(User.id)).all()
    # A contact verified for the duplicate who applied to the kept file (or the other way round) is simply
    # verified for the kept file: the application is settled by the merge.
    settled = list(session.scalars(select(User.id).where(
        User.binding_state == BindingState.VERIFIED.value,
        or_(and_(User.enterprise_id == dup.id, User.pending_enterprise_id == keep.id),
            and_(User.enterprise_id == keep.id, User.pending_enterprise_id == dup.id)))))
    if settled:
        session.execute(update(User).where(User.id.in_(settled)).values(pending_enterprise_id=None))
        moved["applications_settled"] = settled
    for column, key in ((User.enterprise_id, "users"), (User.pending_enterprise_id, "applications")):
        ids = list(session.scalars(select(User.id).where(column == dup.id).order_by(User.id)))
        if ids:
            session.execute(update(User).where(User.id.in_(ids)).values({column.key: keep.id}))
            moved[key] = ids
    # The duplicate's open appeals filed at its building go to the kept file's (as an enterprise moved to another
    # building takes them along), before they become the kept file's: its own ones about that building stay.
    with specialist_alerts(session, actor) as alerts:
        moved_appeals = follow_enterprise_to_building(session, actor, dup, dup.building_id, merged_into=keep)
    for model, key in ((Appeal, "appeals"), (Registration, "registrations")):
        ids = list(session.scalars(select(model.id).where(model.enterprise_id == dup.id).order_by(model.id)))
        if ids:
            session.execute(update(model).where(model.id.in_(ids)).values(enterprise_id=keep.id))
            moved[key] = ids
    earlier = list(session.scalars(select(Enterprise.id).where(Enterprise.merged_into_id == dup.id)))
    if earlier:  # duplicates once merged into this one now point at the file that carries on
        session.execute(update(Enterprise).where(Enterprise.id.in_(earlier)).values(merged_into_id=keep.id))
        moved["retired_files"] = earlier
    filled = {k: getattr(dup, k) for k in _MERGE_FILL if getattr(keep, k) in ("", None) and getattr(dup, k)}
    if filled.get("building_id") not in (None, locked) and building_to_point_at(session, filled["building_id"]) is None:
        # The building changed since the look above (a merge of the one looked at had just moved the duplicate into
        # it): share-locked now, after the files (only a second merge of this one at the same moment, which would
        # wait for the duplicate's row, could then deadlock). Gone, the kept file is left without a building.
        del filled["building_id"]
    tags = split_tags([*(keep.tags or []), *(dup.tags or [])])[:MAX_TAGS]
    if tags != list(keep.tags or []):
        filled["tags"] = tags
    for k, v in filled.items():
        setattr(keep, k, v)
    dup.merged_into_id, dup.retired_at = keep.id, utcnow()
    session.flush()
    session.expire_all()  # users, appeals and registrations loaded before the bulk updates follow them
    audit(session, actor, "enterprise.merged", keep, duplicate_id=dup.id, duplicate_name=dup.name,
          duplicate_credit_code=dup.credit_code, kept_name=keep.name, kept_credit_code=keep.credit_code,
          filled=filled, moved=moved,
          **({"moved_appeals": moved_appeals, **alerts.audited(moved_appeals)} if moved_appeals else {}))
    audit(session, actor, "enterprise.retired", dup, merged_into=keep.id, name=dup.name,
          credit_code=dup.credit_code)
    for user_id, state, enterprise_id in affected:
        if user_id in settled:
            how: dict[str, Any] = {"moved": "application_settled"}
        elif enterprise_id == dup.id:
            how = {"moved": "binding"}
        else:
            how = {"moved": "application", "verified_enterprise_id": enterprise_id}
        audit(session, actor, "binding.merged", _UserRef(user_id), enterprise_id=keep.id,
              previous_enterprise_id=dup.id, binding_state=state, duplicate_name=dup.name, kept_name=keep.name,
              **how)
    return keep


@dataclass(frozen=True)
class _UserRef:
    """A user named in an audit row by id alone (the row written after a bulk update, with no User loaded)."""

    id: int
    __tablename__ = User.__tablename__


def _tag_pattern(tag: str) -> str:
    # Tags are stored as a JSON list; its text holds each tag exactly as json.dumps writes it.
    return json.dumps(tag)


def enterprise_query(*, q: str | None = None, building_id: int | None = None, grid_id: int | None = None,
                     industry: str | None = None, tag: str | None = None) -> Select:
    """The filtered enterprise query shared by the list pages, the API and the export."""
    # A retired duplicate lives on only behind the file it was merged into.
    stmt = select(Enterprise).where(Enterprise.retired_at.is_(None)).order_by(Enterprise.id)
    if q:
        q = q.strip()
        # A code is stored folded (half-width, upper case, no blanks): a pasted one is compared the same way.
        stmt = stmt.where(or_(Enterprise.name.icontains(q, autoescape=True),  # any case, as on SQLite
                              # brackets and blanks as typed: “(集团)” finds “（集团）”
                              name_key(Enterprise.name).contains(normalized_name(q), autoescape=True),
                              code_key(Enterprise.credit_code).contains(normalized_code(q), autoescape=True)))
    if building_id:
        stmt = stmt.where(Enterprise.building_id == building_id)
    if grid_id:
        stmt = stmt.where(Enterprise.building_id.in_(select(Building.id).where(Building.grid_id == grid_id)))
    if industry:
        stmt = stmt.where(Enterprise.industry == industry.strip())
    if tag:
        stmt = stmt.where(cast(Enterprise.tags, Text).contains(_tag_pattern(tag.strip()), autoescape=True))
    return stmt


def search_enterprises(session: Session, *, page: int = 1, per_page: int = 20, **filters: Any) -> Page:
    """Find enterprises by name or credit code substring, building, grid, industry and tag; one page."""
    return paginate(session, enterprise_query(**filters), page, per_page)


def industries(session: Session) -> list[str]:
    """The industries in use, for filter pickers."""
    return [i for i in session.scalars(select(Enterprise.industry).where(Enterprise.retired_at.is_(None))
                                       .distinct().order_by(Enterprise.industry)) if i]


def appeal_counts(session: Session, enterprise_id: int, department: str | None = None) -> tuple[int, int]:
    """(all, still open) appeals filed for this enterprise, for its file page (一企一档); with `department` (a
    department account reading it) only those that department handles, as its 企业问题清单 export lists."""
    from ..appeals.models import Appeal, handled_by
    from ..appeals.states import OPEN

    stmt = select(func.count(Appeal.id), func.count(Appeal.id).filter(Appeal.status.in_([s.value for s in OPEN]))
                  ).where(Appeal.enterprise_id == enterprise_id)
    if department is not None:
        stmt = stmt.where(handled_by(department))
    total, open_ = session.execute(stmt).one()
    return int(total or 0), int(open_ or 0)


def bound_users(session: Session, enterprise_id: int) -> list[User]:
    """The users bound to (or applying for) this enterprise, verified contacts of another one applying to switch
    to it included."""
    return list(session.scalars(select(User).where(or_(User.enterprise_id == enterprise_id,
                                                       User.pending_enterprise_id == enterprise_id))
                                .order_by(User.id)))


# --- users and bindings -----------------------------------------------------------------------------

def awaiting_check():
    """The users with an application for staff to decide: a first binding, or a verified contact's switch."""
    return or_(User.binding_state == BindingState.PENDING.value, User.pending_enterprise_id.is_not(None))


def list_users(session: Session, *, state: str | None = None, q: str | None = None, page: int = 1,
               per_page: int = 20, blocked: bool | None = None) -> Page:
    """Mini-program users, optionally only those in one binding state (or only the blocked ones, or only the
    others); pending first-come first-served."""
    if state == BindingState.PENDING:
        # In the order they asked (their latest request), not by account: an old account applying today waits
        # behind those who applied before it.
        asked = (select(AuditLog.target_id, func.max(AuditLog.id).label("asked"))
                 .where(AuditLog.action == "binding.requested", AuditLog.target_type == User.__tablename__)
                 .group_by(AuditLog.target_id).subquery())
        stmt = (select(User).outerjoin(asked, asked.c.target_id == cast(User.id, String))
                .order_by(asked.c.asked.is_(None), asked.c.asked, User.id))
    else:
        stmt = select(User).order_by(User.id.desc())
    if state == BindingState.PENDING:
        stmt = stmt.where(awaiting_check())
    elif state:
        stmt = stmt.where(User.binding_state == state)
    if blocked is not None:
        stmt = stmt.where(User.blocked.is_(blocked))
    if q:
        # Applicants rarely have a nickname: the company they named finds them too.
        companies = select(Enterprise.id).where(or_(
            Enterprise.name.icontains(q, autoescape=True),
            name_key(Enterprise.name).contains(normalized_name(q), autoescape=True),
            code_key(Enterprise.credit_code).contains(normalized_code(q), autoescape=True)))
        # A phone number is stored without blanks or dashes: “138 0013 8000” as pasted finds it too.
        dialled = re.sub(r"[\s\-－—]", "", unicodedata.normalize("NFKC", q))
        # ... and so does one copied with the country code (“+86 138 0013 8000”, “0086…”): mobiles are stored without it.
        dialled = re.sub(r"^(?:\+|00)?86(?=1\d{10}$)", "", dialled)
        found = [User.nickname.icontains(q, autoescape=True),
                 User.phone.contains(dialled if dialled.isdigit() else q, autoescape=True),
                 User.enterprise_id.in_(companies), User.pending_enterprise_id.in_(companies)]
        if not q.isascii():
            # ... and so does the name they typed when applying, kept in the request's audit row as JSON text
            # (non-ASCII escaped): only words with Chinese in them, which cannot match the JSON's keys or ids.
            found.append(cast(User.id, String).in_(select(AuditLog.target_id).where(
                AuditLog.action == "binding.requested", AuditLog.target_type == User.__tablename__,
                cast(AuditLog.data, Text).icontains(json.dumps(q)[1:-1], autoescape=True))))
        stmt = stmt.where(or_(*found))
    # Each row names the enterprise applied for (a lazy relation): read for the whole page in one SELECT, not one
    # per row.
    return paginate(session, stmt.options(selectinload(User.pending_enterprise)), page, per_page)


def names_given(session: Session, users: Sequence[User]) -> dict[int, str]:
    """{user id: the enterprise name they typed in their latest binding request}, for the users still pending.

    The name on file may be another's (the credit code was known) or theirs (a new record): what they wrote is
    what staff check, so it is read back from the request's audit row."""
    ids = [str(u.id) for u in users if u.awaiting_check]
    if not ids:
        return {}
    latest = (select(func.max(AuditLog.id)).where(AuditLog.action == "binding.requested",
                                                   AuditLog.target_type == User.__tablename__,
                                                   AuditLog.target_id.in_(ids))
              .group_by(AuditLog.target_id))
    rows = session.execute(select(AuditLog.target_id, AuditLog.data).where(AuditLog.id.in_(latest)))
    return {int(target): str(data.get("name_given") or "") for target, data in rows if data.get("name_given")}


BINDING_ENDS = {"binding.ended": "本人解除", "binding.revoked": "工作人员解除", "binding.removed": "企业档案删除"}


def bindings_ended(session: Session, users: Sequence[User]) -> dict[int, dict[str, Any]]:
    """{user id: {"enterprise_name", "at", "how"}} of the last binding ended, for the users now bound to nobody:
    the users page says they left which enterprise and when, instead of nothing (or a contact's role)."""
    ids = [str(u.id) for u in users if u.enterprise_id is None and u.pending_enterprise_id is None]
    if not ids:
        return {}
    latest = (select(func.max(AuditLog.id)).where(AuditLog.action.in_(list(BINDING_ENDS)),
                                                   AuditLog.target_type == User.__tablename__,
                                                   AuditLog.target_id.in_(ids))
              .group_by(AuditLog.target_id))
    rows = list(session.execute(select(AuditLog.target_id, AuditLog.action, AuditLog.data, AuditLog.created_at)
                                .where(AuditLog.id.in_(latest))))
    named = {r.data.get("enterprise_id") for r in rows if not r.data.get("enterprise_name")} - {None}
    names = dict(session.execute(select(Enterprise.id, Enterprise.name).where(Enterprise.id.in_(named))).all()) \
        if named else {}
    return {int(r.target_id): {"enterprise_name": r.data.get("enterprise_name") or names.get(r.data.get("enterprise_id"))
                               or "（档案已删除）", "at": r.created_at, "how": BINDING_ENDS[r.action]}
            for r in rows}


def blocks_noted(session: Session, users: Sequence[User]) -> dict[int, dict[str, Any]]:
    """{user id: {"reason", "at"}} of the block in force, for the blocked users on a page: the users list says why."""
    ids = [str(u.id) for u in users if u.blocked]
    if not ids:
        return {}
    latest = (select(func.max(AuditLog.id)).where(AuditLog.action == "user.blocked",
                                                   AuditLog.target_type == User.__tablename__,
                                                   AuditLog.target_id.in_(ids))
              .group_by(AuditLog.target_id))
    rows = session.execute(select(AuditLog.target_id, AuditLog.data, AuditLog.created_at)
                           .where(AuditLog.id.in_(latest)))
    return {int(r.target_id): {"reason": str(r.data.get("reason") or ""), "at": r.created_at} for r in rows}


def decide_binding(session: Session, actor: Actor, user_id: int, *, approve: bool,
                   enterprise_id: int | None = None, reason: str | None = None) -> User:
    """Verify or reject a user's pending enterprise binding; of two concurrent decisions the second gets 409,
    and so does a decision about `enterprise_id` when the user has applied for another one since."""
    # User eager-joins its enterprise and building, and PostgreSQL refuses FOR UPDATE on the nullable side
    # of an outer join: lock only the users row.
    user = session.scalar(select(User).where(User.id == user_id).with_for_update(of=User)
                          .execution_options(populate_existing=True))
    if user is None:
        raise NotFound("没有找到这个用户。")
    switching = user.pending_enterprise_id is not None
    if not switching and user.binding_state == BindingState.NONE.value:
        # Nobody decided it: the enterprise file it named was deleted meanwhile (which unbinds its users).
        raise Conflict("这位用户现在没有待核实的绑定申请（所申请企业的档案可能已被删除），请刷新页面查看最新状态。",
                       code="binding_gone")
    if not switching and user.binding_state != BindingState.PENDING.value:
        raise Conflict("这个绑定申请已经处理过了，请刷新页面查看最新状态。")
    applied_id = user.applied_enterprise_id
    if applied_id is None:  # pending with no file named: nothing to decide about
        raise Conflict("这位用户现在没有待核实的绑定申请，请刷新页面查看最新状态。", code="binding_gone")
    if enterprise_id is not None and _current_file(session, applied_id) != _current_file(session, enterprise_id):
        raise Conflict("这位用户刚刚改了申请绑定的企业，请刷新页面核对后再处理。", code="binding_changed")
    # The file applied for may have been merged into another since (or the request raced the merge): the decision
    # is about the file that carries on, and the user is moved there; a verified binding to a file no list shows,
    # whose appeals count nowhere, is never made.
    applied = get_enterprise(session, applied_id)
    current = carrying_on(session, applied)
    if current is None and approve:
        raise Conflict(f"这位用户申请绑定的「{applied.name}」档案已合并停用，而它合并到的档案已被删除，不能核实到这份档案；"
                       "请驳回，由管理员删除这份停用的档案后，再请用户重新申请（系统会为该企业重新建档）。",
                       code="enterprise_retired")
    merged = {"merged_from": applied.id} if current is not None and current.id != applied.id else {}
    if merged:
        applied = current
        if not switching:
            user.enterprise_id = applied.id
            session.expire(user, ["enterprise"])
    if switching:
        # A verified contact applied to another enterprise: approval moves the binding, a rejection leaves the
        # verified one as it was.
        previous = user.enterprise_id
        user.pending_enterprise_id = None
        if approve:
            user.enterprise_id = applied.id
        session.expire(user, ["enterprise", "pending_enterprise"])
        audit(session, actor, "binding.verified" if approve else "binding.rejected", user,
              enterprise_id=applied.id, previous_enterprise_id=previous, **merged, **_reason(approve, reason))
        _note_binding_check(session, actor, applied, approve)
        _tell_binding_result(session, user, approve, applied,
                             kept=None if approve else session.get(Enterprise, previous), reason=reason)
        return user
    user.binding_state = (BindingState.VERIFIED if approve else BindingState.REJECTED).value
    audit(session, actor, "binding.verified" if approve else "binding.rejected", user,
          enterprise_id=user.enterprise_id, **merged, **_reason(approve, reason))
    _note_binding_check(session, actor, user.enterprise, approve)
    _tell_binding_result(session, user, approve, user.enterprise, reason=reason)
    return user


REVOKE_FIELDS = (Field("reason", "str", "解除原因", required=True, min_len=2, max_len=200),)


def revoke_binding(session: Session, actor: Actor, user_id: int, *, reason: str) -> User:
    """End a verified binding on the enterprise's word (the contact left, or was never theirs): the user is told
    why. An application of theirs to switch to another enterprise stays, as an ordinary pending one."""
    user = session.scalar(select(User).where(User.id == user_id).with_for_update(of=User)
                          .execution_options(populate_existing=True))
    if user is None:
        raise NotFound("没有找到这个用户。")
    if user.binding_state != BindingState.VERIFIED.value or user.enterprise_id is None:
        raise Conflict("这位用户现在没有已核实的企业绑定，请刷新页面查看最新状态。", code="binding_not_verified")
    enterprise = user.enterprise
    audit(session, actor, "binding.revoked", user, enterprise_id=enterprise.id, reason=reason)
    if user.pending_enterprise_id is not None:
        user.enterprise_id, user.pending_enterprise_id = user.pending_enterprise_id, None
        user.binding_state = BindingState.PENDING.value
    else:
        user.enterprise_id, user.binding_state = None, BindingState.NONE.value
        user.role = UserRole.WHITE_COLLAR.value  # no longer anyone's contact: no list may show them as one
    session.expire(user, ["enterprise", "pending_enterprise"])
    _tell_binding_revoked(session, user.id, enterprise, reason)
    return user


def _reason(approve: bool, reason: str | None) -> dict[str, str]:
    return {"reason": reason} if reason and not approve else {}


def _current_file(session: Session, enterprise_id: int) -> int:
    """The file that carries on for `enterprise_id`: itself, or the file a merged duplicate went into."""
    seen = {enterprise_id}
    while (into := session.scalar(select(Enterprise.merged_into_id).where(Enterprise.id == enterprise_id))) \
            and into not in seen:
        seen.add(into)
        enterprise_id = into
    return enterprise_id


def _note_binding_check(session: Session, actor: Actor, enterprise: Enterprise | None, approve: bool) -> None:
    """A file a binding request made is checked with that binding: its note says how the check went (a note
    staff wrote is theirs and stays)."""
    if enterprise is None:
        return
    if approve and enterprise.note in {NOTE_BINDING_PENDING, NOTE_BINDING_REJECTED}:
        note = NOTE_BINDING_VERIFIED
    elif not approve and enterprise.note == NOTE_BINDING_PENDING:
        note = NOTE_BINDING_REJECTED
    else:
        return
    audit(session, actor, "enterprise.updated", enterprise, via="binding", changes={"note": [enterprise.note, note]})
    enterprise.note = note


def _tell_binding_removed(session: Session, user_id: int, enterprise: Enterprise, *,
                          still_applying: Enterprise | None = None, still_bound: Enterprise | None = None) -> None:
    """The enterprise a user was bound to (or applying for) has been taken off file by staff. `still_applying`:
    their application to switch to another enterprise stands; `still_bound`: only their application to switch
    to this one went, the verified binding to another stays."""
    from ..db import utcnow as _now
    from ..notices.services import notify

    gone = f"服务中心整理企业档案时删除了“{enterprise.name}”的档案，"
    if still_bound is not None:
        title, result, note = "改绑申请已取消", "已取消", "原企业的绑定不变"
        body = (f"{gone}您申请改绑到它的申请已取消；您与“{still_bound.name}”已核实的绑定保持不变。"
                "如果仍需改绑，请在“我的”里核对企业名称和信用代码后重新申请。")
    elif still_applying is not None:
        title, result, note = "企业绑定已解除", "已解除", "改绑申请仍在核实中"
        body = (f"{gone}您与它的绑定已解除。您改绑到“{still_applying.name}”的申请仍在核实中，"
                "核实后会通知您。")
    else:
        title, result, note = "企业绑定已解除", "已解除", "如仍在该企业任职请重新申请"
        body = (f"{gone}您与它的绑定已解除。"
                "如果您仍在这家企业任职，请在“我的”里重新申请绑定，或联系楼宇的服务专员协助。")
    notify(session, user_id, "binding_result",
           {"title": enterprise.name[:20], "result": result, "time": _now().isoformat(), "note": note},
           "pages/me/index", title=title, body=body, ref=f"binding:{user_id}:{enterprise.id}")


def _tell_binding_revoked(session: Session, user_id: int, enterprise: Enterprise, reason: str) -> None:
    from ..db import utcnow as _now
    from ..notices.services import notify

    notify(session, user_id, "binding_result",
           {"title": enterprise.name[:20], "result": "已解除", "time": _now().isoformat(), "note": reason[:20]},
           "pages/me/index", title="企业绑定已解除",
           body=(f"服务中心解除了您与“{enterprise.name}”的企业绑定，原因：{reason}。"
                 "如有疑问，或您仍在这家企业任职，请联系楼宇的服务专员，或在“我的”里重新申请绑定。"),
           ref=f"binding:{user_id}:{enterprise.id}")


def _tell_merged(session: Session, user_id: int, duplicate: Enterprise, kept: Enterprise) -> None:
    """A user's enterprise (or the one they applied for) was a duplicate file, merged into `kept`."""
    from ..db import utcnow as _now
    from ..notices.services import notify

    notify(session, user_id, "binding_result",
           {"title": kept.name[:20], "result": "已合并", "time": _now().isoformat(), "note": "无需重新申请"},
           "pages/me/index", title="企业档案已合并",
           body=(f"服务中心整理企业档案时发现“{duplicate.name}”和“{kept.name}”是同一家企业，已合并为“{kept.name}”。"
                 "您的企业绑定（或绑定申请）已随之转过去，状态不变，无需重新申请。"),
           ref=f"binding:{user_id}:{kept.id}")


def _tell_binding_result(session: Session, user: User, approve: bool, enterprise: Enterprise | None,
                         kept: Enterprise | None = None, reason: str | None = None) -> None:
    """The user waited for staff to check their enterprise: say how it went (subscribe message or inbox).
    `kept` is the enterprise a verified contact stays bound to when their application to another is rejected."""
    from ..db import utcnow as _now
    from ..notices.services import notify

    name = enterprise.name if enterprise is not None else "所申请的企业"
    if approve:
        # Only what a verified binding really opens: appeals count for the enterprise, enterprise-only
        # activities, notices aimed at enterprises (a contact still sees only their own appeals).
        body = (f"您与“{name}”的绑定已核实通过，现在可以以企业身份反映诉求、报名面向企业的活动，"
                "也能收到与企业相关的政策推送。")
    else:
        why = f"原因：{reason}。" if reason else ""
        body = (f"您与“{name}”的绑定未能核实。{why}请核对企业名称和统一社会信用代码后在“我的”里重新申请，"
                "或联系楼宇的服务专员协助。")
        if kept is not None:
            body += f"您与“{kept.name}”已核实的绑定保持不变。"
    notify(session, user.id, "binding_result",
           {"title": name[:20], "result": "已通过" if approve else "未通过", "time": _now().isoformat(),
            "note": "可以以企业身份办事了" if approve else "请核对信息后重新申请"},
           "pages/me/index", title="企业身份核实" + ("通过" if approve else "未通过"), body=body,
           ref=f"binding:{user.id}:{enterprise.id if enterprise is not None else ''}")
