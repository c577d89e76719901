"""Mini-program and staff JSON API for activities, registrations, check-in and category subscriptions."""

from __future__ import annotations

import unicodedata

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import select

from ..audit import Actor
from ..auth.guard import current_actor, current_user_id, optional_user_id, staff_api_required, user_required
from ..auth.models import StaffRole, User
from ..db import session_scope
from ..http import (
    PAGE_FIELDS,
    doc,
    idempotency_header,
    idempotency_key,
    json_body,
    page_json,
    parse,
    query,
    throttle,
)
from ..validation import Field, clean_text, require_present, require_some, strip_invisible, validate
from . import checkin, services
from .models import CATEGORIES, ActivityStatus, Registration

bp = Blueprint("activities_api", __name__, url_prefix="/api/v1")

REGISTER_LIMIT_PER_MIN = 30  # registrations a minute per user (the `registration_limit` knob)
SUBSCRIPTIONS_LIMIT_PER_MIN = 20  # category subscription saves a minute per user (`subscriptions_limit`)
REGISTER_FIELDS = (Field("answers", "dict", "报名问题的回答", default={}),)
SUBSCRIPTION_FIELDS = (
    Field("categories", "list", "订阅的活动类别", required=True, max_items=len(CATEGORIES),
          item=Field("category", "enum", "活动类别", choices=tuple(CATEGORIES),
                     choice_names=CATEGORIES)),
)
CHECKIN_FIELDS = (Field("token", "str", "签到码", required=True, max_len=100),
                  Field("activity_id", "int", "本场活动（填写后只接受这场活动的签到码）", min=1))
DECIDE_FIELDS = (Field("note", "str", "说明", max_len=200, default=""),)
ATTENDED_FIELDS = (Field("note", "str", "说明", required=True, max_len=200),)


IDEMPOTENCY_KEY_MAX = 80
IDEMPOTENCY_HEADER = idempotency_header(
    IDEMPOTENCY_KEY_MAX, "提交编号：一次报名请求一个，网络重试时带同一个，同样的回答返回第一次的结果；回答不同、用于另一活动，"
    "或那次报名已取消，为 409 idempotency_key_reused（重新报名请换一个新的）")


def _secret() -> str:
    return current_app.extensions["wxapp"].settings.secret_key


def _mine(s, reg: Registration, *, with_activity: bool = False) -> dict:
    """A registration as its user reads it: status, next actions and, while waitlisted, their place in the queue
    (after the start: that the waitlist did not move up, in the status label too)."""
    out = {**reg.to_dict(with_activity=with_activity), **services.user_actions(reg),
           "waitlist_position": services.waitlist_position(s, reg), "audience_note": services.audience_note(reg)}
    if out["waitlist_note"]:
        out["status_label"] = "候补未递补"
    return out


@bp.get("/activities")
@doc("活动列表（可按类别、日期、活动地点所在楼宇筛选；未结束的在前、开始早的先，已结束的（include_past）随后、最近的先），"
     "含剩余名额；带登录令牌时每项有 ineligible_reason（现在不能报名的原因："
     "报名未开始或已截止、活动已开始、不在面向范围、已报名、名额已满且不设候补等，与报名时的提示相同；可以报名为 null）；"
     "register_note：取消报名截止时间已过而仍可报名时，提醒现在报名后不能在线取消（满员时说明候补可以取消，需审核时说明审核"
     "通过后不能取消），其他情况及不能报名时为 null",
     params=services.LIST_PARAMS, auth="optional", tags=["活动"])
def list_activities():
    q = query(services.LIST_PARAMS)
    user_id = optional_user_id()
    with session_scope() as s:
        items, total = services.list_activities(s, q, user_id=user_id)
    return jsonify({**page_json(items, total, q["page"], q["per_page"]), "categories": CATEGORIES})


