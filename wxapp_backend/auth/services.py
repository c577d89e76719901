"""Account services: mini-program login, enterprise binding, staff accounts and login throttling."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import redis
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from ..audit import SYSTEM, Actor, audit
from ..db import utcnow
from ..edits import locked_for_edit, refuse_stale, version_digest
from ..enterprises.models import NOTE_BINDING_PENDING, Enterprise
from ..errors import Conflict, NotFound, TooManyRequests, Unauthorized, ValidationError
from ..http import limit_key
from ..validation import credit_code_problem
from .models import STAFF_ROLE_NAMES, BindingState, StaffRole, StaffUser, User, UserRole

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,64}$")
# A hash to compare against when the username does not exist, so timing does not reveal which names exist.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def upsert_mini_program_user(session: Session, *, openid: str, unionid: str | None) -> User:
    """Create or update the user behind a jscode2session answer."""
    from .linking import link_after_login, lock_person, valid_unionid

    unionid = valid_unionid(unionid)
    if unionid:
        lock_person(session, unionid)  # before reading: a concurrent login or link job has committed by then
    user = link_after_login(session, session.scalar(select(User).where(User.openid == openid)), openid, unionid)
    if user is None:
        try:
            with session.begin_nested():
                user = User(openid=openid, unionid=unionid or None, role=UserRole.WHITE_COLLAR.value)
                session.add(user)
                session.flush()
        except IntegrityError:  # wx.login fired twice at launch: the other login has just made the row
            user = session.scalar(select(User).where(User.openid == openid))
            if user is None:
                raise
        else:
            audit(session, Actor("user", user.id), "user.created", user, via="mini_program")
    if unionid and user.unionid != unionid:
        user.unionid = unionid
    user.last_login_at = utcnow()
    return user


CLEARABLE = ("nickname", "phone", "building_id")


def update_profile(session: Session, user: User, *, nickname: str | None = None, phone: str | None = None,
                   role: str | None = None, building_id: int | None = None,
                   clear: Iterable[str] = (), via: str | None = None) -> User:
    """Let users correct their own nickname, phone, role and building, or remove (`clear`) the first three. `via`
    says, in the audit row, where a change not typed in the profile came from (a building's QR code)."""
    from ..enterprises.services import building_to_point_at

    changes = {}
    for name in CLEARABLE:
        if name in clear and getattr(user, name) not in ("", None):
            setattr(user, name, None if name == "building_id" else "")
            changes[name] = None if name == "building_id" else ""
    if nickname is not None:
        user.nickname, changes["nickname"] = nickname, nickname
    if phone is not None:
        user.phone, changes["phone"] = phone, "***" + phone[-4:]
    if role is not None:
        user.role, changes["role"] = role, role
    if building_id is not None:
        if building_to_point_at(session, building_id, current=user.building_id) is None:  # (share-locked)
            raise ValidationError("没有找到这栋楼宇。", fields={"building_id": "楼宇不存在"})
        user.building_id, changes["building_id"] = building_id, building_id
    if "building_id" in changes:
        session.expire(user, ["building"])  # follow the changed building_id
    if changes:
        audit(session, Actor("user", user.id), "user.profile_updated", user, **changes, **({"via": via} if via else {}))
    return user


def remember_building(session: Session, user_id: int, building_id: int, *, via: str = "qrcode") -> bool:
    """Take `building_id` as the user's building when they have none yet (a follow or scan of a building's poster),
    as the profile does it (audited); a building they chose is never overwritten. True when it was remembered."""
    from ..enterprises.services import building_to_point_at

    # The building share-locked before the user's row, in the order a merge of it takes them (update_profile's note).
    if building_to_point_at(session, building_id) is None:
        return False
    user = session.scalar(select(User).where(User.id == user_id).with_for_update(of=User)
                          .execution_options(populate_existing=True))
    if user is None or user.building_id is not None:
        return False
    update_profile(session, user, building_id=building_id, via=via)
    return True


def request_enterprise_binding(session: Session, user: User, *, name: str, credit_code: str) -> User:
    """The user says they work for this enterprise; staff verify it in the console.

    A verified contact applying to another enterprise keeps their verified binding until staff approve the new
    one (it waits in pending_enterprise_id): an application alone must not leave them with nothing."""
    from ..enterprises.services import carrying_on, drop_unclaimed_file, find_by_code, names_given

    problem = credit_code_problem(credit_code)
    if problem:
        raise ValidationError(problem, fields={"credit_code": problem})
    # The enterprise's file is found (however an old file wrote the code) and share-locked before the user's row,
    # in the order a merge takes them: a merge committing meanwhile is waited for and its result read, or it waits
    # for this request and moves the user along. Without it the request wrote the user onto the duplicate the
    # merge had just retired.
    found = find_by_code(session, credit_code, lock=True)
    if found is None:
        try:
            with session.begin_nested():
                found = Enterprise(name=name, credit_code=credit_code, note=NOTE_BINDING_PENDING)
                session.add(found)
                session.flush()
        except IntegrityError:  # a colleague applied with the same code at the same moment and made the row
            found = find_by_code(session, credit_code, lock=True)
            if found is None:
                raise
        else:
            audit(session, Actor("user", user.id), "enterprise.created", found, via="binding", name=name)
    enterprise = carrying_on(session, found, lock=True)  # a duplicate file staff merged: the kept one carries on
    if enterprise is None:
        raise Conflict(f"统一社会信用代码 {credit_code} 对应的企业档案（{found.name}）已停用，暂时不能绑定。"
                       "请联系楼宇的服务专员或营商服务中心核实处理。", code="enterprise_retired",
                       fields={"credit_code": "该企业档案已停用"})
    user = _locked(session, user)
    if user.applied_enterprise_id == enterprise.id and names_given(session, [user]).get(user.id) == name:
        # The same application sent again (提交 tapped twice, the page reopened): nothing new for staff to check,
        # and a second row would move the applicant behind everyone who applied since (the queue's order).
        return user
    verified = user.enterprise_id is not None and user.binding_state == BindingState.VERIFIED
    if verified and user.enterprise_id == enterprise.id:
        if user.pending_enterprise_id is not None:  # back to the enterprise they are verified for
            _withdraw_switch(session, user)
        return user
    replaced = user.applied_enterprise_id  # an application of theirs this one takes the place of
    if verified:
        user.pending_enterprise_id = enterprise.id
        session.expire(user, ["pending_enterprise"])
        audit(session, Actor("user", user.id), "binding.requested", user, enterprise_id=enterprise.id,
              name_given=name, name_on_file=enterprise.name, verified_enterprise_id=user.enterprise_id)
    else:
        user.enterprise_id = enterprise.id
        user.pending_enterprise_id = None
        user.role = UserRole.ENTERPRISE_CONTACT.value
        user.binding_state = BindingState.PENDING.value
        audit(session, Actor("user", user.id), "binding.requested", user, enterprise_id=enterprise.id,
              name_given=name, name_on_file=enterprise.name)
    if replaced != enterprise.id:  # a mistyped code applied for first: the file it made goes
        drop_unclaimed_file(session, Actor("user", user.id), replaced)
    return user


def _locked(session: Session, user: User) -> User:
    """The user's row, locked and read afresh: a staff decision committed since the caller loaded it is seen,
    and not overwritten with the state from before it."""
    return session.scalar(select(User).where(User.id == user.id).with_for_update(of=User)
                          .execution_options(populate_existing=True)) or user


def _withdraw_switch(session: Session, user: User) -> None:
    from ..enterprises.services import drop_unclaimed_file

    previous = user.pending_enterprise_id
    user.pending_enterprise_id = None
    session.expire(user, ["pending_enterprise"])
    audit(session, Actor("user", user.id), "binding.withdrawn", user, enterprise_id=previous,
          previous_state=BindingState.PENDING.value, verified_enterprise_id=user.enterprise_id)
    drop_unclaimed_file(session, Actor("user", user.id), previous)


def leave_enterprise(session: Session, user: User) -> User:
    """The user withdraws their binding application, or ends a binding (a new job, the wrong company chosen):
    they had no way to, short of asking staff. Appeals already filed for the enterprise stay as they are.

    A verified contact with an application to another enterprise withdraws that application first and stays
    verified; a second call ends the binding."""
    from ..enterprises.services import drop_unclaimed_file

    user = _locked(session, user)
    if user.pending_enterprise_id is not None:
        _withdraw_switch(session, user)
        return user
    if user.enterprise_id is None and user.binding_state == BindingState.NONE.value:
        return user
    previous, state = user.enterprise_id, user.binding_state
    user.enterprise_id = None
    user.binding_state = BindingState.NONE.value
    # The role came with the application (request_enterprise_binding): a user bound to nobody is no enterprise's
    # contact, and the console and the staff API listed them as one.
    user.role = UserRole.WHITE_COLLAR.value
    action = "binding.withdrawn" if state == BindingState.PENDING.value else "binding.ended"
    audit(session, Actor("user", user.id), action, user, enterprise_id=previous, previous_state=state)
    if state == BindingState.PENDING.value:  # a file the application made goes with it (a decided one stays)
        drop_unclaimed_file(session, Actor("user", user.id), previous)
    return user


def validate_password(password: str) -> str | None:
    if len(password) < 8:
        return "密码至少 8 位"
    if len(password) > 128:
        return "密码不能超过 128 位"
    if password.isdigit() or password.isalpha():
        return "密码需同时包含字母和数字"
    # The scripted login (JSON) reads text as every field is read, trimmed and without control characters: a
    # password that needs them would log in at the console and never by API.
    if password != password.strip() or not password.isprintable():
        return "密码首尾不能有空格，也不能含有换行、制表符等控制字符"
    return None


STAFF_TEXT_MAX = 64  # display_name and department columns
# Control characters (a pasted tab, a NUL that PostgreSQL refuses) never belong in a name.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: str | None) -> str:
    return _CONTROL_RE.sub("", value or "").strip()


def _profile_problems(role: str, department: str, display_name: str) -> dict[str, str]:
    errors = {}
    if role not in {r.value for r in StaffRole}:
        # The codes alone meant nothing to the staff reading the form: the names they see in the console come first.
        names = "、".join(f"{name}（{code}）" for code, name in STAFF_ROLE_NAMES.items())
        errors["role"] = f"角色只能是 {names}"
    if role == StaffRole.DEPT and not department:
        errors["department"] = "部门账号必须填写所属部门"
    elif len(department) > STAFF_TEXT_MAX:
        errors["department"] = f"部门名称不能超过 {STAFF_TEXT_MAX} 个字"
    if len(display_name) > STAFF_TEXT_MAX:
        errors["display_name"] = f"显示名称不能超过 {STAFF_TEXT_MAX} 个字"
    return errors


def find_staff_by_username(session: Session, username: str) -> StaffUser | None:
    """The account a login name means. Usernames are one name whatever their case (as the login lock-out counts
    them): `Admin` logs in to `admin`. The database refuses two accounts differing only in case (migration 0006
    renamed the later ones of those made before); were there two, an exact spelling would pick one and any other
    would mean no account."""
    # A name no account can have is not looked up: a NUL from the login form is refused by PostgreSQL.
    if not USERNAME_RE.fullmatch(username or ""):
        return None
    found = list(session.scalars(select(StaffUser).where(func.lower(StaffUser.username) == username.lower())))
    exact = [s for s in found if s.username == username]
    return exact[0] if exact else found[0] if len(found) == 1 else None


def create_staff(session: Session, *, username: str, password: str, role: str, department: str = "",
                 display_name: str = "", actor: Actor = SYSTEM) -> StaffUser:
    """Create a staff account with a hashed password."""
    department, display_name = _clean(department), _clean(display_name)
    errors = {}
    if not USERNAME_RE.fullmatch(username or ""):
        errors["username"] = "用户名为 3-64 位字母、数字、下划线、点或横线"
    problem = validate_password(password or "")
    if problem:
        errors["password"] = problem
    errors.update(_profile_problems(role, department, display_name))
    if errors:
        raise ValidationError(next(iter(errors.values())), fields=errors)
    taken = Conflict(f"用户名 {username} 已存在（用户名不区分大小写）。", fields={"username": "已存在"})
    # Two admins creating `Bob` and `bob` at once would both pass the check below; the second then fails on the
    # unique index on lower(username). Creations of one name, whatever its case, wait for each other so that the
    # second gets the plain "exists" answer (PostgreSQL; SQLite's writers are serialised by BEGIN IMMEDIATE).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"staff:{username.lower()}"})
    if session.scalar(select(StaffUser.id).where(func.lower(StaffUser.username) == username.lower())) is not None:
        raise taken
    staff = StaffUser(username=username, password_hash=generate_password_hash(password), role=role,
                      department=department, display_name=display_name or username)
    try:
        with session.begin_nested():
            session.add(staff)
            session.flush()
    except IntegrityError:  # the same name created at the same moment by another admin
        raise taken from None
    audit(session, actor, "staff.created", staff, username=username, role=role, department=department,
          display_name=staff.display_name)
    return staff


def set_staff_password(session: Session, staff: StaffUser, password: str, actor: Actor, *,
                       by: str | None = None) -> None:
    """Set a new password. `by` goes into the staff.password_changed row (the action stays one code): "self" (the
    account's own person), "admin" or "system" (seed-demo), by default told from the actor; the audit page names
    the first 修改密码, the others 重置密码."""
    if by is None:
        by = "self" if _is_self(actor, staff) else "system" if actor.type == "system" else "admin"
    problem = validate_password(password)
    if problem:
        raise ValidationError(problem, fields={"password": problem})
    staff.password_hash = generate_password_hash(password)
    audit(session, actor, "staff.password_changed", staff, by=by)


def list_staff(session: Session) -> list[StaffUser]:
    """Every console account, the active ones first, by username."""
    return list(session.scalars(select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.username)))


