"""Staff console shell: login, layout and navigation, CSRF, dashboard; domains add their own pages."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import func, select

from ..audit import audit
from ..auth import services as auth_services
from ..auth import tokens
from ..auth.guard import CONSOLE, console_required, current_actor, password_stamp
from ..auth.models import ROLE_RANK, STAFF_ROLE_NAMES, StaffRole, User
from ..db import session_scope
from ..enterprises.models import Building, Enterprise, Grid
from ..errors import AppError, ValidationError
from ..validation import clean_text
from . import drafts, once

bp = Blueprint("console", __name__, url_prefix="/console")
T = TypeVar("T")


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    min_role: str = StaffRole.DEPT
    group: str = ""


# Domains append to this list when they register their pages; the layout renders what the role may see.
NAV: list[NavItem] = [NavItem("console.dashboard", "工作台")]


def add_nav(endpoint: str, label: str, min_role: str = StaffRole.DEPT, group: str = "") -> None:
    if all(item.endpoint != endpoint for item in NAV):
        NAV.append(NavItem(endpoint, label, min_role, group))


# --- CSRF -------------------------------------------------------------------------------------------

def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


# What a staff member reads when a form is refused for its token: what happened and what to do, in their words
# (most often a page left open past the login's 12 hours, or a logout in another tab). The code stays csrf_failed.
CSRF_MESSAGE = ("页面已过期（打开太久，或在别的窗口退出过登录），为了安全，这次提交没有保存。"
                "请回到刚才的页面，先把填写的内容复制下来，再刷新页面重新填写提交。")


def check_csrf():
    """App-wide before_request: every state-changing console request carries the session's token."""
    if request.path.startswith("/console") and request.method in {"POST", "PUT", "PATCH", "DELETE"}:
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        expected = session.get("csrf", "")
        # As bytes: compare_digest raises TypeError for a str with non-ASCII characters, and `sent` can be anything.
        if not expected or not sent or not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
            if request.endpoint == "console.login":
                # A login page left open overnight: the form again, with a fresh token and the name typed.
                return render_template("console/login.html", error="登录页面已过期，为了安全，请重新输入密码登录。",
                                       username=clean_text(request.form.get("username") or "")[:64],
                                       next=request.form.get("next", "")), 400
            if request.endpoint == "console.logout" and not session.get("sid"):
                # 退出 in a second tab after logging out in the first: done already, nothing unsaved to warn about.
                flash("您已安全退出。")
                return redirect(url_for("console.login"))
            raise AppError(CSRF_MESSAGE, code="csrf_failed", status=400)
    return None


def referrer_path() -> str | None:
    """The console page (path and query) the browser came from, when it is one of this site's, else None."""
    ref = urlsplit(request.referrer or "")
    here = urlsplit(request.host_url)
    if ref.scheme != here.scheme or ref.netloc != here.netloc:
        return None
    return safe_console_path(ref.path + (f"?{ref.query}" if ref.query else ""))


@bp.app_context_processor
def _layout_context() -> dict:
    staff = getattr(g, "staff", None)
    nav = []
    if staff is not None:
        rank = ROLE_RANK[StaffRole(staff.role)]
        nav = [item for item in NAV if rank >= ROLE_RANK[StaffRole(item.min_role)]
               and item.endpoint in current_app.view_functions]
    # The form sent after the login ran out, on the first page shown after logging in again (console.js fills it).
    restored = drafts.take() if staff is not None and request.method == "GET" and "draft" in session else None
    return {"csrf_token": csrf_token, "form_once": once.token, "nav": nav, "current_staff": staff, "restored_draft": restored,
            "draft_waiting": staff is None and "draft" in session,
            "role_names": STAFF_ROLE_NAMES}


# --- list filters -----------------------------------------------------------------------------------

