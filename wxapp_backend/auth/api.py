"""Mini-program login, the user's own profile and binding, and scripted staff login."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..db import session_scope
from ..errors import Forbidden, NotFound, ServiceUnavailable, TooManyRequests, Unauthorized, ValidationError
from ..http import doc, json_body, limit_key, parse, throttle
from ..validation import Field, enterprise_name_problem, require_some, shows_nothing, validate
from ..wechat.client import WeChatAPIError, code_to_session
from . import services, tokens
from .guard import (
    STAFF,
    USER,
    current_actor,
    current_user_id,
    password_stamp,
    staff_api_required,
    unblocked_user_required,
    user_required,
)
from .models import StaffRole, User, UserRole

bp = Blueprint("auth_api", __name__, url_prefix="/api/v1")

# Binding requests a day per user (`enterprise_binding_limit`): each unknown credit code adds an enterprise to
# the registry (一企一档) for staff to check, so a script must not be able to fill it.
BINDINGS_PER_DAY = 10
PROFILE_LIMIT_PER_MIN = 20  # PATCH /me per user (`profile_limit`)
# Mini-program logins a minute per client address (the `wxa_login_limit` knob): generous, since a building's Wi-Fi at
# an activity's check-in, or a carrier's shared address, puts hundreds of people behind one address.
LOGIN_LIMIT_PER_MIN = 300
LOGIN_FIELDS = (Field("code", "str", "登录凭证 code", required=True, max_len=128),)
PROFILE_FIELDS = (
    Field("nickname", "str", "昵称", max_len=32),
    Field("phone", "phone", "手机号"),
    Field("role", "enum", "身份", choices=tuple(r.value for r in UserRole)),
    Field("building_id", "int", "所在楼宇", min=1),
)
BIND_FIELDS = (
    Field("name", "str", "企业名称", required=True, max_len=200, min_len=2, check=enterprise_name_problem),
    Field("credit_code", "credit_code", "统一社会信用代码", required=True),
)
STAFF_LOGIN_FIELDS = (
    Field("username", "str", "用户名", required=True, max_len=64),
    Field("password", "str", "密码", required=True, max_len=128, verbatim=True),
)


def _state():
    return current_app.extensions["wxapp"]


@bp.post("/auth/login")
@doc("小程序登录：用 wx.login 的 code 换取登录凭证", body=LOGIN_FIELDS, auth="none",
     responses={200: "{token, user}",
                401: "登录凭证无效或已用过（invalid_code，微信 40029 / 40163）：请重新调用 wx.login 取新的 code",
                403: "微信认为该微信账号存在安全风险，不能登录（login_blocked_by_wechat）",
                429: "登录太频繁（本服务或微信 45011 的频率限制），Retry-After 秒后再试",
                503: "微信登录暂时不可用（wechat_unavailable：微信繁忙 -1 重试后仍不成功等）或小程序登录未配置"
                     "（login_not_configured），请稍后再试"},
     tags=["账号"])
def login():
    data = parse(LOGIN_FIELDS)
    # Every login asks WeChat (code2Session, a daily quota shared by all users): a script must not spend it.
    throttle("wxa_login", limit_key(request.remote_addr or ""), LOGIN_LIMIT_PER_MIN, 60,
             "登录太频繁了，请稍等一分钟再试。")
    state = _state()
    s = state.settings
    if not s.wxa_appid or not s.wxa_secret:
        raise ServiceUnavailable("小程序登录还没有配置（缺少 WXA_APPID / WXA_SECRET），请联系管理员。",
                                 code="login_not_configured")
    try:
        answer = code_to_session(state.wechat_http, s.wxa_appid, s.wxa_secret, data["code"])
    except WeChatAPIError as exc:
        if exc.errcode in {40029, 40163}:
            raise Unauthorized("登录凭证无效或已使用，请重新打开小程序。", code="invalid_code") from None
        if exc.errcode == 40226:  # WeChat refuses logins of accounts it rates high-risk; a new code won't help
            raise Forbidden("微信提示您的微信账号存在安全风险，暂时不能登录小程序；如需办理业务，请致电营商服务中心。",
                            code="login_blocked_by_wechat") from None
        if exc.errcode == 45011:  # WeChat's own frequency limit: a 429 like ours, with when to try again
            raise TooManyRequests("登录太频繁了，请稍等一分钟再试。", headers={"Retry-After": "60"}) from None
        raise ServiceUnavailable("微信登录暂时不可用，请稍后再试。", code="wechat_unavailable") from None
    openid = str(answer.get("openid") or "")
    if not openid:
        raise ServiceUnavailable("微信登录返回异常，请稍后再试。", code="wechat_unavailable")
    with session_scope() as session:
        user = services.upsert_mini_program_user(session, openid=openid, unionid=answer.get("unionid"))
        session.flush()
        body = user.to_dict()
        user_id = user.id
    token = tokens.issue(state.redis, USER, user_id, s.user_token_ttl)
    return jsonify({"token": token, "expires_in": s.user_token_ttl, "user": body})


@bp.post("/auth/logout")
@user_required
@doc("退出登录，使当前凭证失效", tags=["账号"], body=())
def logout():
    tokens.revoke(_state().redis, USER, request.headers["Authorization"].split(" ", 1)[1].strip())
    return jsonify({"ok": True})


@bp.get("/me")
@user_required
@doc("当前登录用户", tags=["账号"])
def me():
    with session_scope() as session:
        user = session.get(User, current_user_id())
        if user is None:
            raise NotFound("账号不存在，请重新登录。")
        return jsonify(user.to_dict())


@bp.patch("/me")
@unblocked_user_required
@doc("修改自己的昵称、手机号、身份和所在楼宇（只改提交的字段；昵称、手机号、楼宇传空或 null 即删除）",
     body=PROFILE_FIELDS, tags=["账号"], responses={200: "用户", 403: "账号受限，不能进行这项操作（account_restricted）"})
def update_me():
    # Each change writes an audit row: a script with a token could otherwise fill the log.
    throttle("profile", f"u{current_user_id()}", PROFILE_LIMIT_PER_MIN, 60, "资料修改太频繁了，请稍等一分钟再试。")
    body = json_body()
    require_some(body, PROFILE_FIELDS)  # {"nick_name": ...} answered 200 and saved nothing
    nickname = body.get("nickname")
    if isinstance(nickname, str) and nickname and shows_nothing(nickname):
        # Cleaned, it is "", which removes the nickname: pasted zero-width characters wiped it without a word.
        problem = "昵称不能只有空格或看不见的字符；如要删除昵称，请把昵称清空后提交"
        raise ValidationError(f"填写的内容有误：{problem}", fields={"nickname": problem})
    data = validate(body, PROFILE_FIELDS, partial=True)
    # A field sent empty or null is one the user wants removed (validate() gives None or leaves it out).
    clear = [name for name in services.CLEARABLE if name in body and data.get(name) is None]
    with session_scope() as session:
        user = session.get(User, current_user_id())
        if user is None:
            raise NotFound("账号不存在，请重新登录。")
        services.update_profile(session, user, clear=clear, **{k: v for k, v in data.items() if v is not None})
        session.flush()
        return jsonify(user.to_dict())


@bp.post("/me/enterprise")
@unblocked_user_required
@doc("申请绑定所在企业（企业名称 + 统一社会信用代码），由服务中心核实；已核实的联系人申请另一家企业时，"
     "原绑定在新申请通过前保持不变", body=BIND_FIELDS, tags=["账号"],
     responses={200: "绑定申请已提交：状态 pending；已核实的联系人状态仍为 verified，申请的企业在 pending_enterprise"
                     "（信用代码属于已合并的重复档案时，申请的是它合并到的档案）",
                403: "账号受限，不能进行这项操作（account_restricted）",
                409: "该信用代码的企业档案已合并停用且无保留档案（code enterprise_retired），请联系服务专员",
                422: "企业名称或信用代码填写有误"})
def bind_enterprise():
    data = parse(BIND_FIELDS)
    throttle("enterprise_binding", f"u{current_user_id()}", BINDINGS_PER_DAY, 86400,
             "今天提交的企业绑定申请太多了，请明天再试；如需帮助，请联系营商服务中心。")
    with session_scope() as session:
        user = session.get(User, current_user_id())
        if user is None:
            raise NotFound("账号不存在，请重新登录。")
        services.request_enterprise_binding(session, user, name=data["name"], credit_code=data["credit_code"])
        session.flush()
        session.refresh(user)
        return jsonify(user.to_dict())


@bp.delete("/me/enterprise")
@user_required
@doc("撤回企业绑定申请，或解除已核实的绑定（换了工作、选错了企业）；已核实的联系人有改绑申请时先撤回改绑申请、"
     "原绑定不变；已提交的诉求不受影响", tags=["账号"],
     responses={200: "已解除（binding_state 为 none，role 改回 white_collar，不再是任何企业的联系人），"
                     "或改绑申请已撤回（pending_enterprise 为 null）"})
def leave_enterprise():
    with session_scope() as session:
        user = session.get(User, current_user_id())
        if user is None:
            raise NotFound("账号不存在，请重新登录。")
        services.leave_enterprise(session, user)
        session.flush()
        session.refresh(user)
        return jsonify(user.to_dict())


@bp.post("/staff/login")
@doc("工作人员登录（脚本使用），返回 bearer token", body=STAFF_LOGIN_FIELDS, auth="none", tags=["工作人员"])
def staff_login():
    data = parse(STAFF_LOGIN_FIELDS)
    state = _state()
    throttle = services.LoginThrottle(state.redis, state.settings.login_max_failures,
                                      state.settings.login_lockout_seconds)
    with session_scope() as session:
        staff = services.authenticate_staff(session, throttle, username=data["username"],
                                            password=data["password"], ip=request.remote_addr or "", via="api")
        staff_id, body, stamp = staff.id, staff.to_dict(), password_stamp(staff)
    token = tokens.issue(state.redis, STAFF, staff_id, state.settings.staff_token_ttl, stamp=stamp)
    return jsonify({"token": token, "expires_in": state.settings.staff_token_ttl, "staff": body})


@bp.post("/staff/logout")
@staff_api_required(StaffRole.DEPT)
@doc("工作人员退出登录，使当前凭证失效（同一账号的其他凭证不受影响）", body=(), auth="staff", tags=["工作人员"])
def staff_logout():
    tokens.revoke(_state().redis, STAFF, request.headers["Authorization"].split(" ", 1)[1].strip())
    with session_scope() as session:
        services.record_logout(session, current_actor().id, ip=request.remote_addr or "", via="api")
    return jsonify({"ok": True})