@bp.get("/activities/<int:activity_id>")
@doc("活动详情（含剩余名额、报名问题）；带登录令牌时 my_registration 是本人最近一次报名（状态、可否取消、"
     "可否出示签到码、候补第几位 waitlist_position；报名后活动报名范围收窄、本人已不在范围内时 audience_note 说明报名"
     "仍然有效，否则为 null；cancel_note 同报名的返回），没有报名为 null；ineligible_reason、register_note 同活动列表",
     auth="optional", tags=["活动"])
def get_activity(activity_id: int):
    user_id = optional_user_id()
    with session_scope() as s:
        a = services.get_activity(s, activity_id)
        taken, queued = services.seat_and_waitlist(s, a.id)
        out = a.to_dict(seats_taken=taken, waitlisted=queued)
        out["register_note"] = services.register_note(a, taken, queued)
        if user_id is not None:  # the page shows 已报名 / 候补第 n 位 / 取消报名 without another request
            user = s.get(User, user_id)
            standing = services.own_standing(s, user_id, [a.id]).get(a.id)
            out["ineligible_reason"] = (services.refusal(a, user, taken, queued, standing=standing)
                                        if user is not None else None)
            if out["ineligible_reason"] is not None:  # about a registration they cannot make
                out["register_note"] = None
            reg = s.scalar(select(Registration).where(Registration.activity_id == a.id,
                                                      Registration.user_id == user_id)
                           .order_by(Registration.id.desc()).limit(1))
            out["my_registration"] = _mine(s, reg) if reg is not None else None
        return jsonify(out)


@bp.post("/activities/<int:activity_id>/registrations")
@user_required
@doc("报名活动（可带 Idempotency-Key 头：一个键只代表一次报名请求，同一键、同样的回答返回第一次的结果；"
     "这次报名取消后想再报名是新的请求，要换一个新键，用旧键为 409 idempotency_key_reused）；"
     "返回报名状态、可否取消 can_cancel 和应申请的订阅消息模板；在取消报名截止时间之后报名的，cancel_note 说明这次报名不能在线取消"
     "（需审核的：审核通过后不能取消；候补中的可以取消，为 null），其他为 null", body=REGISTER_FIELDS,
     responses={201: "报名成功、候补或待审核", 200: "重复提交，返回第一次的结果", 403: "不在活动面向范围",
                409: "名额已满 activity_full / 已报名 / 报名未开始或已截止 / 同一 Idempotency-Key 已用于另一活动、"
                     "不同的回答或已取消的报名 idempotency_key_reused（fields.registration_id 是那次报名）",
                422: "回答不符合要求"}, headers=(IDEMPOTENCY_HEADER,),
     tags=["活动"])
def create_registration(activity_id: int):
    data = json_body()
    require_some(data, REGISTER_FIELDS)  # {"answer": ...} registered with the answers typed thrown away
    body = validate(data, REGISTER_FIELDS)
    throttle("registration", f"u{current_user_id()}", REGISTER_LIMIT_PER_MIN, 60, "报名操作太频繁了，请稍等一分钟再试。")
    with session_scope() as s:
        reg, created = services.register(s, activity_id=activity_id, user_id=current_user_id(),
                                         answers=body["answers"], idempotency_key=idempotency_key(IDEMPOTENCY_KEY_MAX))
        out = {**_mine(s, reg), "subscribe": services.subscribe_hint(reg.status)}
    return jsonify(out), 201 if created else 200


@bp.post("/registrations/<int:registration_id>/cancel")
@user_required
@doc("取消我的报名（截止时间前）；空出的名额自动给候补第一位", body=(), tags=["活动"])
def cancel(registration_id: int):
    uid = current_user_id()
    with session_scope() as s:
        reg = services.cancel_registration(s, Actor("user", uid), registration_id, user_id=uid)
        return jsonify(_mine(s, reg))


@bp.get("/registrations/<int:registration_id>/qr")
@user_required
@doc("签到码（每分钟更换；前一分钟的码仍可用）", tags=["活动"],
     responses={200: "签到码", 404: "不是本人的报名", 409: "报名状态没有签到码、活动已取消或签到已关闭 checkin_closed"})
def qr(registration_id: int):
    with session_scope() as s:
        return jsonify(checkin.qr_for(s, _secret(), registration_id, current_user_id()))