def get_staff(session: Session, staff_id: int) -> StaffUser:
    """One console account (404 when there is none)."""
    staff = session.get(StaffUser, staff_id)
    if staff is None:
        raise NotFound("没有找到这个工作人员账号。")
    return staff


def _is_self(actor: Actor, staff: StaffUser) -> bool:
    return actor.type == "staff" and str(actor.id) == str(staff.id)


def _is_last_active_admin(session: Session, staff: StaffUser) -> bool:
    """Whether `staff` is the only active admin. The active admins' rows are locked (PostgreSQL; SQLite
    writes one at a time anyway), so two admins disabling each other at once cannot leave none."""
    stmt = (select(StaffUser.id).where(StaffUser.role == StaffRole.ADMIN.value, StaffUser.active.is_(True))
            .with_for_update())
    return set(session.scalars(stmt)) <= {staff.id}


PROFILE_FIELDS = ("display_name", "role", "department")


def profile_version(staff: StaffUser) -> str:
    """The version of an account's profile for the console's stale-page check (staff_users has no updated_at)."""
    return version_digest({name: getattr(staff, name) for name in PROFILE_FIELDS})


def update_staff(session: Session, actor: Actor, staff_id: int, *, display_name: str, role: str,
                 department: str, seen: str | None = None) -> StaffUser:
    """Change an account's display name, role and department; the changes are audited as from/to pairs. `seen`:
    the profile_version the edit page was loaded on; a change to a profile a colleague saved since is refused
    (StaleEdit), not written over theirs."""
    staff = get_staff(session, staff_id)
    if seen is not None:
        staff = locked_for_edit(session, StaffUser, staff_id, "没有找到这个工作人员账号。")
    display_name, department = _clean(display_name), _clean(department)
    errors = _profile_problems(role, department, display_name)
    if errors:
        raise ValidationError(next(iter(errors.values())), fields=errors)
    typed = {"display_name": display_name or staff.username, "role": role, "department": department}
    refuse_stale(staff, [k for k, v in typed.items() if getattr(staff, k) != v], seen, "账号信息",
                 now=profile_version(staff))
    if role != staff.role:
        if _is_self(actor, staff):
            raise Conflict("不能修改自己账号的角色，请由另一位管理员操作。", fields={"role": "不能修改自己的角色"})
        if staff.role == StaffRole.ADMIN and staff.active and _is_last_active_admin(session, staff):
            raise Conflict("这是最后一个启用中的管理员账号，不能改为其他角色，否则就没有人能管理账号了。",
                           fields={"role": "最后一个管理员"})
    changes = {}
    for name, value in (("display_name", display_name or staff.username), ("role", role),
                        ("department", department)):
        if getattr(staff, name) != value:
            changes[name] = {"from": getattr(staff, name), "to": value}
            setattr(staff, name, value)
    if changes:
        audit(session, actor, "staff.updated", staff, username=staff.username, **changes)
    return staff


