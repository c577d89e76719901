"""Console pages for enterprises, buildings, grids and users: lists, forms, import/export, binding checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from ..activities.services import roster_phone, sees_phones
from ..audit import audit
from ..auth.blocking import BLOCK_FIELDS, UNBLOCK_FIELDS, set_blocked
from ..auth.guard import console_required, current_actor
from ..auth.models import BINDING_LABELS, ROLE_RANK, StaffRole, StaffUser
from ..console import add_nav, qrcode_button, without_refused_filters
from ..console.stale import seen_stamp
from ..db import session_scope
from ..errors import AppError, BadRequest, Conflict
from ..http import PAGE_FIELDS
from ..validation import Field, row_id, validate
from . import importer, services

bp = Blueprint("enterprises_console", __name__, url_prefix="/console")

STATE_NAMES = BINDING_LABELS
ROLE_LABELS = {"enterprise_contact": "企业联系人", "white_collar": "白领"}
BUILDING_FILTERS = (Field("q", "str", "楼宇名称或地址", max_len=100), Field("grid_id", "int", "网格", min=1),
                    *PAGE_FIELDS)


@bp.context_processor
def _perms() -> dict[str, Any]:
    staff = getattr(g, "staff", None)
    rank = ROLE_RANK[StaffRole(staff.role)] if staff is not None else 0
    return {"can_edit": rank >= ROLE_RANK[StaffRole.STAFF], "can_delete": rank >= ROLE_RANK[StaffRole.ADMIN],
            "state_names": STATE_NAMES, "user_role_labels": ROLE_LABELS}


def _args(fields: tuple[Field, ...]) -> dict[str, Any]:
    return validate({k: v for k, v in request.args.items() if v != ""}, fields)


def _list_args(fields: tuple[Field, ...]) -> tuple[dict[str, Any], str | None]:
    """A list page's filters, less any that does not hold, and the note saying which (see without_refused_filters)."""
    return without_refused_filters({k: v for k, v in request.args.items() if v != ""},
                                   lambda raw: validate(raw, fields))


def _link_args(args: dict[str, Any]) -> dict[str, Any]:
    """The filters worth carrying into pager and export links."""
    return {k: v for k, v in args.items() if v not in (None, "") and k not in {"page", "per_page"}}


def _page_args(args: dict[str, Any]) -> dict[str, Any]:
    """The filters and the page size asked for, for the pager's links (下一页 went back to 20 a page)."""
    default = next(f.default for f in services.USER_FILTERS if f.name == "per_page")
    return _link_args(args) | ({"per_page": args["per_page"]} if args.get("per_page", default) != default else {})


def _form(fields: tuple[Field, ...]) -> dict[str, Any]:
    """The submitted fields; a blank box or "（未选择）" is None, which empties the field in an edit. A required
    field's blank box stays blank, to be refused: as None an edit skipped it (a required field is never cleared)
    and the page said “已保存” with the old value still there."""
    return {f.name: (request.form[f.name] if request.form[f.name].strip() else ("" if f.required else None))
            for f in fields if f.name in request.form}


def _moved_words(s, *, building: bool = True) -> str:
    """The open appeals this save or merge took along, for its message: 「1 件未办结的诉求随之转到「幸福大楼」，由「第二网格」
    办理」 (without the building when it is the one edited), or ""."""
    from ..appeals.services import moved_summary

    return "；".join(f"{n} 件未办结的诉求随之" + (f"转到「{name}」，由{grid}办理" if building and name else f"转由{grid}办理")
                    for n, name, grid in moved_summary(s))


def _saved(what: str, moved: str) -> str:
    return f"{what}；{moved}。" if moved else f"{what}。"


def _save(render: Callable[..., Any], action: Callable[[Any], Any], success: str, target: Callable[[Any], str]):
    """Run a form's service call; on a problem the form comes back with the answers and the messages."""
    try:
        with session_scope() as s:
            row = action(s)
            s.flush()
            url = target(row)
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        return render(error=exc.message, field_errors=exc.fields), exc.status
    flash(success)
    return redirect(url)


# --- enterprises ------------------------------------------------------------------------------------