@bp.get("/me/registrations")
@user_required
@doc("我的报名（含可否取消及截止时间 can_cancel / cancel_until、可否出示签到码 can_show_code、"
     "候补第几位 waitlist_position，不在候补或活动已开始为 null；活动开始时仍在候补的，waitlist_note 说明候补未能递补；"
     "报名后报名范围收窄、本人已不在范围内的，audience_note 说明报名仍然有效；取消报名截止时间之后报名、不能在线取消的，"
     "cancel_note 说明原因）；"
     "按报名先后倒序分页，{items, total, page, per_page, pages}", params=PAGE_FIELDS, tags=["活动"])
def my_registrations():
    q = query(PAGE_FIELDS)
    with session_scope() as s:
        regs, total = services.my_registrations_page(s, current_user_id(), page=q["page"], per_page=q["per_page"])
        return jsonify(page_json([_mine(s, r, with_activity=True) for r in regs], total, q["page"], q["per_page"]))


@bp.get("/me/subscriptions")
@user_required
@doc("我订阅的活动类别", tags=["活动"])
def get_subscriptions():
    with session_scope() as s:
        return jsonify({"categories": services.get_subscriptions(s, current_user_id()), "available": CATEGORIES})


def _distinct_categories(values: list) -> list:
    """The categories as sent, each once: text folded as a Chinese input method may give it (full-width letters,
    blanks and invisible characters around it), in the order first sent; anything else is left for validate() to
    refuse."""
    out: list = []
    seen: set[str] = set()
    for value in values:
        if isinstance(value, str):
            value = strip_invisible(clean_text(unicodedata.normalize("NFKC", value))).strip()
            if value in seen:
                continue
            seen.add(value)
        out.append(value)
    return out


@bp.put("/me/subscriptions")
@user_required
@doc("设置订阅的活动类别（整体替换）：categories 是要订阅的类别代码列表（重复的只算一次），空列表 [] 即全部退订；"
     "不带 categories（或拼错）为 422，已有订阅不变；subscribe.template_ids 是应请用户授权的订阅消息模板"
     "（新活动通知；不请求授权，通知只进“消息”），全部退订时为空", body=SUBSCRIPTION_FIELDS, tags=["活动"],
     responses={200: "{categories, available, subscribe}", 422: "缺少 categories 或类别不认识"})
def put_subscriptions():
    data = json_body()
    # {} or a misspelt name used to mean "no categories" and removed every subscription without a word.
    require_present(data, SUBSCRIPTION_FIELDS, "；一个类别都不订阅请传空列表 []")
    # A category sent twice (a double tap, a page that appended to what it read) is one: “最多 11 项” refused a list
    # of 12 entries naming 10 categories. Repeats go before the size is judged, written with blanks or full-width
    # letters too.
    if isinstance(data.get("categories"), list):
        data = {**data, "categories": _distinct_categories(data["categories"])}
    body = validate(data, SUBSCRIPTION_FIELDS)
    # A change writes an audit row: a script with a token could otherwise fill the log.
    throttle("subscriptions", f"u{current_user_id()}", SUBSCRIPTIONS_LIMIT_PER_MIN, 60,
             "订阅设置修改太频繁了，请稍等一分钟再试。")
    with session_scope() as s:
        cats = services.set_subscriptions(s, current_user_id(), body["categories"])
    return jsonify({"categories": cats, "available": CATEGORIES, "subscribe": services.subscriptions_hint(cats)})


# --- staff -------------------------------------------------------------------------------------------

@bp.get("/staff/activities")
@staff_api_required(StaffRole.DEPT)
@doc("活动列表（工作人员：含草稿和已取消；未结束的在前、开始早的先，已结束的随后、最近的先；可按类别、状态筛选），含已占名额和候补人数",
     params=services.STAFF_LIST_PARAMS, auth="staff", tags=["活动管理"])
def staff_activities():
    q = query(services.STAFF_LIST_PARAMS)
    with session_scope() as s:
        items, total = services.list_activities(s, q, staff=True)
    return jsonify(page_json(items, total, q["page"], q["per_page"]))