def set_staff_active(session: Session, actor: Actor, staff_id: int, active: bool) -> StaffUser:
    """Disable or re-enable an account. Not one's own, and never the last active admin.

    The caller ends the account's logins after the commit (guard.end_staff_logins).
    """
    staff = get_staff(session, staff_id)
    if staff.active == active:
        return staff
    if not active:
        if _is_self(actor, staff):
            raise Conflict("不能停用自己正在使用的账号。")
        if staff.role == StaffRole.ADMIN and _is_last_active_admin(session, staff):
            raise Conflict("这是最后一个启用中的管理员账号，停用后就没有人能管理账号了，不能停用。")
    staff.active = active
    audit(session, actor, "staff.enabled" if active else "staff.disabled", staff, username=staff.username)
    return staff


OWN_RESET_MESSAGE = "不能在账号管理里重置自己的密码。为了安全，请到“修改密码”页面，输入当前密码后设置新密码。"


def reset_staff_password(session: Session, actor: Actor, staff_id: int, password: str) -> StaffUser:
    """An admin sets a new password for another account (audited without the password); never their own.

    The caller ends the account's logins after the commit (guard.end_staff_logins).
    """
    staff = get_staff(session, staff_id)
    if _is_self(actor, staff):
        # Without the current password, whoever found the admin's console left logged in could take the account
        # over for good: one's own password is changed at 修改密码 (change_own_password), which asks for it.
        raise Conflict(OWN_RESET_MESSAGE, code="own_password_reset", fields={"password": "请到“修改密码”修改"})
    set_staff_password(session, staff, password, actor, by="admin")
    return staff


