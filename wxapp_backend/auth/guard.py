"""Who is calling: bearer tokens for /api/v1, the session cookie for the console, and role checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

from flask import current_app, g, redirect, request, session, url_for
from sqlalchemy.exc import IntegrityError

from ..audit import Actor
from ..errors import Forbidden, NotFound, Unauthorized
from . import tokens
from .models import ROLE_RANK, StaffRole

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

USER, STAFF, CONSOLE = "user", "staff", "console"

# What a page sends before anyone logged in: "Bearer " + an empty, undefined or null stored token.
_NO_TOKEN = {"", "undefined", "null"}

# A live token of the other kind: still a 401 invalid_token, but “登录已过期” sent a staff script, which had just
# logged in, to a mini-program it does not have (and a page sending a user's token to a staff route to log in again).
_STAFF_TOKEN_HERE = "这是工作人员的登录凭证，这个接口供小程序用户使用；工作人员请使用 /api/v1/staff/ 下的接口。"
_USER_TOKEN_HERE = "这是小程序用户的登录凭证，这个接口供工作人员使用；请先用 /api/v1/staff/login 登录工作人员账号。"


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # "Bearer undefined" is a page that has not logged in yet (_NO_TOKEN): 登录已过期 was news to someone who never
    # logged in.
    if scheme.lower() != "bearer" or token.strip() in _NO_TOKEN:
        raise Unauthorized("请先登录（缺少登录凭证）。", code="missing_token")
    return token.strip()


def current_user_id() -> int:
    """The mini-program user behind the bearer token (401 when missing or expired)."""
    token = _bearer()
    cached = getattr(g, "user_auth", None)
    if cached is not None and cached[0] == token:  # keyed by token: g can outlive one request in tests
        return cached[1]
    state = current_app.extensions["wxapp"]
    user_id = tokens.resolve(state.redis, USER, token)
    if user_id is None:
        if tokens.resolve(state.redis, STAFF, token) is not None:
            raise Unauthorized(_STAFF_TOKEN_HERE, code="invalid_token")
        raise Unauthorized("登录已过期，请重新进入小程序。", code="invalid_token")
    g.user_auth = (token, user_id)
    return user_id



def optional_user_id() -> int | None:
    """For endpoints open to all: the mini-program user of the bearer token, or None when no token is sent.

    A token that is sent but no longer valid is a 401 invalid_token (登录已过期): answered as anonymous, the page
    showed no 已报名 and never learnt that it should log in again. A staff token is no mini-program login: a
    staff script that sends it everywhere is served as anonymous, as before.

    So is the token of an account that is gone (merged into another, removed, a restored backup): these views do not
    fail for want of the row as user_required's do, they wrote a chat turn or a vote for nobody (a 500) or served
    the page as to a logged-in user. One primary-key look-up, only when a token is sent. Call it outside any
    session_scope() (it opens one)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() in _NO_TOKEN:
        return None
    try:
        user_id = current_user_id()
    except Unauthorized:
        state = current_app.extensions["wxapp"]
        if tokens.resolve(state.redis, STAFF, token.strip()) is not None:
            return None
        raise
    from ..db import DB_AWAY

    try:
        exists = _user_exists(user_id)
    except DB_AWAY:
        # The database away for a moment: the token is valid (it is in Redis), so served as its user, as before the
        # look-up was added; what needs the row fails on its own, the chat answers from the knowledge base.
        log.warning("login not checked against the users table: database away", exc_info=True)
        return user_id
    if not exists:
        _end_gone_login()
    return user_id


def _user_exists(user_id: int) -> bool:
    from sqlalchemy import select

    from ..db import session_scope
    from .models import User

    with session_scope() as s:
        return s.scalar(select(User.id).where(User.id == user_id)) is not None


def _end_gone_login() -> NoReturn:
    """The bearer token names an account that no longer exists: end the token and answer as an expired login."""
    tokens.revoke(current_app.extensions["wxapp"].redis, USER, _bearer())
    g.pop("user_auth", None)
    raise Unauthorized("登录已过期，请重新进入小程序。", code="invalid_token") from None