@bp.get("/staff/activities/<int:activity_id>")
@staff_api_required(StaffRole.DEPT)
@doc("活动详情（工作人员：草稿和已取消的也可读），含已占名额和候补人数", auth="staff", tags=["活动管理"])
def staff_activity(activity_id: int):
    with session_scope() as s:
        a = services.get_activity(s, activity_id, staff=True)
        return jsonify(a.to_dict(seats_taken=services.seats_taken(s, a.id),
                                 waitlisted=services.waitlist_length(s, a.id)))


@bp.post("/staff/activities")
@staff_api_required(StaffRole.STAFF)
@doc("新建活动", body=services.ACTIVITY_FIELDS, responses={201: "已创建", 422: "填写有误"}, auth="staff",
     tags=["活动管理"])
def create_activity():
    data = json_body()
    with session_scope() as s:
        a = services.create_activity(s, current_actor(), data)
        out = a.to_dict(seats_taken=0, waitlisted=0)
    return jsonify(out), 201


@bp.patch("/staff/activities/<int:activity_id>")
@staff_api_required(StaffRole.STAFF)
@doc("修改活动（只传要改的字段；增加名额会自动递补候补；取消活动时可带 cancel_reason 告知报名者；改了报名范围时"
     "返回 out_of_audience：不在新范围内的报名者人数，报名不会自动取消）",
     body=(*services.ACTIVITY_FIELDS, services.CANCEL_REASON), auth="staff",
     tags=["活动管理"])
def update_activity(activity_id: int):
    data = json_body()
    # {"titel": ...} alone answered 200 with nothing changed.
    require_some(data, (*services.ACTIVITY_FIELDS, services.CANCEL_REASON))
    with session_scope() as s:
        a = services.update_activity(s, current_actor(), activity_id, data)
        out = a.to_dict(seats_taken=services.seats_taken(s, a.id), waitlisted=services.waitlist_length(s, a.id))
        if set(services.AUDIENCE_FIELDS) & data.keys() and a.status != ActivityStatus.CANCELLED.value:
            # Registrants (still to come) outside the audience as it now is: kept, but the editor should know.
            out["out_of_audience"] = services.out_of_audience(s, a)
        return jsonify(out)


@bp.get("/staff/activities/<int:activity_id>/registrations")
@staff_api_required(StaffRole.DEPT)
@doc("活动的报名名单（与后台名单相同：姓名/昵称 name、手机 phone（部门账号只见 138****8000，电话题的回答同样）、"
     "企业 enterprise、状态 status_label；"
     "候补中的 waitlist_position 是实际递补的先后，不是报名编号的先后，不在候补为 null；questions 是回答对应的问题 key 与标题，"
     "含回答后被删除的问题）", auth="staff", tags=["活动管理"])
def staff_registrations(activity_id: int):
    with session_scope() as s:
        activity = services.get_activity(s, activity_id, staff=True)
        full = services.sees_phones(current_actor().role)  # a department account reads 138****8000
        roster = services.registration_roster(s, activity_id)
        # The answers' questions, one removed after it was answered too (as the console's list).
        questions = services.roster_questions(s, activity, (reg.answers for reg, *_ in roster))
        items = [{**reg.to_dict(), "answers": services.roster_answers(reg.answers, questions, full),
                  "user_id": reg.user_id, "enterprise_id": reg.enterprise_id, "name": services.roster_name(user),
                  "phone": services.roster_phone(user.phone, full), "enterprise": ent.name if ent else "",
                  "status_label": services.roster_label(reg, place), "waitlist_position": place}
                 for reg, user, ent, place in roster]
        return jsonify({"items": items, "questions": [{"key": q["key"], "label": q["label"]} for q in questions]})


