"""Mini-program JSON API for buildings (public list) and staff JSON API for enterprises."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..activities.services import roster_phone, sees_phones
from ..auth.blocking import BLOCK_FIELDS, UNBLOCK_FIELDS, set_blocked
from ..auth.guard import current_actor, staff_api_required
from ..auth.models import StaffRole
from ..db import session_scope
from ..http import PAGE_FIELDS, doc, json_body, parse, query
from ..validation import Field, require_some
from . import services

bp = Blueprint("enterprises_api", __name__, url_prefix="/api/v1")

BUILDING_FILTERS = (
    Field("q", "str", "楼宇名称或地址", max_len=100),
    Field("grid_id", "int", "网格", min=1),
)


def _page(page: services.Page, items: list[dict]) -> dict:
    return {"items": items, "total": page.total, "page": page.page, "per_page": page.per_page,
            "pages": page.pages}


@bp.get("/buildings")
@doc("楼宇列表（小程序选择所在楼宇用）", params=BUILDING_FILTERS[:1], auth="none", tags=["楼宇"],
     responses={200: "{items: [{id, name, address}]}"})
def public_buildings():
    args = query(BUILDING_FILTERS[:1])
    with session_scope() as s:
        items = [b.to_public() for b, _n in services.list_buildings(s, q=args["q"])]
    return jsonify({"items": items})


@bp.get("/staff/enterprises")
@staff_api_required(StaffRole.DEPT)
@doc("查询企业档案（名称/信用代码、楼宇、网格、行业、标签筛选，分页）", params=services.ENTERPRISE_FILTERS,
     auth="staff", tags=["企业"], responses={200: "{items, total, page, per_page, pages}"})
def list_enterprises():
    args = query(services.ENTERPRISE_FILTERS)
    with session_scope() as s:
        page = services.search_enterprises(s, **args)
        return jsonify(_page(page, [e.to_dict() for e in page.items]))


@bp.post("/staff/enterprises")
@staff_api_required(StaffRole.STAFF)
@doc("新建企业档案（统一社会信用代码校验且不可重复）", body=services.ENTERPRISE_FIELDS, auth="staff",
     tags=["企业"], responses={201: "企业档案", 409: "信用代码已登记", 422: "填写有误"})
def create_enterprise():
    data = json_body()  # the service validates, as for an edit (tags may come as one "a|b" text there too)
    with session_scope() as s:
        enterprise = services.create_enterprise(s, current_actor(), data)
        return jsonify(enterprise.to_dict()), 201


@bp.get("/staff/enterprises/<int:enterprise_id>")
@staff_api_required(StaffRole.DEPT)
@doc("企业档案详情", auth="staff", tags=["企业"], responses={200: "企业档案", 404: "不存在"})
def get_enterprise(enterprise_id: int):
    with session_scope() as s:
        enterprise = services.get_enterprise(s, enterprise_id)
        body = enterprise.to_dict()
        full = sees_phones(current_actor().role)  # a department reads 139****1111, as on a roster
        body["users"] = [{**u.to_dict(), "phone": roster_phone(u.phone, full)}
                         for u in services.bound_users(s, enterprise_id)]
        return jsonify(body)


@bp.patch("/staff/enterprises/<int:enterprise_id>")
@staff_api_required(StaffRole.STAFF)
@doc("修改企业档案（只改提交的字段；可选字段传 null 即清空）", body=services.ENTERPRISE_FIELDS, auth="staff", tags=["企业"],
     responses={200: "企业档案", 404: "不存在", 409: "信用代码已登记", 422: "填写有误"})
def update_enterprise(enterprise_id: int):
    data = json_body()  # the service validates; null must reach it to clear a field
    require_some(data, services.ENTERPRISE_FIELDS)  # {"nmae": ...} alone answered 200 with nothing changed
    with session_scope() as s:
        enterprise = services.update_enterprise(s, current_actor(), enterprise_id, data)
        return jsonify(enterprise.to_dict())


@bp.post("/staff/enterprises/<int:enterprise_id>/merge")
@staff_api_required(StaffRole.ADMIN)
@doc("把重复的企业档案（按档案编号或统一社会信用代码指定）合并到本档案：联系人、绑定申请、诉求和报名随之转移，"
     "重复档案停用留底", body=services.MERGE_FIELDS, auth="staff", tags=["企业"],
     responses={200: "保留的企业档案", 404: "不存在", 409: "档案已合并停用", 422: "不能合并（同一份档案、信用代码都有效且不同等）"})
def merge_enterprise(enterprise_id: int):
    data = parse(services.MERGE_FIELDS)
    with session_scope() as s:
        services.get_enterprise(s, enterprise_id)
        duplicate = services.find_enterprise(s, data["duplicate"], other_than=enterprise_id)
        kept = services.merge_enterprises(s, current_actor(), enterprise_id, duplicate.id)
        s.refresh(kept)
        return jsonify(kept.to_dict())


@bp.get("/staff/buildings")
@staff_api_required(StaffRole.DEPT)
@doc("楼宇档案列表（含所属网格和企业数；按名称排序，分页，与企业档案列表相同）", params=BUILDING_FILTERS + PAGE_FIELDS,
     auth="staff", tags=["楼宇"], responses={200: "{items, total, page, per_page, pages}"})
def list_buildings():
    # Paged as /staff/enterprises (a street has hundreds of buildings, all answered at once). The old answer was
    # {items} with every building: items is still there, and a caller that wants more pages reads pages.
    args = query(BUILDING_FILTERS + PAGE_FIELDS)
    with session_scope() as s:
        page = services.page_buildings(s, **args)
        return jsonify(_page(page, [{**b.to_dict(), "enterprise_count": n} for b, n in page.items]))


@bp.post("/staff/buildings")
@staff_api_required(StaffRole.STAFF)
@doc("新建楼宇档案（名称不可重复）", body=services.BUILDING_FIELDS, auth="staff", tags=["楼宇"],
     responses={201: "楼宇档案", 409: "名称已存在", 422: "填写有误"})
def create_building():
    data = parse(services.BUILDING_FIELDS)
    with session_scope() as s:
        building = services.create_building(s, current_actor(), data)
        return jsonify(building.to_dict()), 201


@bp.delete("/staff/buildings/<int:building_id>")
@staff_api_required(StaffRole.ADMIN)
@doc("删除楼宇档案（还登记着企业、有未关闭的诉求、是将要举办的活动地点或推送范围的楼宇不能删除，重复建档请合并）",
     auth="staff", tags=["楼宇"], responses={204: "已删除", 404: "不存在", 409: "楼宇还在使用，说明里写明是哪些"})
def delete_building(building_id: int):
    with session_scope() as s:
        services.delete_building(s, current_actor(), building_id)
    return "", 204


@bp.post("/staff/buildings/<int:building_id>/merge")
@staff_api_required(StaffRole.ADMIN)
@doc("把重复的楼宇档案（按编号或名称指定）合并到本楼宇：企业、用户、诉求、活动地点和推送范围随之转移，未办结的诉求转由本楼宇的"
     "网格办理，重复的楼宇档案删除；在其他网格的楼宇须传 confirm_grid=true", body=services.BUILDING_MERGE_FIELDS,
     auth="staff", tags=["楼宇"],
     responses={200: "保留的楼宇档案，merged 为合并的记录（counts 各类数量）", 404: "不存在",
                409: "两栋楼宇网格不同，未确认（error=grid_differs）", 422: "不能合并（同一栋楼宇等）"})
def merge_building(building_id: int):
    data = parse(services.BUILDING_MERGE_FIELDS)
    with session_scope() as s:
        services.get_building(s, building_id)
        duplicate = services.find_building(s, data["duplicate"], other_than=building_id)
        done = services.merge_buildings(s, current_actor(), building_id, duplicate.id,
                                        confirm_grid=data["confirm_grid"])
        kept = services.get_building(s, building_id)
        return jsonify({**kept.to_dict(), "merged": done})


@bp.get("/staff/grids")
@staff_api_required(StaffRole.DEPT)
@doc("网格列表（含楼宇数）", auth="staff", tags=["网格"])
def list_grids():
    with session_scope() as s:
        items = [{**g.to_dict(), "building_count": n} for g, n in services.list_grids(s)]
    return jsonify({"items": items})


@bp.get("/staff/users")
@staff_api_required(StaffRole.STAFF)  # as /console/users: every user's phone and binding, not a department's business
@doc("小程序用户列表（可按绑定状态筛选；待核实的按申请先后排列，并附申请时填写的企业名称；state=pending 也列出"
     "申请改绑的已核实联系人，其申请的企业在 pending_enterprise）",
     params=services.USER_FILTERS, auth="staff", tags=["用户"],
     responses={200: "{items: [{id, nickname, binding_state, enterprise, name_given, blocked, ...}], total, page, ...}"})
def list_users():
    args = query(services.USER_FILTERS)
    with session_scope() as s:
        page = services.list_users(s, **args)
        typed = services.names_given(s, page.items)
        return jsonify(_page(page, [_staff_view(u, name_given=typed.get(u.id)) for u in page.items]))


def _staff_view(user, **extra) -> dict:
    """A user as staff see them: to_dict() (what the user sees of themselves) and whether staff blocked them."""
    return {**user.to_dict(), **extra, "blocked": bool(user.blocked)}


@bp.post("/staff/users/<int:user_id>/binding")
@staff_api_required(StaffRole.STAFF)
@doc("核实或驳回用户的企业绑定申请", body=services.BINDING_FIELDS, auth="staff", tags=["用户"],
     responses={200: "用户", 404: "用户不存在", 409: "申请已处理，或用户已改为申请另一家企业"})
def decide_binding(user_id: int):
    data = parse(services.BINDING_FIELDS)
    with session_scope() as s:
        user = services.decide_binding(s, current_actor(), user_id, approve=data["approve"],
                                       enterprise_id=data["enterprise_id"], reason=data["reason"])
        s.flush()
        return jsonify(user.to_dict())


@bp.post("/staff/users/<int:user_id>/binding/revoke")
@staff_api_required(StaffRole.STAFF)
@doc("解除用户已核实的企业绑定（如企业来函说明已离职），须填写原因，本人会收到通知", body=services.REVOKE_FIELDS,
     auth="staff", tags=["用户"], responses={200: "用户", 404: "用户不存在", 409: "没有已核实的绑定", 422: "未填写原因"})
def revoke_binding(user_id: int):
    data = parse(services.REVOKE_FIELDS)
    with session_scope() as s:
        user = services.revoke_binding(s, current_actor(), user_id, reason=data["reason"])
        s.flush()
        return jsonify(user.to_dict())


# Staff, as in the console (/console/users/<id>/block): see the reasons there.
@bp.post("/staff/users/<int:user_id>/block")
@staff_api_required(StaffRole.STAFF)
@doc("屏蔽用户（骚扰、广告、刷屏等）：公众号和小程序里不再回复其消息，也不能再提交诉求、报名活动；已提交的诉求照常办理。"
     "须填写原因；同一 unionid 的另一个账号（尚未合并的公众号账号）一并屏蔽；即时生效", body=BLOCK_FIELDS,
     auth="staff", tags=["用户"],
     responses={200: "用户（blocked=true）", 404: "用户不存在", 409: "已经屏蔽（already_blocked）", 422: "未填写原因"})
def block_user(user_id: int):
    return _set_blocked(user_id, blocked=True)


@bp.post("/staff/users/<int:user_id>/unblock")
@staff_api_required(StaffRole.STAFF)
@doc("解除对用户的屏蔽（须填写原因；同一 unionid 的另一个账号一并解除；即时生效）", body=UNBLOCK_FIELDS, auth="staff",
     tags=["用户"], responses={200: "用户（blocked=false）", 404: "用户不存在", 409: "没有被屏蔽（not_blocked）",
                              422: "未填写原因"})
def unblock_user(user_id: int):
    return _set_blocked(user_id, blocked=False)


def _set_blocked(user_id: int, *, blocked: bool):
    data = parse(BLOCK_FIELDS if blocked else UNBLOCK_FIELDS)
    with session_scope() as s:
        user = set_blocked(s, current_actor(), user_id, blocked=blocked, reason=data["reason"])
        body = _staff_view(user)
    return jsonify(body)
