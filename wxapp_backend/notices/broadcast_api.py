"""Staff JSON API for notices: compose, reach estimate, test send, publish (idempotent), stop, progress."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import func, select

from ..auth.guard import current_actor, staff_api_required
from ..auth.models import StaffRole
from ..db import session_scope
from ..http import PAGE_FIELDS, doc, idempotency_header, idempotency_key, json_body, page_json, query
from ..validation import Field, require_present, require_some, validate
from . import broadcast
from .broadcast_models import Notice

bp = Blueprint("broadcast_api", __name__, url_prefix="/api/v1/staff")

TEST_RECIPIENT_FIELDS = (Field("user_id", "int", "测试接收人（用户编号，空则清除）", min=1),)


@bp.get("/notices")
@staff_api_required(StaffRole.DEPT)  # as the console's list, and a single notice: department accounts read them
@doc("通知列表", params=PAGE_FIELDS, auth="staff", tags=["通知推送"],
     responses={200: "{items, total, page, per_page, pages}"})
def list_notices():
    q = query(PAGE_FIELDS)
    with session_scope() as s:
        total = s.scalar(select(func.count(Notice.id))) or 0
        rows = s.scalars(select(Notice).order_by(Notice.id.desc()).offset((q["page"] - 1) * q["per_page"])
                         .limit(q["per_page"])).all()
        return jsonify(page_json([n.to_dict() for n in rows], total, q["page"], q["per_page"]))


IDEMPOTENCY_KEY_MAX = 80
IDEMPOTENCY_HEADER = idempotency_header(
    IDEMPOTENCY_KEY_MAX, "提交编号：新建一条通知一个，网络重试时带同一个，同样的内容返回第一次建好的草稿（200）；内容不同为 "
    "409 idempotency_key_reused（新建另一条请换一个新的）")


@bp.post("/notices")
@staff_api_required(StaffRole.STAFF)
@doc("新建通知（草稿）：标题、摘要、打开页面、订阅消息字段、推送对象（可带 Idempotency-Key 请求头：同一人同一键、同样内容"
     "返回第一次建好的草稿，200 而非 201；同一键内容不同为 409 idempotency_key_reused）", body=broadcast.NOTICE_FIELDS,
     responses={201: "已创建", 200: "同一 Idempotency-Key 已建好的草稿",
                409: "同一 Idempotency-Key 已用于内容不同的通知（idempotency_key_reused，fields.notice_id 是那条）",
                422: "字段超出微信限制或推送对象为空"}, auth="staff", tags=["通知推送"], headers=(IDEMPOTENCY_HEADER,))
def create_notice():
    data = json_body()
    key = idempotency_key(IDEMPOTENCY_KEY_MAX)
    with session_scope() as s:
        n, created = broadcast.create_keyed_notice(s, current_actor(), data, key)
        out = {**n.to_dict(), "reach": broadcast.reach(s, n)}
    return jsonify(out), 201 if created else 200


@bp.patch("/notices/<int:notice_id>")
@staff_api_required(StaffRole.STAFF)
@doc("修改草稿通知", body=broadcast.NOTICE_FIELDS, auth="staff", tags=["通知推送"])
def update_notice(notice_id: int):
    data = json_body()
    require_some(data, broadcast.NOTICE_FIELDS)  # {"titel": ...} alone answered 200 with nothing changed
    with session_scope() as s:
        n = broadcast.update_notice(s, current_actor(), notice_id, data)
        return jsonify({**n.to_dict(), "reach": broadcast.reach(s, n)})


@bp.get("/notices/<int:notice_id>")
@staff_api_required(StaffRole.DEPT)
@doc("通知详情与送达预估（可收到订阅消息的人数、仅站内信的人数）", auth="staff", tags=["通知推送"])
def get_notice(notice_id: int):
    with session_scope() as s:
        n = broadcast._get(s, notice_id)
        return jsonify({**n.to_dict(), "reach": broadcast.reach(s, n)})


TEST_IDEMPOTENCY_HEADER = idempotency_header(
    IDEMPOTENCY_KEY_MAX, "提交编号：一次测试发送一个，网络重试时带同一个，返回第一次的结果、不再发送；用于另一条通知为 409 "
    "idempotency_key_reused")


@bp.post("/notices/<int:notice_id>/test")
@staff_api_required(StaffRole.STAFF)
@doc(f"发给自己测试（自己的测试接收人；未设置则跳过）：订阅消息的字段和打开的页面与正式发送的相同；同一条通知 "
     f"{broadcast.TEST_SEND_WINDOW} 秒内只发一次（连点第二次为 409 test_just_sent）", body=(),
     responses={200: "{sent, user_id} 或 {sent: false, reason}",
                409: f"{broadcast.TEST_SEND_WINDOW} 秒内刚测试过这条通知 test_just_sent，或 Idempotency-Key 已用于另一条通知 "
                     "idempotency_key_reused",
                503: "Redis 暂时不可用，无法防止连点重复发送：test_unavailable，没有发出"},
     auth="staff", tags=["通知推送"], headers=(TEST_IDEMPOTENCY_HEADER,))
def send_test(notice_id: int):
    key = idempotency_key(IDEMPOTENCY_KEY_MAX)
    with session_scope() as s:
        return jsonify(broadcast.send_test(s, current_actor(), notice_id, idempotency_key=key))


@bp.put("/me/test-recipient")
@staff_api_required(StaffRole.STAFF)
@doc("设置自己的测试接收人（自己的小程序账号）；user_id 为 null 即清除，不带 user_id 为 422", body=TEST_RECIPIENT_FIELDS, auth="staff", tags=["通知推送"])
def set_test_recipient():
    data = json_body()
    # {} or "userId" cleared the recipient as a null does; then 发给自己测试 reached nobody.
    require_present(data, TEST_RECIPIENT_FIELDS, "；要清除测试接收人请传 null")
    body = validate(data, TEST_RECIPIENT_FIELDS)
    with session_scope() as s:
        broadcast.set_test_recipient(s, current_actor(), body["user_id"])
    return jsonify({"user_id": body["user_id"]})


@bp.post("/notices/<int:notice_id>/publish")
@staff_api_required(StaffRole.STAFF)
@doc("发布通知（重复发布不会重复发送）", body=(), responses={200: "已开始发送或早已发布", 409: "相关活动已取消 activity_cancelled 或还是草稿 activity_not_published，或通知已停止发送 notice_stopped",
                422: "推送对象为空"},
     auth="staff", tags=["通知推送"])
def publish(notice_id: int):
    with session_scope() as s:
        n = broadcast.publish(s, current_actor(), notice_id)
        return jsonify(n.to_dict())


@bp.post("/notices/<int:notice_id>/stop")
@staff_api_required(StaffRole.STAFF)
@doc("停止发送：正在发送的通知不再发给任何人（已交给微信的照常算已发送，其余记为“已停止发送”，订阅消息额度不扣）；"
     "重复停止不会出错；停止后不能恢复，需要时请新建一条通知", body=(),
     responses={200: "已停止（或早已停止）：通知详情，reached 为停止前已发出订阅消息的人数",
                409: "草稿未发送 not_sending，或已全部发送完成 already_finished"},
     auth="staff", tags=["通知推送"])
def stop(notice_id: int):
    with session_scope() as s:
        n, _ = broadcast.stop(s, current_actor(), notice_id)
        return jsonify({**n.to_dict(), "reached": broadcast.progress(s, notice_id)["reached"]})


@bp.get("/notices/<int:notice_id>/progress")
@staff_api_required(StaffRole.DEPT)
@doc("发送进度：各状态人数与失败原因", auth="staff", tags=["通知推送"])
def progress(notice_id: int):
    with session_scope() as s:
        return jsonify(broadcast.progress(s, notice_id))


def register(app: Flask) -> None:
    app.register_blueprint(bp)