@bp.post("/staff/registrations/<int:registration_id>/approve")
@staff_api_required(StaffRole.STAFF)
@doc("审核通过报名", body=DECIDE_FIELDS, auth="staff", tags=["活动管理"])
def approve(registration_id: int):
    data = json_body()
    require_some(data, DECIDE_FIELDS)  # {"reason": ...}: the field is note, and the words were lost
    body = validate(data, DECIDE_FIELDS)
    with session_scope() as s:
        return jsonify(services.decide(s, current_actor(), registration_id, True, body["note"]).to_dict())


@bp.post("/staff/registrations/<int:registration_id>/reject")
@staff_api_required(StaffRole.STAFF)
@doc("驳回报名", body=DECIDE_FIELDS, auth="staff", tags=["活动管理"])
def reject(registration_id: int):
    data = json_body()
    require_some(data, DECIDE_FIELDS)  # {"reason": ...} rejected and told the user no reason
    body = validate(data, DECIDE_FIELDS)
    with session_scope() as s:
        return jsonify(services.decide(s, current_actor(), registration_id, False, body["note"]).to_dict())


@bp.post("/staff/registrations/<int:registration_id>/cancel")
@staff_api_required(StaffRole.STAFF)
@doc("工作人员取消一条报名（不受截止时间限制）", body=(), auth="staff", tags=["活动管理"])
def staff_cancel(registration_id: int):
    with session_scope() as s:
        return jsonify(services.cancel_registration(s, current_actor(), registration_id).to_dict())


@bp.post("/staff/registrations/<int:registration_id>/attended")
@staff_api_required(StaffRole.STAFF)
@doc("更正为已到场（未扫码但确实到场；爽约记录随之撤销）", body=ATTENDED_FIELDS,
     responses={200: "报名", 409: "状态不允许或签到未开始（开始前 2 小时开放）", 422: "缺少说明"}, auth="staff", tags=["活动管理"])
def staff_mark_attended(registration_id: int):
    body = parse(ATTENDED_FIELDS)
    with session_scope() as s:
        return jsonify(checkin.mark_attended(s, current_actor(), registration_id, body["note"]).to_dict())


@bp.post("/staff/registrations/<int:registration_id>/admit")
@staff_api_required(StaffRole.STAFF)
@doc("现场候补入场：签到开放期间、仍有空余名额时，把候补中的报名改为已确认并签到", body=ATTENDED_FIELDS,
     responses={200: "报名（已签到）", 409: "不是候补、名额已满、签到未开始或已关闭", 422: "缺少说明"}, auth="staff",
     tags=["活动管理"])
def staff_admit(registration_id: int):
    body = parse(ATTENDED_FIELDS)
    with session_scope() as s:
        return jsonify(checkin.admit_waitlisted(s, current_actor(), registration_id, body["note"]).to_dict())


@bp.post("/staff/checkins")
@staff_api_required(StaffRole.DEPT)
@doc("扫码签到（重复扫码不会重复签到：already 为 true，checked_in_at 与 message 说明首次签到的时间）", body=CHECKIN_FIELDS,
     responses={200: "签到成功或已签到", 409: "报名已取消、不是本场活动的签到码等", 422: "签到码无效或已过期"}, auth="staff",
     tags=["活动管理"])
def staff_checkin():
    body = parse(CHECKIN_FIELDS)
    with session_scope() as s:
        return jsonify(checkin.check_in(s, current_actor(), _secret(), body["token"],
                                        activity_id=body.get("activity_id")))


def register(app: Flask) -> None:
    """Called by create_app: the activities API, the notice broadcast API and both console pages."""
    from ..notices import broadcast_api
    from ..periodic import register_periodic
    from . import console, notice_console

    app.register_blueprint(bp)
    broadcast_api.register(app)
    app.register_blueprint(console.bp)
    app.register_blueprint(notice_console.bp)
    # Safety nets behind the delayed jobs: each is idempotent, so a slot run twice changes nothing.
    register_periodic("activity_reminders", 300, "wxapp_backend.activities.jobs.send_due_reminders")
    register_periodic("activity_attendance", 900, "wxapp_backend.activities.jobs.close_ended_activities")
    register_periodic("notice_fanout", 60, "wxapp_backend.notices.broadcast.fanout_tick")