@bp.get("/enterprises")
@console_required(StaffRole.DEPT)
def enterprises():
    args, note = _list_args(services.ENTERPRISE_FILTERS)
    with session_scope() as s:
        page = services.search_enterprises(s, **args)
        return render_template("console/enterprises/enterprises.html", page=page, args=args,
                               link_args=_link_args(args), page_args=_page_args(args),
                               buildings=services.list_buildings(s),
                               grids=services.list_grids(s), industries=services.industries(s),
                               filter_error=note), 422 if note else 200


def _own_department() -> str | None:
    """A department account's department (its figures count only what it handles), else None."""
    actor = current_actor()
    return actor.department if actor.role == StaffRole.DEPT else None


def _enterprise_page(enterprise_id: int, *, error: str | None = None, status: int = 200, duplicate: str = ""):
    with session_scope() as s:
        enterprise = services.get_enterprise(s, enterprise_id)
        own = _own_department()
        # A department account reads the phones of the users bound to (or applying for) the enterprise as
        # 139****1111, as it reads registrants' on a roster: the users list itself is not its business.
        return render_template("console/enterprises/enterprise_detail.html", e=enterprise, own_department=own,
                               full_phones=sees_phones(current_actor().role), roster_phone=roster_phone,
                               users=services.bound_users(s, enterprise_id),
                               duplicates=services.possible_duplicates(s, enterprise) if not enterprise.retired else [],
                               merged_from=services.merged_from(s, enterprise_id), merge_error=error,
                               appeal_counts=services.appeal_counts(s, enterprise_id, own),
                               duplicate=duplicate), status


@bp.get("/enterprises/<int:enterprise_id>")
@console_required(StaffRole.DEPT)
def enterprise_detail(enterprise_id: int):
    return _enterprise_page(enterprise_id)


@bp.post("/enterprises/<int:enterprise_id>/merge")
@console_required(StaffRole.ADMIN)
def enterprise_merge(enterprise_id: int):
    """Merge a duplicate file (named by its number or credit code) into this one."""
    ref = (request.form.get("duplicate") or "").strip()
    with session_scope() as s:
        services.get_enterprise(s, enterprise_id)  # this file itself gone: the ordinary 404 page
    try:
        data = validate({"duplicate": ref}, services.MERGE_FIELDS)
        with session_scope() as s:
            duplicate = services.find_enterprise(s, data["duplicate"], other_than=enterprise_id)
            name = duplicate.name
            kept_name = services.merge_enterprises(s, current_actor(), enterprise_id, duplicate.id).name
            moved = _moved_words(s)
    except AppError as exc:
        if exc.status == 403:
            raise
        return _enterprise_page(enterprise_id, error=exc.message, status=exc.status, duplicate=ref)
    flash(f"已把「{name}」合并到「{kept_name}」，原档案已停用留底{f'；{moved}' if moved else ''}。")
    return redirect(url_for(".enterprise_detail", enterprise_id=enterprise_id))


def _enterprise_form(enterprise=None, values=None, status: int = 200, **extra):
    with session_scope() as s:
        buildings = [b for b, _n in services.list_buildings(s)]
    if values is None and enterprise is not None:
        values = {f.name: getattr(enterprise, f.name) for f in services.ENTERPRISE_FIELDS}
    values = dict(values or {})
    if isinstance(values.get("tags"), list):
        values["tags"] = "、".join(values["tags"])
    if enterprise is not None and enterprise.updated_at is not None:
        extra.setdefault("stamp", enterprise.updated_at.isoformat())  # the version the edit is made on
    return render_template("console/enterprises/enterprise_form.html", enterprise=enterprise, values=values,
                           buildings=buildings, **extra), status