def without_refused_filters(raw: dict[str, str], attempt: Callable[[dict[str, str]], T]) -> tuple[T, str | None]:
    """attempt(raw) for a list page; a filter it refuses by name (page=abc in an edited link, a category or state
    that no longer exists) is left out and tried again. Returns the result and the note to show, or None.

    A stale link was a bare error page whose only way on was the dashboard. Exports must not use this: a file of
    everything is not what was asked for."""
    note = None
    while True:
        try:
            return attempt(raw), note
        except ValidationError as exc:
            refused = set(exc.fields) & set(raw)
            if not refused:
                raise
            note = note or f"{exc.message.removeprefix('填写的内容有误：').rstrip('。')}，这个筛选条件没有用上，下面是其余条件的结果。"
            raw = {k: v for k, v in raw.items() if k not in refused}


# --- login ------------------------------------------------------------------------------------------

def qrcode_button(kind: str, target_id: int, page: str, *, made: str, shown: str):
    """The "生成二维码" button of a building's or an activity's page (`kind`, see wechat.qrcodes.KINDS): its poster
    QR code (公众号带参数二维码) made once, then shown; says `made` when this click made it, `shown` when it was
    there already, or why WeChat could not make it, and goes back to the code on `page`."""
    from ..wechat.qrcodes import QRCodeUnavailable, qrcode_for

    try:
        _code, fresh = qrcode_for(current_actor(), kind, target_id)
    except QRCodeUnavailable as exc:
        flash(exc.message, "error")
    else:
        flash(made if fresh else shown)
    return redirect(page + "#qrcode")


def safe_console_path(target: str | None) -> str | None:
    """`target` when it is a path of this console to send the browser back to, else None: no scheme or host, no
    backslash, and no control character (a newline cannot go into the Location header: it would be a 500)."""
    if target and target.startswith("/console") and "\\" not in target and target.isprintable():
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return None


