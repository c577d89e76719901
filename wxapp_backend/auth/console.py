"""Console pages for staff accounts (admins only): list, create, edit, disable and re-enable, reset a password;
and every account's own 修改密码."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from ..console import add_nav
from ..console.stale import differences, seen_version
from ..db import session_scope
from ..edits import StaleEdit
from ..errors import AppError, BadRequest
from . import services, tokens
from .guard import CONSOLE, console_required, current_actor, end_staff_logins, password_stamp
from .models import STAFF_ROLE_NAMES, StaffRole

bp = Blueprint("auth_console", __name__, url_prefix="/console")

PROFILE_FIELDS = services.PROFILE_FIELDS
PROFILE_LABELS = {"display_name": "显示名称", "role": "角色", "department": "部门"}


def _text(name: str) -> str:
    value = request.form.get(name, "")
    return value[:500]  # the service names anything longer than a column as too long


def _departments(accounts) -> list[str]:
    return sorted({a.department for a in accounts if a.department})


def _end_logins(staff_id: int) -> None:
    end_staff_logins(current_app.extensions["wxapp"].redis, staff_id)


@bp.get("/staff")
@console_required(StaffRole.ADMIN)
def staff_list():
    with session_scope() as s:
        return render_template("console/staff/list.html", accounts=services.list_staff(s))


def _new_form(values: dict[str, str] | None = None, status: int = 200, **extra):
    with session_scope() as s:
        departments = _departments(services.list_staff(s))
    values = values or {"role": StaffRole.STAFF.value}
    return render_template("console/staff/new.html", values=values, departments=departments, **extra), status


@bp.route("/staff/new", methods=["GET", "POST"])
@console_required(StaffRole.ADMIN)
def staff_new():
    if request.method == "GET":
        return _new_form()
    # The password is never sent back into the page.
    values = {name: _text(name) for name in ("username", *PROFILE_FIELDS)}
    values["username"] = values["username"].strip()
    try:
        with session_scope() as s:
            staff = services.create_staff(s, username=values["username"], password=_text("password"),
                                          role=values["role"], department=values["department"],
                                          display_name=values["display_name"], actor=current_actor())
            username = staff.username
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        return _new_form(values, exc.status, error=exc.message, field_errors=exc.fields)
    flash(f"已创建账号 {username}，请把初始密码当面或电话告知本人。")
    return redirect(url_for(".staff_list"))


def _edit_page(staff_id: int, values: dict[str, str] | None = None, status: int = 200, **extra):
    with session_scope() as s:
        staff = services.get_staff(s, staff_id)
        departments = _departments(services.list_staff(s))
        if values is None:
            values = {name: getattr(staff, name) for name in PROFILE_FIELDS}
        extra.setdefault("version", services.profile_version(staff))  # the version the edit is made on
        return render_template("console/staff/edit.html", account=staff, values=values, departments=departments,
                               is_self=staff.id == g.staff.id, **extra), status


def _profile_shown(values: dict[str, str]) -> dict[str, str]:
    return {**values, "role": STAFF_ROLE_NAMES.get(values.get("role", ""), values.get("role", ""))}


@bp.route("/staff/<int:staff_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.ADMIN)
def staff_edit(staff_id: int):
    if request.method == "GET":
        return _edit_page(staff_id)
    values = {name: _text(name) for name in PROFILE_FIELDS}
    seen = seen_version()
    try:
        with session_scope() as s:
            staff = services.update_staff(s, current_actor(), staff_id, seen=seen, **values)
            username = staff.username
    except StaleEdit as exc:
        # A colleague saved the account since this page was loaded: theirs beside what was typed (still in the
        # form), and the page now on their version, so saving again after checking is accepted.
        with session_scope() as s:
            now = {name: getattr(services.get_staff(s, staff_id), name) for name in PROFILE_FIELDS}
        conflict = differences(_profile_shown(now), _profile_shown(values), PROFILE_LABELS)
        return _edit_page(staff_id, values, exc.status, error=exc.message, conflict=conflict)
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        # The page stays on the version it was loaded on: a colleague's save meanwhile is still caught.
        return _edit_page(staff_id, values, exc.status, error=exc.message, field_errors=exc.fields,
                          **({"version": seen} if seen else {}))
    flash(f"账号 {username} 已保存。")
    return redirect(url_for(".staff_list"))


@bp.post("/staff/<int:staff_id>/password")
@console_required(StaffRole.ADMIN)
def staff_password(staff_id: int):
    if staff_id == g.staff.id:  # one's own password needs the current one: 修改密码 asks for it
        flash(services.OWN_RESET_MESSAGE, "error")
        return redirect(url_for(".own_password"))
    try:
        with session_scope() as s:
            staff = services.reset_staff_password(s, current_actor(), staff_id, _text("password"))
            username = staff.username
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        return _edit_page(staff_id, status=exc.status, password_error=exc.message)
    _end_logins(staff_id)
    state = current_app.extensions["wxapp"]
    # Whoever asks an admin for a new password has usually used up their tries: the new one must work at once.
    services.LoginThrottle(state.redis, state.settings.login_max_failures,
                           state.settings.login_lockout_seconds).forget(username)
    flash(f"已重置 {username} 的密码，该账号原有的登录已全部失效。")
    return redirect(url_for(".staff_list"))


@bp.route("/password", methods=["GET", "POST"])
@console_required(StaffRole.DEPT)
def own_password():
    """Every account changes its own password here (账号管理, where an admin resets one, is for admins only)."""
    if request.method == "GET":
        return render_template("console/password.html")
    state = current_app.extensions["wxapp"]
    throttle = services.LoginThrottle(state.redis, state.settings.login_max_failures,
                                      state.settings.login_lockout_seconds)
    staff_id = g.staff.id
    try:
        with session_scope() as s:
            staff = services.change_own_password(s, throttle, staff_id, current=request.form.get("current_password", ""),
                                                 new=_text("password"), ip=request.remote_addr or "")
            stamp = password_stamp(staff)
    except AppError as exc:
        if exc.status in {403, 404}:
            raise
        return render_template("console/password.html", error=exc.message, field_errors=exc.fields), exc.status, \
            exc.headers
    # Every other login of the account ends (a PC left logged in, a script's token); this browser carries on.
    _end_logins(staff_id)
    session["sid"] = tokens.issue(state.redis, CONSOLE, staff_id, state.settings.staff_token_ttl, stamp=stamp)
    flash("密码已修改。您在其他电脑和脚本上的登录已全部失效，下次请用新密码登录。")
    return redirect(url_for("console.dashboard"))


@bp.post("/staff/<int:staff_id>/active")
@console_required(StaffRole.ADMIN)
def staff_active(staff_id: int):
    choice = request.form.get("active", "")
    if choice not in {"1", "0"}:
        raise BadRequest("请选择停用或启用。")
    with session_scope() as s:
        staff = services.set_staff_active(s, current_actor(), staff_id, choice == "1")
        username = staff.username
    if choice == "0":
        _end_logins(staff_id)
        flash(f"已停用账号 {username}，该账号的登录已全部失效。")
    else:
        flash(f"已重新启用账号 {username}，本人需要重新登录。")
    return redirect(url_for(".staff_list"))


def _context() -> dict[str, Any]:
    return {"role_choices": [r.value for r in StaffRole]}


bp.context_processor(_context)

add_nav("auth_console.staff_list", "账号管理", StaffRole.ADMIN, "系统")