def change_own_password(session: Session, throttle: LoginThrottle, staff_id: int, *, current: str, new: str,
                        ip: str) -> StaffUser:
    """A staff member sets their own password, proving the current one first: whoever finds a console left
    logged in must not be able to take the account over. A wrong current password counts towards the login
    lockout, as a wrong password at the login does.

    The caller ends the account's other logins after the commit (guard.end_staff_logins)."""
    staff = get_staff(session, staff_id)
    problem = validate_password(new)
    if problem:
        raise ValidationError(problem, fields={"password": problem})
    username = staff.username
    _begin(session, throttle, username, ip)
    try:
        ok = check_password_hash(staff.password_hash, current)
    except BaseException:
        throttle.abandon(username, ip)
        raise
    if not ok:  # audited as a wrong password at the login is: it may be someone at a console left logged in
        _refused(session, staff_id, username=username, ip=ip, reason="wrong_current_password")
        raise ValidationError("当前密码不正确，请重新输入。", fields={"current_password": "当前密码不正确"})
    throttle.succeeded(staff.username, ip)
    if current == new:
        raise ValidationError("新密码不能和当前密码相同。", fields={"password": "与当前密码相同"})
    set_staff_password(session, staff, new, Actor("staff", staff.id, role=staff.role), by="self")
    return staff