def user_required(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user_id = current_user_id()
        try:
            return fn(*args, **kwargs)
        except (NotFound, IntegrityError):
            # The token can outlive its account row (deleted on the person's request, a restored backup): what
            # failed for want of it (a 404, a foreign key) is an expired login, so that the mini-program logs in
            # again, and the token ends. Looked up only after a failure: a working request pays nothing.
            if _user_exists(user_id):
                raise
            _end_gone_login()

    return wrapper  # type: ignore[return-value]


def unblocked_user_required(fn: F) -> F:
    """`user_required` for what a user sends to staff or the public (an appeal, a supplement, a rating, a binding
    request, their profile): a user staff have blocked is refused, 403 account_restricted (auth.blocking). What only
    reads or takes back (我的诉求, withdrawing, cancelling, unbinding, subscriptions) stays open to them."""

    @wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        from .blocking import refuse_if_blocked

        refuse_if_blocked(current_user_id())
        return fn(*args, **kwargs)

    return user_required(checked)  # type: ignore[return-value]


def _load_staff(staff_id: int):
    from ..db import session_scope
    from .models import StaffUser

    with session_scope() as s:
        staff = s.get(StaffUser, staff_id)
        if staff is None or not staff.active:
            return None
        s.expunge(staff)
        return staff


def password_stamp(staff) -> str:
    """A piece of the password hash: a console session or API token that carries it ends when the password
    changes."""
    return staff.password_hash[-12:]


def end_staff_logins(r, staff_id: int) -> None:
    """End the account's console logins and API tokens (after it is disabled or its password is reset).

    A disabled account is already refused by _load_staff and a new password by the stamp; revoking the tokens
    as well keeps them from coming back to life when the account is enabled again.
    """
    for kind in (CONSOLE, STAFF):
        tokens.revoke_subject(r, kind, staff_id)


def _check_role(staff, min_role: str) -> Actor:
    if ROLE_RANK[StaffRole(staff.role)] < ROLE_RANK[StaffRole(min_role)]:
        raise Forbidden("抱歉，您的账号没有权限进行这个操作。")
    actor = Actor(STAFF, staff.id, role=staff.role, department=staff.department,
                  name=staff.display_name or staff.username)
    g.staff = staff
    g.actor = actor
    return actor


def staff_api_required(min_role: str = StaffRole.DEPT) -> Callable[[F], F]:
    """Bearer-token staff access to /api/v1/staff/... with at least `min_role`."""

    def deco(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = current_app.extensions["wxapp"]
            token = _bearer()
            found = tokens.resolve_stamped(state.redis, STAFF, token)
            staff = _load_staff(found[0]) if found is not None else None
            # Like the console session, a token is good only for the password it was issued under.
            if staff is None or (found[1] and found[1] != password_stamp(staff)):
                if found is None and tokens.resolve(state.redis, USER, token) is not None:
                    raise Unauthorized(_USER_TOKEN_HERE, code="invalid_token")
                raise Unauthorized("登录已过期，请重新登录。", code="invalid_token")
            _check_role(staff, min_role)
            return fn(*args, **kwargs)

        wrapper.__staff_role__ = min_role  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def console_required(min_role: str = StaffRole.DEPT) -> Callable[[F], F]:
    """Console pages: logged-in staff with at least `min_role`; anonymous visitors go to the login page."""

    def deco(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # The cookie only names a login kept in Redis: logging out ends it there, not just in this browser.
            state = current_app.extensions["wxapp"]
            found = tokens.resolve_stamped(state.redis, CONSOLE, session.get("sid") or "")
            staff = _load_staff(found[0]) if found is not None else None
            if staff is None or found[1] != password_stamp(staff):
                return _to_login()
            if session.get("uid") != staff.id:  # who this browser belongs to, for a form kept past the login
                session["uid"] = staff.id
            _check_role(staff, min_role)
            return fn(*args, **kwargs)

        wrapper.__staff_role__ = min_role  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def _to_login():
    """The login page, and back to this page (a GET) or the page the form was on (a POST) after it.

    A form sent after the login ran out (a long appeal reply, a knowledge-base answer) is kept for the same
    person's next login and comes back filled on that page: it was lost before, and the page came back empty."""
    from ..console import drafts, referrer_path

    back = None
    if request.method == "GET":
        back = request.full_path.rstrip("?")
    else:
        rule = request.url_rule
        back = referrer_path() or (request.path if rule is not None and "GET" in (rule.methods or ()) else None)
    uid = session.get("uid")
    session.clear()
    if back and request.method != "GET":
        drafts.keep(uid, back)
    return redirect(url_for("console.login", next=back))


def current_actor() -> Actor:
    actor = getattr(g, "actor", None)
    if actor is None:
        raise Unauthorized()
    return actor