def _safe_next(target: str | None) -> str:
    return safe_console_path(target) or url_for("console.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("console/login.html", next=request.args.get("next", ""))
    state = current_app.extensions["wxapp"]
    # Cleaned as the API's login field is: a NUL in the name failed the lookup on PostgreSQL (a 500).
    username = clean_text(request.form.get("username") or "")[:64]
    # Checked whole: a cut at 128 let the right password followed by anything log in. (Too long for any account,
    # it simply does not match; the form's size is capped by MAX_CONTENT_LENGTH.)
    password = request.form.get("password") or ""
    if not username or not password:
        return render_template("console/login.html", error="请输入用户名和密码。", username=username,
                               next=request.form.get("next", "")), 400
    throttle = auth_services.LoginThrottle(state.redis, state.settings.login_max_failures,
                                           state.settings.login_lockout_seconds)
    try:
        with session_scope() as s:
            staff = auth_services.authenticate_staff(s, throttle, username=username, password=password,
                                                     ip=request.remote_addr or "", via="console")
            staff_id, pw_tail = staff.id, password_stamp(staff)
    except AppError as exc:  # a lockout's Retry-After goes with the page, as with every other 429
        return render_template("console/login.html", error=exc.message, username=username,
                               next=request.form.get("next", "")), exc.status, exc.headers
    # A fresh session on login defeats session fixation. The login it replaces (the last person's, on a shared PC)
    # ends as a logout would end it: the browser forgets it, a copy of its cookie must not live on, and the log
    # says when it ended (it had that person at the console until the login would have run out).
    replaced = tokens.resolve(state.redis, CONSOLE, session.get("sid") or "")
    tokens.revoke(state.redis, CONSOLE, session.get("sid") or "")
    # The same person logging in again (a second tab, the login page from a bookmark) left nothing: their session
    # goes on under a fresh cookie, and a logout row "replaced by themselves" said they had gone when they had not.
    if replaced is not None and replaced != staff_id:
        with session_scope() as s:
            auth_services.record_logout(s, replaced, ip=request.remote_addr or "", via="replaced",
                                        replaced_by=staff_id)
    kept = session.get("draft")
    session.clear()
    session.permanent = True
    session["sid"] = tokens.issue(state.redis, CONSOLE, staff_id, state.settings.staff_token_ttl, stamp=pw_tail)
    session["uid"] = staff_id
    drafts.carry_over(kept, staff_id)
    csrf_token()
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    r = current_app.extensions["wxapp"].redis
    staff_id = tokens.resolve(r, CONSOLE, session.get("sid") or "")
    tokens.revoke(r, CONSOLE, session.get("sid") or "")
    session.clear()
    if staff_id is not None:  # a second 退出 in another tab ended nothing: nothing to record
        with session_scope() as s:
            auth_services.record_logout(s, staff_id, ip=request.remote_addr or "", via="console")
    flash("您已安全退出。")
    return redirect(url_for("console.login"))


@bp.get("/")
@console_required()
def dashboard():
    from ..enterprises.services import awaiting_check

    with session_scope() as s:
        counts = {
            "enterprises": s.scalar(select(func.count(Enterprise.id)).where(Enterprise.retired_at.is_(None))) or 0,
            "buildings": s.scalar(select(func.count(Building.id))) or 0,
            "grids": s.scalar(select(func.count(Grid.id))) or 0,
            "users": s.scalar(select(func.count(User.id))) or 0,
            "pending_bindings": s.scalar(select(func.count(User.id)).where(awaiting_check())) or 0,
        }
    cards = list(DASHBOARD_CARDS)
    extra = []
    for card in cards:
        try:
            shown = card()
            if shown is not None:  # a card may have nothing to say (a warning that does not apply)
                extra.append(shown)
        except Exception:  # a broken card must not take the dashboard down
            current_app.logger.exception("dashboard card failed")
    links = {"enterprises": link("enterprises_console.enterprises"),
             "buildings": link("enterprises_console.buildings"), "grids": link("enterprises_console.grids"),
             "users": link("enterprises_console.users"),
             "pending_bindings": link("enterprises_console.users", state="pending")}
    # The users list is for staff and admins (enterprises/console.py): a department gets neither its cards nor links
    # that would end on 无权访问.
    people = ROLE_RANK[StaffRole(current_actor().role)] >= ROLE_RANK[StaffRole.STAFF]
    return render_template("console/dashboard.html", counts=counts, links=links, extra_cards=extra, people=people)


def link(endpoint: str, **values) -> str:
    """URL of a console page if that page is installed, else '#'."""
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else "#"


# Domains append callables returning {"title","value","hint","href"} for the dashboard.
DASHBOARD_CARDS: list = []


@bp.get("/jobs")
@console_required(StaffRole.ADMIN)
def jobs():
    from ..logs import RedactFilter
    from ..queue import failed_jobs, get_queue, started_jobs

    q = get_queue()
    # A failed job's traceback and arguments hold what a library was given (a URL with its access token, a
    # configured secret): masked as in the logs.
    redact = RedactFilter(current_app.extensions["wxapp"].settings.secret_values()).redact
    failed = [{**job, "error": redact(job["error"] or ""), "args": redact(job["args"] or "")}
              for job in failed_jobs(100)]
    # Not q.started_job_registry.count: it runs RQ's clean-up of that registry from here, which failed a dead
    # worker's job for good (the workers' clean-up runs it once more) and raced theirs.
    running = started_jobs()
    return render_template("console/jobs.html", failed=failed, queued=q.count, failed_total=q.failed_job_registry.count,
                           scheduled=q.scheduled_job_registry.count, started=len(running), running=running[:50])


@bp.post("/jobs/<job_id>/requeue")
@console_required(StaffRole.ADMIN)
def requeue_job(job_id: str):
    from ..queue import requeue_failed

    if len(job_id) > 100:
        abort(404)
    try:
        func = requeue_failed(job_id)
    except Exception:
        flash("这个任务已不在失败列表中。", "error")
        return redirect(url_for("console.jobs"))
    with session_scope() as s:  # the job runs again (a push, say): who asked for it is on file
        audit(s, current_actor(), "job.requeued", None, job_id=job_id, func=func)
    flash("已重新排队。")
    return redirect(url_for("console.jobs"))


add_nav("console.jobs", "后台任务", StaffRole.ADMIN, "系统")