class LoginThrottle:
    """Counts failed logins in Redis and locks out after too many: per name from one address (`max`), per address
    (4 × max: an office behind one NAT shares it) and per name from everywhere (10 × max). A name is locked for
    everyone only by that last, looser count: with 5 wrong passwords anyone could lock the admin out for the
    whole window, again and again, when the name alone was counted; a guesser on one address stops at its own
    limits, one spread over many addresses still stops at the global one."""

    USER_EVERYWHERE = 10
    ADDRESS = 4
    SCOPES = ("name_from_address", "address", "name")  # what each of _keys() counts, for the audit row

    def __init__(self, r: redis.Redis, max_failures: int, lockout_seconds: int) -> None:
        self.r, self.max, self.window = r, max_failures, lockout_seconds
        # Set by begin() when this attempt is the first one a lock refuses: (scope, seconds left). Only that one
        # is audited; a script hammering a locked name must not write a row per request.
        self.newly_locked: tuple[str, int] | None = None

    def _keys(self, username: str, ip: str) -> list[str]:
        # An IPv6 client is counted by its /64 (it holds all of it). The name is kept as a digest: people type
        # their password into the name field, and Redis held it as typed for the lock-out window (the audit row
        # masks it); a name with * or ? in it also matched other names' keys in forget()'s SCAN pattern.
        name = hashlib.sha256(username.lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]
        where = limit_key(ip)
        return [f"login:fail:user:{name}:ip:{where}", f"login:fail:ip:{where}", f"login:fail:user:{name}"]

    def begin(self, username: str, ip: str) -> None:
        """Count this attempt as a failure before its password is checked (succeeded() takes it back): checked
        first and counted after the password (scrypt takes a while), guesses sent together all passed the check
        before any was counted. A refused attempt is taken back at once, so that one address hammering a locked
        name does not go on to lock it everywhere."""
        keys = self._keys(username, ip)
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
        for key in keys:
            pipe.ttl(key)
        answers = pipe.execute()
        counts, ttls = answers[:3], answers[3:]
        for key, count, ttl in zip(keys, counts, ttls, strict=True):
            # The window starts at the first failure (EXPIRE NX needs Redis 7; the embedded one is 6.2).
            if count == 1 or ttl < 0:
                self.r.expire(key, self.window)
        limits = (self.max, self.max * self.ADDRESS, self.max * self.USER_EVERYWHERE)
        for key, count, limit, scope in zip(keys, counts, limits, self.SCOPES, strict=True):
            if count > limit:
                self._take_back(keys)
                ttl = max(self.r.ttl(key), 1)
                if self.r.set(f"login:locked:{key}", "1", nx=True, ex=ttl):
                    self.newly_locked = (scope, ttl)
                minutes = max(1, (ttl + 59) // 60)
                raise TooManyRequests(f"登录失败次数太多，请 {minutes} 分钟后再试。",
                                      headers={"Retry-After": str(ttl)})

    def abandon(self, username: str, ip: str) -> None:
        """Take back an attempt begin() counted that was never judged (the check itself failed)."""
        self._take_back(self._keys(username, ip))

    def _take_back(self, keys: list[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.decr(key)
        pipe.execute()

    def succeeded(self, username: str, ip: str = "") -> None:
        self._take_back(self._keys(username, ip)[1:2])  # the address counts failures: begin() counted this one
        name_here, _, name_everywhere = self._keys(username, ip)
        self.r.delete(name_here, name_everywhere, f"login:locked:{name_here}", f"login:locked:{name_everywhere}")

    def forget(self, username: str) -> None:
        """Drop the name's failures from every address (a password reset on the server: whoever forgot it has
        usually used up their tries)."""
        name_everywhere = self._keys(username, "")[2]
        self.r.delete(name_everywhere, f"login:locked:{name_everywhere}",
                      *self.r.scan_iter(f"{name_everywhere}:ip:*", count=500),
                      *self.r.scan_iter(f"login:locked:{name_everywhere}:ip:*", count=500))


def _refused(session: Session, staff_id: int | None, *, username: str, ip: str,
             action: str = "staff.login_failed", **data: object) -> None:
    """The audit row of a refused login, committed now: the caller rolls its transaction back when the refusal
    is raised, and a row written in it would go too. The attempt itself changed nothing that could be lost."""
    session.rollback()
    # A name no account has is kept masked: people type their password into the name field, and the audit page
    # must not show it to whoever reads the log.
    shown = username[:64] if staff_id is not None else username[:2] + "*" * min(len(username) - 2, 8)
    row = audit(session, SYSTEM, action, None, username=shown, ip=ip, **data)
    if staff_id is not None:  # the account tried, for the audit page's filter by target
        row.target_type, row.target_id = StaffUser.__tablename__, str(staff_id)
    session.commit()


def _begin(session: Session, throttle: LoginThrottle, username: str, ip: str) -> None:
    """throttle.begin(), with the audit row of the attempt that a lock refuses first."""
    try:
        throttle.begin(username, ip)
    except TooManyRequests:
        if throttle.newly_locked is not None:
            scope, seconds = throttle.newly_locked
            staff = find_staff_by_username(session, username)
            staff_id = staff.id if staff is not None else None
            _refused(session, staff_id, username=username, ip=ip, action="staff.login_locked", scope=scope,
                     seconds=seconds)
        raise


def authenticate_staff(session: Session, throttle: LoginThrottle, *, username: str, password: str,
                       ip: str, via: str = "") -> StaffUser:
    """Check a staff login; the same answer for an unknown name and a wrong password. `via` ("console" or "api")
    goes into the staff.login and staff.login_failed rows, as it does into staff.logout."""
    where = {"via": via} if via else {}
    _begin(session, throttle, username, ip)
    try:
        staff = find_staff_by_username(session, username)
        ok = check_password_hash(staff.password_hash if staff else _DUMMY_HASH, password)
    except BaseException:  # the database did not answer: no wrong password, so no failure to count
        throttle.abandon(username, ip)
        raise
    if staff is None or not ok or not staff.active:  # counted as a failure by begin()
        reason = "unknown_user" if staff is None else "wrong_password" if not ok else "disabled"
        _refused(session, staff.id if staff is not None else None, username=username, ip=ip, reason=reason,
                 **where)
        raise Unauthorized("用户名或密码不正确。", code="bad_credentials")
    throttle.succeeded(username, ip)
    staff.last_login_at = utcnow()
    audit(session, Actor("staff", staff.id, role=staff.role), "staff.login", staff, ip=ip, **where)
    return staff


def record_logout(session: Session, staff_id: int, *, ip: str, via: str, **data: object) -> None:
    """The audit row of a logout (via "console", "api", or "replaced": another person's login in the same browser
    ended it, with `replaced_by`): the log said when a login began, never when it ended."""
    staff = session.get(StaffUser, staff_id)
    if staff is not None:
        audit(session, Actor("staff", staff.id, role=staff.role), "staff.logout", staff, ip=ip, via=via, **data)
