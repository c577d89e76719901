"""Mini-program JSON API for appeals (own appeals only) and the staff JSON API (queue, actions, reports)."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import select

from ..audit import Actor, audit
from ..auth.guard import (
    current_actor,
    current_user_id,
    staff_api_required,
    unblocked_user_required,
    user_required,
)
from ..auth.models import StaffRole
from ..db import session_scope
from ..errors import AppError, ValidationError
from ..http import PAGE_FIELDS, doc, idempotency_header, idempotency_key, json_body, page_json, parse, query
from ..notices.kinds import subscribe_request
from ..validation import Field, require_some, validate
from . import intake, reports, services
from . import metrics as appeal_metrics
from .models import Holiday

bp = Blueprint("appeals_api", __name__, url_prefix="/api/v1")

# The same photo picked twice is stored once and not counted (intake.decode_images counts the distinct ones against
# the nine); the list itself may hold a few repeats. The request's size cap bounds it in any case.
MAX_IMAGE_ITEMS = intake.MAX_IMAGES * 2
_IMAGE = Field("image", "str", "照片", max_len=intake.MAX_IMAGE_BYTES * 4 // 3 + 64)

SUBMIT_FIELDS = (
    Field("content", "text", "问题描述", required=True, min_len=5, max_len=2000, check=intake.description_problem),
    Field("contact_name", "str", "联系人", required=True, max_len=32),
    Field("contact_phone", "phone", "联系电话", required=True),
    Field("category", "str", "诉求类别", max_len=32, description="类别代码或名称（可不填，系统自动分类）"),
    Field("enterprise_id", "int", "企业", min=1),
    Field("enterprise_name", "str", "企业名称", max_len=200),
    Field("building_id", "int", "所在楼宇", min=1),
    Field("images", "list", "照片", item=_IMAGE, max_items=MAX_IMAGE_ITEMS,
          description="最多 9 张，每张为 base64 字符串（可带 data:image/...;base64, 前缀），不超过 2 MB，"
                      "仅 JPG/PNG/WebP（按文件内容判断）；整个请求不超过 15 MB；同一张照片重复上传只保存一张，不计入 9 张"),
)
SUPPLEMENT_FIELDS = (
    Field("content", "text", "补充内容", required=True, max_len=2000, check=intake.supplement_problem),
    Field("images", "list", "照片", item=_IMAGE, max_items=MAX_IMAGE_ITEMS),
)
WITHDRAW_FIELDS = (Field("reason", "text", "撤回原因", max_len=500),)
RATING_FIELDS = (
    Field("resolved", "bool", "问题是否解决", required=True),
    Field("satisfaction", "int", "满意度", required=True, min=1, max=5),
    Field("comment", "text", "评价内容", max_len=500),
)
ESCALATE_FIELDS = (Field("reason", "text", "办不成事的情况", max_len=1000),)

ACTION_FIELDS = (
    Field("action", "enum", "操作", required=True, choices=tuple(services.ACTIONS)),
    Field("version", "int", "版本号", min=1, description="页面上看到的版本；与当前版本不一致时返回 409"),
    Field("note", "text", "说明", max_len=1000),
    Field("reason", "text", "理由", max_len=1000),
    Field("resolution", "text", "办理结果", max_len=2000),
    Field("category", "str", "类别", max_len=32),
    Field("department", "str", "部门", max_len=64),
    Field("handler_id", "int", "承办人", min=1),
    Field("building_id", "int", "楼宇", min=1, description="调整楼宇（set_building）：诉求所在的楼宇，网格和服务专员随之调整"),
    Field("master_id", "int", "主诉求", min=1),
    Field("task_id", "int", "任务", min=1),
    Field("return_id", "int", "退单申请", min=1),
    Field("extension_id", "int", "延期申请", min=1),
    Field("accept", "bool", "同意"),
    Field("cancel", "bool", "取消任务"),
    Field("result", "text", "任务结果", max_len=1000),
    Field("working_days", "int", "工作日数", min=1, max=30),
    Field("tasks", "list", "会办任务", max_items=10, item=Field("task", "dict"),
          description="[{department, description, working_days, required}]"),
)
STAFF_FILTERS = (
    Field("status", "str", "状态（逗号分隔）", max_len=200),
    Field("category", "str", "类别", max_len=32),
    Field("department", "str", "部门", max_len=64),
    Field("grid_id", "int", "网格", min=1),
    Field("building_id", "int", "楼宇", min=1),
    Field("enterprise_id", "int", "企业", min=1),
    Field("no_enterprise", "bool", "未关联企业（没有关联企业档案，也没有填写企业名称）"),
    Field("typed_enterprise", "str", "填写的企业名称（未核实，没有关联企业档案；完全一致）", max_len=200),
    Field("overdue", "bool", "超期"),
    Field("due_soon", "bool", "临期（在办且距办结期限不足 1 个工作日，未超期）"),
    Field("escalated", "bool", "办不成事"),
    Field("pending_requests", "bool", "有待中心审核的退单或延期申请"),
    Field("escalation_open", "bool", "办不成事待处理（诉求在办，或办不成事任务未完成）"),
    Field("triage", "bool", "待分拣"),
    Field("open_only", "bool", "只看在办"),
    Field("q", "str", "编号/内容/企业", max_len=100),
) + PAGE_FIELDS
WEEK_FIELDS = (Field("week", "str", "周次", max_len=8, description="如 2025-W40（上海时间 ISO 周）；不填为上周"),
               Field("format", "enum", "格式", choices=("json", "xlsx"), default="json"))
ISSUES_FIELDS = (Field("enterprise_id", "int", "企业", min=1),
                 Field("format", "enum", "格式", choices=("json", "xlsx"), default="json"))
METRIC_FIELDS = (
    Field("from", "datetime", "开始时间", required=True,
          description="如 2025-10-01（当天 0 点起）或 2025-10-01T08:30:00+08:00；不写时区按上海时间"),
    Field("to", "datetime", "结束时间", required=True,
          description="只写日期（如 2025-10-31）时含当天，统计到次日 0 点；写了时间则统计到该时刻为止（不含该时刻）"),
)
def _date_only(value: str) -> bool:
    """A date with no time: "2025-10-31" alone, and the other ISO dates the parser takes (20251031, 2025-W44-5).
    Staff asking for October mean the 31st too, so the period ends at the next midnight."""
    try:
        date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True
CATEGORY_FIELDS = (
    Field("code", "str", "代码", max_len=32),
    Field("name", "str", "名称", max_len=32),
    Field("department", "str", "责任部门", max_len=64),
    Field("promised_days", "int", "承诺办结工作日", min=1, max=60),
    Field("required_fields", "list", "必填项", item=Field("f", "enum", choices=services.REQUIRABLE)),
    Field("keywords", "list", "分类关键词", item=Field("k", "str", max_len=20), max_items=200),
    Field("description", "text", "说明", max_len=1000),
    Field("active", "bool", "启用"),
    Field("sort", "int", "排序", min=0, max=10000),
)
HOLIDAY_FIELDS = (Field("day", "date", "日期", required=True), Field("is_workday", "bool", "是否上班", required=True),
                  Field("name", "str", "名称", max_len=64))


def _user() -> Actor:
    return Actor("user", current_user_id())


def _page(page: services.Page, items: list[dict]) -> dict:
    return {"items": items, "total": page.total, "page": page.page, "per_page": page.per_page, "pages": page.pages}


def _images(values: list[str] | None) -> list[dict]:
    decoded = intake.decode_images(values or [])
    return intake.store_images(current_app.instance_path, decoded) if decoded else []


IDEMPOTENCY_KEY_MAX = 64  # the appeals' column
IDEMPOTENCY_HEADER = idempotency_header(
    IDEMPOTENCY_KEY_MAX, "提交编号：一次提交一个，网络重试时带同一个，同样的内容返回同一条诉求；内容不同或那条诉求已撤回，"
    "为 409 idempotency_key_reused（重新反映请换一个新的）")


# --- mini-program ---------------------------------------------------------------------------------

# The steps an enterprise hears about, in the order their templates are asked for (WeChat allows 3 a tap).
APPEAL_NOTICE_KINDS = ("appeal_accepted", "appeal_needs_info", "appeal_resolved")

@bp.post("/appeals")
@unblocked_user_required
@doc("提交诉求（可带 Idempotency-Key 请求头：同一用户同一键、同样内容返回同一条诉求，200 而非 201；同一键内容不同为 "
     "409 idempotency_key_reused，那条诉求已撤回后再用同一键也是 409（重新反映要换新键）；不带时，10 分钟内"
     "再次提交内容、联系人和电话都相同的诉求视为网络重试，同样返回已提交的那条，200）", body=SUBMIT_FIELDS,
     tags=["诉求"], responses={201: "{id, number, status, due_at, ...}", 403: "账号受限，不能进行这项操作（account_restricted）", 200: "同一 Idempotency-Key 或重试的已有诉求",
                              409: "同一 Idempotency-Key 已用于内容不同或已撤回的诉求（idempotency_key_reused）",
                              413: "照片过大", 422: "填写有误（类别不存在、电话格式、照片类型等）"},
     headers=(IDEMPOTENCY_HEADER,))
def submit():
    user_id = current_user_id()
    data = validate(json_body(max_bytes=intake.MAX_BODY_BYTES), SUBMIT_FIELDS)
    key = idempotency_key(IDEMPOTENCY_KEY_MAX)
    decoded = intake.decode_images(data["images"] or [])  # every photo checked before anything is stored
    # What this keyed request asks for: the same key with another body is a 409, not the first appeal again.
    digest = services.request_digest(data, [raw for raw, _ in decoded]) if key else None
    if key:
        with session_scope() as s:
            existing = services.keyed_appeal(s, user_id, key, digest)
            if existing is not None:  # the same answer as the first time (it may be the one that never arrived)
                return jsonify({**existing.to_public(), "subscribe": subscribe_request(list(APPEAL_NOTICE_KINDS))}), 200
    with intake.images_kept_if_committed(current_app.instance_path) as store, session_scope() as s:
        stored = store(decoded)
        appeal, created = services.submit_appeal(s, user_id, services.Intake(
            content=data["content"], contact_name=data["contact_name"], contact_phone=data["contact_phone"],
            category=data["category"], enterprise_id=data["enterprise_id"],
            enterprise_name=data["enterprise_name"] or "", building_id=data["building_id"], images=stored),
            idempotency_key=key, daily_limit=services.MAX_APPEALS_PER_DAY, retry_window=services.RETRY_WINDOW,
            digest=digest)
        body = appeal.to_public()
    if not created:  # the first submission's appeal, with its own photos: these copies are nobody's
        intake.remove_images(current_app.instance_path, stored)
    # The moment to ask for subscribe-message credit: the enterprise wants to hear how this ends.
    body["subscribe"] = subscribe_request(list(APPEAL_NOTICE_KINDS))
    return jsonify(body), 201 if created else 200


@bp.get("/appeals")
@user_required
@doc("我的诉求（只含本人提交的）", params=PAGE_FIELDS, tags=["诉求"], responses={200: "{items, total, ...}"})
def my_appeals():
    args = query(PAGE_FIELDS)
    with session_scope() as s:
        page = services.list_own(s, current_user_id(), **args)
        return jsonify(_page(page, [a.to_public() for a in page.items]))


@bp.get("/appeal-categories")
@doc("诉求类别（政府服务清单：类别、责任部门、承诺办结工作日）", auth="none", tags=["诉求"])
def public_categories():
    with session_scope() as s:
        return jsonify({"items": [c.to_public() for c in services.categories(s)]})


@bp.get("/appeals/<int:appeal_id>")
@user_required
@doc("诉求详情与办理进度（他人的诉求返回 404）", tags=["诉求"], responses={200: "诉求与公开时间线", 404: "不存在"})
def my_appeal(appeal_id: int):
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, _user())
        return jsonify(services.detail_for_user(s, appeal))


@bp.get("/appeals/<int:appeal_id>/images/<name>")
@user_required
@doc("诉求照片", tags=["诉求"], responses={200: "图片", 404: "不存在"})
def my_image(appeal_id: int, name: str):
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, _user())
        path, mimetype = intake.image_path(current_app.instance_path, appeal.images, name)
    return intake.send_photo(path, mimetype)


@bp.post("/appeals/<int:appeal_id>/withdraw")
@user_required
@doc("撤回诉求（办结后不能撤回）", body=WITHDRAW_FIELDS, tags=["诉求"], responses={200: "诉求", 409: "当前状态不能撤回"})
def withdraw(appeal_id: int):
    body = json_body()
    require_some(body, WITHDRAW_FIELDS)  # {"reson": ...} withdrew without the reason typed
    data = validate(body, WITHDRAW_FIELDS)
    with session_scope() as s:
        appeal = services.withdraw(s, current_user_id(), appeal_id, data["reason"] or "")
        return jsonify(appeal.to_public())


@bp.post("/appeals/<int:appeal_id>/supplement")
@unblocked_user_required
@doc("补充材料（工作人员要求补充时；10 分钟内再次提交同样的补充视为网络重试，返回诉求，不重复登记；"
     "与这条诉求已有照片完全相同的照片不重复保存，不计入 9 张）",
     body=SUPPLEMENT_FIELDS, tags=["诉求"], responses={200: "诉求", 403: "账号受限，不能进行这项操作（account_restricted）", 409: "不需要补充"})
def supplement(appeal_id: int):
    user_id = current_user_id()
    data = validate(json_body(max_bytes=intake.MAX_BODY_BYTES), SUPPLEMENT_FIELDS)
    decoded = intake.decode_images(data["images"] or [])
    with intake.images_kept_if_committed(current_app.instance_path) as store, session_scope() as s:
        have = services.get_appeal(s, appeal_id, Actor("user", user_id)).images  # 404 before any file is written
        # A photo the appeal already has (sent again with the supplement) is not stored, nor counted, twice.
        stored = store(intake.distinct_photos(decoded, intake.stored_keys(current_app.instance_path, have)))
        appeal = services.supplement(s, user_id, appeal_id, data["content"], stored,
                                     retry_window=services.RETRY_WINDOW)
        body = appeal.to_public()
        taken = {img.get("name") for img in appeal.images or []}
    # A retry of a supplement already taken: the appeal has the first copies of its photos, these are nobody's.
    intake.remove_images(current_app.instance_path, [img for img in stored if img["name"] not in taken])
    return jsonify(body)


@bp.post("/appeals/<int:appeal_id>/rating")
@unblocked_user_required
@doc("评价（每轮办结一次；选“未解决”将重新办理）", body=RATING_FIELDS, tags=["诉求"],
     responses={201: "评价", 403: "账号受限，不能进行这项操作（account_restricted）", 409: "未办结 / 已评价 / 超过评价期限"})
def rate(appeal_id: int):
    data = parse(RATING_FIELDS)
    with session_scope() as s:
        rating = services.rate(s, current_user_id(), appeal_id, resolved=data["resolved"],
                               satisfaction=data["satisfaction"], comment=data["comment"] or "")
        return jsonify(rating.to_dict()), 201


@bp.post("/appeals/<int:appeal_id>/escalate")
@unblocked_user_required
@doc("反映“办不成事”（重复提交不会重复登记）", body=ESCALATE_FIELDS, tags=["诉求"],
     responses={200: "诉求（escalated=true）", 403: "账号受限，不能进行这项操作（account_restricted）", 409: "已关闭的诉求"})
def escalate(appeal_id: int):
    body = json_body()
    require_some(body, ESCALATE_FIELDS)  # {"reasons": ...} escalated without the words typed
    data = validate(body, ESCALATE_FIELDS)
    with session_scope() as s:
        appeal, _ = services.escalate_by_user(s, current_user_id(), appeal_id, data["reason"] or "")
        return jsonify(appeal.to_public())


# --- staff ---------------------------------------------------------------------------------------

@bp.get("/staff/appeals")
@staff_api_required(StaffRole.DEPT)
@doc("诉求队列（部门账号只看本部门）", params=STAFF_FILTERS, auth="staff", tags=["诉求"])
def staff_list():
    args = query(STAFF_FILTERS)
    with session_scope() as s:
        page = services.list_for_staff(s, current_actor(), **args)
        return jsonify(_page(page, [a.to_staff() for a in page.items]))


@bp.get("/staff/appeals/<int:appeal_id>")
@staff_api_required(StaffRole.DEPT)
@doc("诉求详情（时间线、会办任务、退单、延期、评价、相似诉求）", auth="staff", tags=["诉求"])
def staff_detail(appeal_id: int):
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, current_actor())
        return jsonify(services.detail_for_staff(s, appeal, current_actor()))


@bp.post("/staff/appeals/<int:appeal_id>/actions")
@staff_api_required(StaffRole.DEPT)
@doc("对诉求执行操作：" + "、".join(f"{k}（{v[2]}）" for k, v in services.ACTIONS.items()), body=ACTION_FIELDS,
     auth="staff", tags=["诉求"], responses={200: "诉求详情", 403: "无权限", 404: "不存在", 409: "当前状态不允许",
                                           422: "填写有误"})
def staff_action(appeal_id: int):
    data = parse(ACTION_FIELDS)
    with session_scope() as s:
        appeal = services.perform(s, current_actor(), appeal_id, data.pop("action"), data)
        return jsonify(services.detail_for_staff(s, appeal, current_actor()))


@bp.get("/staff/appeals/<int:appeal_id>/images/<name>")
@staff_api_required(StaffRole.DEPT)
@doc("诉求照片", auth="staff", tags=["诉求"])
def staff_image(appeal_id: int, name: str):
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, current_actor())
        path, mimetype = intake.image_path(current_app.instance_path, appeal.images, name)
    return intake.send_photo(path, mimetype)


@bp.get("/staff/appeal-categories")
@staff_api_required(StaffRole.DEPT)
@doc("政府服务清单（含停用的类别和关键词）", auth="staff", tags=["诉求"])
def staff_categories():
    with session_scope() as s:
        return jsonify({"items": [c.to_dict() for c in services.categories(s, active_only=False)]})


@bp.post("/staff/appeal-categories")
@staff_api_required(StaffRole.ADMIN)
@doc("新增诉求类别", body=CATEGORY_FIELDS, auth="staff", tags=["诉求"], responses={201: "类别", 409: "重复"})
def create_category():
    data = parse(CATEGORY_FIELDS)
    missing = {f: "必填" for f in ("code", "name", "department") if not data.get(f)}
    if missing:
        raise ValidationError("请填写代码、名称和责任部门。", fields=missing)
    with session_scope() as s:
        return jsonify(services.save_category(s, current_actor(), data).to_dict()), 201


@bp.patch("/staff/appeal-categories/<int:category_id>")
@staff_api_required(StaffRole.ADMIN)
@doc("修改诉求类别", body=CATEGORY_FIELDS, auth="staff", tags=["诉求"])
def update_category(category_id: int):
    body = json_body()
    require_some(body, CATEGORY_FIELDS)  # {"nmae": ...} alone answered 200 with nothing changed
    data = validate(body, CATEGORY_FIELDS, partial=True)
    data.pop("code", None)
    with session_scope() as s:
        return jsonify(services.save_category(s, current_actor(), data, category_id).to_dict())


@bp.get("/staff/appeal-holidays")
@staff_api_required(StaffRole.DEPT)
@doc("节假日 / 调休表（覆盖内置日历）", auth="staff", tags=["诉求"])
def holidays():
    with session_scope() as s:
        rows = s.scalars(select(Holiday).order_by(Holiday.day))
        return jsonify({"items": [h.to_dict() for h in rows]})


@bp.post("/staff/appeal-holidays")
@staff_api_required(StaffRole.STAFF)
@doc("设置某天为节假日或调休上班日", body=HOLIDAY_FIELDS, auth="staff", tags=["诉求"])
def set_holiday():
    data = parse(HOLIDAY_FIELDS)
    with session_scope() as s:
        return jsonify(services.set_holiday(s, current_actor(), data["day"], data["is_workday"],
                                            data["name"] or "").to_dict())


@bp.get("/staff/appeals/metrics")
@staff_api_required(StaffRole.DEPT)
@doc("诉求指标：响应率、按时办结率、诉求解决率（目标 ≥ 90%）、满意率、各部门退单数（定义见 docs/appeals.md）。"
     "统计区间含 from、不含 to；to 只写日期时含当天（to=2025-10-31 统计到 11 月 1 日 0 点）",
     params=METRIC_FIELDS, auth="staff", tags=["诉求"])
def metrics():
    args = query(METRIC_FIELDS)
    if _date_only(request.args.get("to", "")):
        args["to"] += timedelta(days=1)
    if args["from"] >= args["to"]:  # an empty or backwards period would answer with rates of nothing
        raise ValidationError("开始时间应早于结束时间。", fields={"to": "应晚于开始时间"})
    with session_scope() as s:
        return jsonify(appeal_metrics.compute(s, args["from"], args["to"], current_actor()).as_dict())


@bp.get("/staff/reports/weekly")
@staff_api_required(StaffRole.DEPT)
@doc("诉求周报（上海时间 ISO 周，如 2025-W40；format=xlsx 下载 Excel；还没有开始的周为 422）。"
     f"overdue 列出超期最久的 {reports.OVERDUE_SHOWN} 件当前超期在办诉求，overdue_total 为全部件数；"
     "appeals 为本周新增诉求，按编号分页（page、per_page，每页默认 20 条、最多 100 条），appeals_total 为全部件数"
     "（Excel 列出全部，不分页）",
     params=WEEK_FIELDS + PAGE_FIELDS, auth="staff", tags=["诉求"],
     responses={200: "{week, start, end, scope, metrics, totals, by_category, by_department, by_status, by_building, "
                     "appeals（本周新增诉求的这一页）, appeals_total（本周新增共几件）, page, per_page, pages, "
                     f"overdue（超期最久的前 {reports.OVERDUE_SHOWN} 件）, overdue_total（超期在办共几件）}}",
                422: "周次格式不对，或这一周还没有开始；页码不是正整数、每页条数超过 100"})
def weekly():
    reports.check_typed_week(request.args.get("week"))
    args = query(WEEK_FIELDS + PAGE_FIELDS)
    with session_scope() as s:
        if args["format"] == "xlsx":
            # every appeal of the week and every overdue one, the week's read a thousand at a time as they are written
            report = reports.weekly(s, args["week"], current_actor(), stream=True)
            audit(s, current_actor(), "appeal.weekly_exported", None, week=report["week"])
            return _xlsx(reports.weekly_xlsx(report), f"appeals-weekly-{report['week']}.xlsx")
        # The JSON lists the most overdue few, as the console page does (a busy street had about 3,300 overdue
        # appeals, every one in the answer), and the week's appeals a page at a time (thousands in a busy week).
        report = reports.weekly(s, args["week"], current_actor(), overdue_limit=reports.OVERDUE_SHOWN,
                                page=args["page"], per_page=args["per_page"])
    return jsonify(report)


STORED_FORMAT = (Field("format", "enum", "格式", choices=("json", "xlsx"), default="json"),)


@bp.get("/staff/reports/weekly/stored")
@staff_api_required(StaffRole.DEPT)
@doc("存档的诉求周报列表（每周一生成上一周的并存档；新的周在前）：每周的生成时间和主要数字。"
     "部门账号只看到本部门承办的诉求数，不含全中心的比率和在办数（open_now、resolution 为 null）",
     params=PAGE_FIELDS, auth="staff", tags=["诉求"],
     responses={200: "{items: [{week, generated_at, submitted, escalated, open_now, overdue_now, resolution}], "
                     "total, page, per_page, pages}"})
def stored_weeklies():
    args = query(PAGE_FIELDS)
    with session_scope() as s:
        page = reports.stored_weeklies(s, args["page"], args["per_page"], current_actor())
    return jsonify(page_json(page.items, page.total, page.page, page.per_page))


@bp.get("/staff/reports/weekly/stored/<week>")
@staff_api_required(StaffRole.DEPT)
@doc("一份存档的诉求周报，保持生成时的数据（generated_at、generated_text 说明生成时间；与实时的周报可能不同）；"
     "format=xlsx 下载 Excel（列出全部，不分页）。部门账号只看到本部门承办的诉求，metrics 为 null。"
     "appeals 与实时的周报一样按编号分页（page、per_page，每页默认 20 条、最多 100 条），appeals_total 为全部件数",
     params=STORED_FORMAT + PAGE_FIELDS, auth="staff", tags=["诉求"],
     responses={200: "与 /staff/reports/weekly 相同的字段（appeals 为这一页，appeals_total、page、per_page、pages；"
                     f"overdue 为超期最久的前 {reports.OVERDUE_SHOWN} 件，overdue_total 为全部件数），"
                     "另有 generated_at、generated_text、scope、returns_by_department",
                404: "这一周没有存档的周报", 422: "周次格式不对，或这一周还没有开始；页码不是正整数、每页条数超过 100"})
def stored_weekly(week: str):
    args = query(STORED_FORMAT + PAGE_FIELDS)
    with session_scope() as s:
        if args["format"] == "xlsx":
            report = reports.stored_weekly(s, week, current_actor())  # every row of it
            audit(s, current_actor(), "appeal.weekly_exported", None, week=report["week"], stored=True)
        else:
            # A page of its appeals and its most overdue few, as the live JSON lists them: a busy week's report
            # holds thousands of each (megabytes), every one was in the answer.
            report = reports.stored_weekly(s, week, current_actor(), page=args["page"], per_page=args["per_page"])
    if args["format"] == "xlsx":
        return _xlsx(reports.weekly_xlsx(report), f"appeals-weekly-{report['week']}-stored.xlsx")
    return jsonify(report)


@bp.get("/staff/reports/enterprise-issues")
@staff_api_required(StaffRole.DEPT)
@doc("企业问题清单（按企业列出诉求：在办的在前，超期最久的在前，其后是已结束的，最近的在前；企业按名称排序，"
     "分页：page、per_page 按企业分页，total 为企业数；每家企业最多列出 "
     f"{reports.ISSUES_SHOWN} 件，open、total 为全部件数，appeals_query 为在 /staff/appeals 查看这家企业全部诉求的筛选条件；"
     "enterprise_id 只看一家企业；format=xlsx 下载全部企业全部诉求的 Excel，不分页）",
     params=ISSUES_FIELDS + PAGE_FIELDS, auth="staff", tags=["诉求"],
     responses={200: "{enterprises: [{enterprise, enterprise_id, open, total, appeals（最多 "
                     f"{reports.ISSUES_SHOWN} 件）, appeals_query}}], total, page, per_page, pages}}",
                422: "参数有误（如页码不是正整数、每页条数超过 100）"})
def enterprise_issues():
    # Paged by enterprise: the whole list (every appeal ever filed) was about 20 MB for 50,000 appeals. The old
    # answer's `enterprises` is still there; a caller that wants the other enterprises reads pages.
    args = query(ISSUES_FIELDS + PAGE_FIELDS)
    with session_scope() as s:
        if args["format"] == "xlsx":
            audit(s, current_actor(), "appeal.issues_exported", None, enterprise_id=args["enterprise_id"])
            # every enterprise, read a few hundred at a time into a write-only workbook
            data = reports.issues_xlsx({"enterprises": reports.iter_enterprise_issues(
                s, args["enterprise_id"], current_actor())})
            return _xlsx(data, "enterprise-issues.xlsx")
        report = reports.enterprise_issues(s, args["enterprise_id"], current_actor(), page=args["page"],
                                           per_page=args["per_page"])
    return jsonify(report)


def _xlsx(data: bytes, filename: str) -> Response:
    resp = Response(data, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


# --- registration ------------------------------------------------------------------------------------

# What `appeals tick` did, as the operator reads it (the keys of jobs.tick's report).
TICK_LABELS = {"warned": "临期提醒", "overdue": "新超期", "urged": "催办", "escalated": "转办不成事",
               "closed": "评价期满关闭", "reports": "生成周报", "escalation_overdue": "办不成事超期",
               "tasks_overdue": "会办/整改任务超期", "info_reminded": "补充材料提醒", "info_resumed": "补充材料恢复计时",
               "photos": "重取聊天照片"}


def register(app: Flask) -> None:
    """Called by create_app: the API, the console pages, the CLI group and the init-db hook."""
    import click
    from flask.cli import AppGroup

    from .. import cli
    from . import console as appeals_console

    app.register_blueprint(bp)
    app.register_blueprint(appeals_console.bp)

    group = AppGroup("appeals", help="诉求：SLA 定时检查、周报。")

    @group.command("tick")
    def tick_cmd() -> None:
        """运行一次诉求时限检查（超期提醒、自动升级；可重复运行）。"""
        from .jobs import tick

        cli.require_current_schema()
        done = tick()
        click.echo("诉求定时检查完成：" + "，".join(f"{TICK_LABELS.get(k, k)} {v}" for k, v in done.items()))

    @group.command("weekly")
    @click.option("--week", default=None, help="如 2025-W40；默认上周")
    def weekly_cmd(week: str | None) -> None:
        """生成诉求周报（可重复运行）。"""
        cli.require_current_schema()
        try:
            with session_scope() as s:
                row, created = reports.prepare_weekly(s, week, via="cli")
                label = row.week
        except AppError as exc:  # a mistyped --week: the message, not a traceback
            raise click.ClickException(exc.message) from None
        click.echo(f"{label} 周报{'已生成' if created else '已存在'}。")

    app.cli.add_command(group)

    # Every worker's beat runs the SLA tick every 5 minutes, once per slot across the cluster.
    from ..periodic import register_periodic

    register_periodic("appeals_tick", 300, "wxapp_backend.appeals.jobs.tick")

    def _seed() -> None:
        with session_scope() as s:
            services.ensure_catalogue(s)

    if _seed.__qualname__ not in [getattr(h, "__qualname__", "") for h in cli.AFTER_INIT_DB]:
        cli.AFTER_INIT_DB.append(_seed)