def _differences(row, data: dict[str, Any], fields: tuple[Field, ...],
                 names: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(label, now on file, typed) for the fields where the form differs from the row a colleague saved; `names`
    turns an id field's values into names ({"building_id": {"3": "新华大厦"}})."""
    rows = []
    for f in fields:
        if f.name not in data:
            continue
        saved, typed = getattr(row, f.name), data[f.name]
        if f.name in names:
            saved, typed = names[f.name].get(str(saved or ""), ""), names[f.name].get(str(typed or ""), "")
        elif isinstance(saved, list):
            saved = "、".join(saved)
        saved, typed = str(saved or ""), str(typed or "")
        if saved.strip() != typed.strip():
            rows.append((f.label, saved, typed))
    return rows


def _edit(form: Callable[..., Any], update: Callable[[Any, datetime | None], Any], reread: Callable[[Any], Any],
          names: Callable[[Any], dict[str, dict[str, str]]], fields: tuple[Field, ...], data: dict[str, Any],
          success: str | Callable[[Any], str], target: str):
    """Save an edit form. Refused because a colleague saved the row since the page was loaded: the form again,
    what they saved beside what was typed (still in the form, nothing lost), and the colleague's version in the
    form, so saving again after checking is accepted. Any other problem: the form keeps the version it was
    loaded on, so a colleague's save meanwhile is still caught. `success` may be made from the saving session
    (what the save took along)."""
    seen = seen_stamp()
    try:
        with session_scope() as s:
            update(s, seen)
            if callable(success):
                success = success(s)
    except services.StaleEdit as exc:
        with session_scope() as s:
            current = reread(s)
            conflict = _differences(current, data, fields, names(s))
        return form(current, values=data, status=409, error=exc.message, conflict=conflict)
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        return form(None, values=data, status=exc.status, error=exc.message, field_errors=exc.fields,
                    **({"stamp": seen.isoformat()} if seen else {}))
    flash(success)
    return redirect(target)


@bp.route("/enterprises/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def enterprise_new():
    if request.method == "GET":
        return _enterprise_form()
    data = _form(services.ENTERPRISE_FIELDS)
    return _save(lambda **kw: _enterprise_form(values=data, **kw)[0],
                 lambda s: services.create_enterprise(s, current_actor(), data),
                 "企业档案已建立。", lambda e: url_for(".enterprise_detail", enterprise_id=e.id))


@bp.route("/enterprises/<int:enterprise_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def enterprise_edit(enterprise_id: int):
    with session_scope() as s:
        enterprise = services.get_enterprise(s, enterprise_id)
    if request.method == "GET":
        return _enterprise_form(enterprise)
    data = _form(services.ENTERPRISE_FIELDS)
    return _edit(lambda row, **kw: _enterprise_form(row or enterprise, **kw),
                 lambda s, seen: services.update_enterprise(s, current_actor(), enterprise_id, data, seen=seen),
                 lambda s: services.get_enterprise(s, enterprise_id),
                 lambda s: {"building_id": {str(b.id): b.name for b, _n in services.list_buildings(s)}},
                 services.ENTERPRISE_FIELDS, data, lambda s: _saved("企业档案已保存", _moved_words(s)),
                 url_for(".enterprise_detail", enterprise_id=enterprise_id))


@bp.post("/enterprises/<int:enterprise_id>/delete")
@console_required(StaffRole.ADMIN)
def enterprise_delete(enterprise_id: int):
    with session_scope() as s:
        name = services.get_enterprise(s, enterprise_id).name
        retired = services.delete_enterprise(s, current_actor(), enterprise_id)
    also = f"，以及合并进来的 {len(retired)} 份留底档案" if retired else ""
    flash(f"已删除企业「{name}」{also}。")
    return redirect(url_for(".enterprises"))


# --- import and export ------------------------------------------------------------------------------

def _import_page(kind: str):
    report = None
    status = 200
    if request.method == "POST":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            report = importer.ImportReport(kind=kind, errors=[importer.Problem("请先选择要导入的文件。")])
            status = 400
        else:
            data = upload.stream.read(importer.MAX_BYTES + 1)
            with session_scope() as s:
                report = importer.import_file(s, current_actor(), kind, upload.filename, data)
            status = 200 if report.ok else 422
    label, columns = importer.KINDS[kind]
    return render_template("console/enterprises/import.html", kind=kind, label=label, columns=columns,
                           report=report, max_rows=importer.MAX_ROWS,
                           max_mb=importer.MAX_BYTES // 1024 // 1024), status


def _export(kind: str, fmt: str, filters: dict[str, Any]) -> Response:
    if fmt not in {"csv", "xlsx"}:
        raise BadRequest("只能导出 CSV 或 Excel（xlsx）格式。")
    with session_scope() as s:
        content, mimetype, filename = importer.export_file(s, kind, fmt, **filters)
        # Contacts and phone numbers leave the system: who took them, and when, is on record.
        audit(s, current_actor(), f"{kind}.exported", None, format=fmt,
              filters={k: v for k, v in filters.items() if v not in (None, "")})
    from urllib.parse import quote

    resp = Response(content, mimetype=mimetype)
    resp.headers["Content-Disposition"] = (f"attachment; filename=\"{kind}.{fmt}\"; "
                                           f"filename*=UTF-8''{quote(filename)}")
    return resp


@bp.route("/enterprises/import", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def enterprise_import():
    return _import_page("enterprises")


@bp.get("/enterprises/export.<fmt>")
@console_required(StaffRole.STAFF)
def enterprise_export(fmt: str):
    args = _args(services.ENTERPRISE_FILTERS)
    return _export("enterprises", fmt, _link_args(args))


@bp.get("/import-template/<kind>.csv")
@console_required(StaffRole.STAFF)
def import_template(kind: str):
    if kind not in importer.KINDS:
        raise BadRequest("没有这种导入模板。")
    content, mimetype, filename = importer.template_file(kind)
    from urllib.parse import quote

    resp = Response(content, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f"attachment; filename=\"{kind}.csv\"; filename*=UTF-8''{quote(filename)}"
    return resp


# --- buildings --------------------------------------------------------------------------------------

@bp.get("/buildings")
@console_required(StaffRole.DEPT)
def buildings():
    args, note = _list_args(BUILDING_FILTERS)
    return _buildings_page(args, filter_error=note), 422 if note else 200


def _buildings_page(args: dict[str, Any], **extra):
    with session_scope() as s:
        page = services.page_buildings(s, **args)
        return render_template("console/enterprises/buildings.html", page=page, rows=page.items,
                               args=args, link_args=_link_args(args), page_args=_page_args(args),
                               grids=services.list_grids(s), **extra)


def _building_form(building=None, values=None, status: int = 200, **extra):
    with session_scope() as s:
        grids = [gr for gr, _n in services.list_grids(s)]
        # the other buildings, for an admin's merge of a duplicate into this one
        others = [b for b, _n in services.list_buildings(s) if building is None or b.id != building.id]
    if values is None and building is not None:
        values = {f.name: getattr(building, f.name) for f in services.BUILDING_FIELDS}
    if building is not None and building.updated_at is not None:
        extra.setdefault("stamp", building.updated_at.isoformat())  # the version the edit is made on
    if building is not None:
        from ..wechat.qrcodes import known_qrcode

        with session_scope() as s:
            extra.setdefault("qrcode", known_qrcode(s, "building", building.id))
    return render_template("console/enterprises/building_form.html", building=building, values=values or {},
                           grids=grids, others=others, **extra), status


@bp.route("/buildings/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def building_new():
    if request.method == "GET":
        return _building_form()
    data = _form(services.BUILDING_FIELDS)
    return _save(lambda **kw: _building_form(values=data, **kw)[0],
                 lambda s: services.create_building(s, current_actor(), data),
                 "楼宇档案已建立。", lambda b: url_for(".buildings"))


@bp.route("/buildings/<int:building_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def building_edit(building_id: int):
    with session_scope() as s:
        building = services.get_building(s, building_id)
    if request.method == "GET":
        return _building_form(building)
    data = _form(services.BUILDING_FIELDS)
    return _edit(lambda row, **kw: _building_form(row or building, **kw),
                 lambda s, seen: services.update_building(s, current_actor(), building_id, data, seen=seen),
                 lambda s: services.get_building(s, building_id),
                 lambda s: {"grid_id": {str(g.id): g.name for g, _n in services.list_grids(s)}},
                 services.BUILDING_FIELDS, data, lambda s: _saved("楼宇档案已保存", _moved_words(s, building=False)),
                 url_for(".buildings"))


@bp.post("/buildings/<int:building_id>/delete")
@console_required(StaffRole.ADMIN)
def building_delete(building_id: int):
    try:
        with session_scope() as s:
            name = services.get_building(s, building_id).name
            services.delete_building(s, current_actor(), building_id)
    except Conflict as exc:
        # Still in use: the list the button was on, saying why and what to do first, not a bare error page.
        return _buildings_page(_listed_args(".buildings", BUILDING_FILTERS), delete_error=exc.message), 409
    flash(f"已删除楼宇「{name}」。")
    return redirect(_back_to_list(".buildings"))


@bp.post("/buildings/<int:building_id>/merge")
@console_required(StaffRole.ADMIN)
def building_merge(building_id: int):
    """Merge a duplicate building (chosen from the list, or named by number or name) into this one."""
    with session_scope() as s:
        building = services.get_building(s, building_id)  # this one itself gone: the ordinary 404 page
    ref = (request.form.get("duplicate") or "").strip()
    confirm = request.form.get("confirm_grid") or False
    try:
        data = validate({"duplicate": ref, "confirm_grid": confirm}, services.BUILDING_MERGE_FIELDS)
        with session_scope() as s:
            duplicate = services.find_building(s, data["duplicate"], other_than=building_id)
            done = services.merge_buildings(s, current_actor(), building_id, duplicate.id,
                                            confirm_grid=data["confirm_grid"])
            from ..appeals.services import moved_summary

            still_open = "；".join(f"其中 {n} 件未办结的诉求转由{grid}办理" for n, _name, grid in moved_summary(s))
    except AppError as exc:
        if exc.status == 403:
            raise
        return _building_form(building, merge_error=exc.message, merge_ref=ref,
                              merge_needs_grid=exc.code == "grid_differs", status=exc.status)
    counts = done["counts"]
    what = "、".join(f"{counts[k]} {unit}" for k, unit in (("enterprises", "家企业"), ("appeals", "件诉求"),
                                                            ("activities", "场活动"), ("users", "位用户"))
                    if counts[k])
    flash(f"已把楼宇「{done['duplicate_name']}」合并到「{done['kept_name']}」{f'，{what}随之转过来' if what else ''}"
          f"{f'（{still_open}）' if still_open else ''}；"
          "重复的楼宇档案已删除。")
    return redirect(url_for(".building_edit", building_id=building_id))


@bp.post("/buildings/<int:building_id>/qrcode")
@console_required(StaffRole.STAFF)
def building_qrcode(building_id: int):
    """The building's poster QR code (公众号带参数二维码): made once, then shown on the building's page."""
    return qrcode_button("building", building_id, url_for(".building_edit", building_id=building_id),
                         made="楼宇二维码已生成，可下载后印在大堂海报上。", shown="这栋楼宇的二维码之前已生成，下面就是。")


@bp.route("/buildings/import", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def building_import():
    return _import_page("buildings")


@bp.get("/buildings/export.<fmt>")
@console_required(StaffRole.STAFF)
def building_export(fmt: str):
    return _export("buildings", fmt, _link_args(_args(BUILDING_FILTERS)))


# --- grids ------------------------------------------------------------------------------------------

@bp.get("/grids")
@console_required(StaffRole.DEPT)
def grids():
    return _grids_page()


def _grids_page(**extra):
    with session_scope() as s:
        return render_template("console/enterprises/grids.html", rows=services.list_grids(s), **extra)


def _grid_form(grid=None, values=None, status: int = 200, **extra):
    with session_scope() as s:
        staff = list(s.scalars(select(StaffUser).where(StaffUser.active.is_(True)).order_by(StaffUser.username)))
    if values is None and grid is not None:
        values = {f.name: getattr(grid, f.name) for f in services.GRID_FIELDS}
    if grid is not None and grid.updated_at is not None:
        extra.setdefault("stamp", grid.updated_at.isoformat())  # the version the edit is made on
    return render_template("console/enterprises/grid_form.html", grid=grid, values=values or {},
                           staff_users=staff, **extra), status


@bp.route("/grids/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def grid_new():
    if request.method == "GET":
        return _grid_form()
    data = _form(services.GRID_FIELDS)
    return _save(lambda **kw: _grid_form(values=data, **kw)[0],
                 lambda s: services.create_grid(s, current_actor(), data), "网格已建立。",
                 lambda gr: url_for(".grids"))


@bp.route("/grids/<int:grid_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def grid_edit(grid_id: int):
    with session_scope() as s:
        grid = services.get_grid(s, grid_id)
    if request.method == "GET":
        return _grid_form(grid)
    data = _form(services.GRID_FIELDS)
    return _edit(lambda row, **kw: _grid_form(row or grid, **kw),
                 lambda s, seen: services.update_grid(s, current_actor(), grid_id, data, seen=seen),
                 lambda s: services.get_grid(s, grid_id),
                 lambda s: {"specialist_staff_id": {str(a.id): a.display_name or a.username
                                                    for a in s.scalars(select(StaffUser))}},
                 services.GRID_FIELDS, data, "网格已保存。", url_for(".grids"))


@bp.post("/grids/<int:grid_id>/delete")
@console_required(StaffRole.ADMIN)
def grid_delete(grid_id: int):
    try:
        with session_scope() as s:
            name = services.get_grid(s, grid_id).name
            services.delete_grid(s, current_actor(), grid_id)
    except Conflict as exc:  # buildings still in it: said on the grid list, as for a building
        return _grids_page(delete_error=exc.message), 409
    flash(f"已删除网格「{name}」。")
    return redirect(_back_to_list(".grids"))


def _back_to_list(endpoint: str) -> str:
    """The list page the delete button was on, with its filters and page (this site's, that list's only); the
    admin was sent to the whole unfiltered list after each delete."""
    listing = request.host_url.rstrip("/") + url_for(endpoint)
    ref = request.referrer or ""
    return ref if ref == listing or ref.startswith(listing + "?") else url_for(endpoint)


def _listed_args(endpoint: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The filters of the list page the delete button was on (its Referer, when it is that list), else none."""
    here = _back_to_list(endpoint)
    query = {k: v for k, v in parse_qsl(urlsplit(here).query) if v != ""}
    try:
        return validate(query, fields)
    except AppError:
        return validate({}, fields)


# --- users and bindings -----------------------------------------------------------------------------

# Staff and admins only: the list is every mini-program user's phone and binding, white-collar workers included. A
# department sees the contacts of an enterprise on its 一企一档 page and of an appeal on the appeal; it decides no
# binding, so the whole list of people is not its business.
@bp.get("/users")
@console_required(StaffRole.STAFF)
def users():
    args, note = _list_args(services.USER_FILTERS)
    return _users_page(args, filter_error=note), 422 if note else 200


def _users_page(args: dict[str, Any], **extra):
    with session_scope() as s:
        page = services.list_users(s, **args)
        return render_template("console/enterprises/users.html", page=page, args=args,
                               link_args=_link_args(args), page_args=_page_args(args), names_given=services.names_given(s, page.items),
                               ended=services.bindings_ended(s, page.items),
                               blocks=services.blocks_noted(s, page.items), **extra)


def _refused_on_users_list(exc: AppError, user_id: int, *, form: str | None = None):
    """A decision that could not be made (a colleague was first, the user changed their application, a reason
    too short): the list it was made on, saying why, with the reason typed still in its box. It was a bare error
    page, and the way back was the dashboard."""
    if exc.status in {403, 404}:
        raise exc
    args = validate({}, services.USER_FILTERS) | _users_back_args()
    # `form`: which of the row's forms it came from when not a binding decision ("block", "unblock").
    typed = {"user_id": user_id, "reason": request.form.get("reason", ""), "approve": form or request.form.get("approve")}
    return _users_page(args, decision_error=exc.message, typed=typed), exc.status


@bp.post("/users/<int:user_id>/binding")
@console_required(StaffRole.STAFF)
def user_binding(user_id: int):
    decision = request.form.get("approve", "")
    try:
        if decision not in {"1", "0"}:
            raise BadRequest("请选择通过或驳回。")
        reason = validate({"reason": request.form.get("reason", "")}, services.BINDING_FIELDS[2:])["reason"]
        # The file the page showed, for the stale-page check: a value that names no file (an altered form) is
        # refused, not read as “no file named”, which skipped the check and decided whatever the user had applied
        # for since.
        sent = request.form.get("enterprise_id", "").strip()
        enterprise_id = row_id(sent) if sent else None
        if sent and enterprise_id is None:
            raise BadRequest("页面上的企业信息不完整（企业编号不对），这次没有处理；请刷新页面，核对申请的企业后再处理。")
        with session_scope() as s:
            user = services.decide_binding(s, current_actor(), user_id, approve=decision == "1",
                                           enterprise_id=enterprise_id, reason=reason)
            who = user.nickname or f"用户 {user.id}"
            company = user.enterprise.name if user.enterprise else ""
    except AppError as exc:
        return _refused_on_users_list(exc, user_id)
    flash(f"已核实 {who} 与「{company}」的绑定。" if decision == "1" else f"已驳回 {who} 的绑定申请。")
    return redirect(_users_list_back())


@bp.post("/users/<int:user_id>/binding/revoke")
@console_required(StaffRole.STAFF)
def user_binding_revoke(user_id: int):
    try:
        data = validate({"reason": request.form.get("reason", "")}, services.REVOKE_FIELDS)
        with session_scope() as s:
            user = services.revoke_binding(s, current_actor(), user_id, reason=data["reason"])
            who = user.nickname or f"用户 {user.id}"
    except AppError as exc:
        return _refused_on_users_list(exc, user_id)
    flash(f"已解除 {who} 的企业绑定，并已通知本人。")
    return redirect(_users_list_back())


# Staff, not only admins: they read the chat and take the calls, and a flood or a stream of insults wants an answer in
# minutes, not when an admin is in. It is no deletion (what the user filed stays and is still handled), it is undone
# with one click, and each block and unblock is an audit row with its reason. Departments: as for the list, no.
@bp.post("/users/<int:user_id>/block")
@console_required(StaffRole.STAFF)
def user_block(user_id: int):
    return _set_blocked(user_id, blocked=True)


@bp.post("/users/<int:user_id>/unblock")
@console_required(StaffRole.STAFF)
def user_unblock(user_id: int):
    return _set_blocked(user_id, blocked=False)


def _set_blocked(user_id: int, *, blocked: bool):
    try:
        data = validate({"reason": request.form.get("reason", "")}, BLOCK_FIELDS if blocked else UNBLOCK_FIELDS)
        with session_scope() as s:
            user = set_blocked(s, current_actor(), user_id, blocked=blocked, reason=data["reason"])
            who = user.nickname or f"用户 {user.id}"
    except AppError as exc:
        return _refused_on_users_list(exc, user_id, form="block" if blocked else "unblock")
    flash(f"已屏蔽 {who}：公众号和小程序里的消息不再回复，也不能再提交诉求、报名活动；已提交的诉求照常办理。" if blocked
          else f"已解除对 {who} 的屏蔽，马上生效。")
    return redirect(_users_list_back())


def _users_list_back() -> str:
    """The users list the decision was made on: its state tab, search and page (the form carries them). Staff
    working through page 2 of a search were sent to page 1 of every user after each click. A value that is not
    a valid filter is dropped, not refused: the decision is made already."""
    back = _users_back_args()
    if back.get("page") == 1:
        del back["page"]
    return url_for(".users", **back)


def _users_back_args() -> dict[str, Any]:
    back: dict[str, Any] = {}
    for f in services.USER_FILTERS:
        value = (request.form.get(f.name) or "").strip()
        if value:
            try:
                back.update(validate({f.name: value}, (f,)))
            except AppError:
                pass
    return back


add_nav("enterprises_console.enterprises", "企业")
add_nav("enterprises_console.buildings", "楼宇")
add_nav("enterprises_console.grids", "网格")
add_nav("enterprises_console.users", "用户", StaffRole.STAFF)
