"""Console page for the audit log (admins only, read-only): newest first, filtered and paginated."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template, request

from ..audit import AuditLog, search_audit
from ..auth import services as auth_services
from ..auth.guard import console_required
from ..auth.models import StaffRole
from ..db import session_scope
from ..errors import ValidationError
from ..validation import Field, validate
from . import add_nav, without_refused_filters

bp = Blueprint("audit_console", __name__, url_prefix="/console")

SHANGHAI = ZoneInfo("Asia/Shanghai")
PER_PAGE = 50
ACTOR_TYPES = {"staff": "工作人员", "user": "用户", "system": "系统"}
# Object types (the tables' names) as staff call them.
TARGET_LABELS = {
    "appeals": "诉求", "appeal_categories": "诉求类别", "appeal_holidays": "节假日", "activities": "活动",
    "registrations": "报名", "buildings": "楼宇", "enterprises": "企业", "grids": "网格", "users": "用户",
    "staff_users": "工作人员账号", "kb_entries": "知识条目", "kb_unanswered": "未答问题", "notices": "通知",
    "wechat_custom_sends": "客服消息",
}
FILTERS = (
    Field("actor_type", "enum", "操作人类型", choices=tuple(ACTOR_TYPES), choice_names=ACTOR_TYPES),
    Field("actor_id", "str", "操作人编号", max_len=64),
    Field("username", "str", "工作人员用户名", max_len=64),
    Field("action", "str", "操作", max_len=64),
    Field("target_type", "enum", "对象类型", choices=tuple(TARGET_LABELS), choice_names=TARGET_LABELS),
    Field("target_id", "str", "对象编号", max_len=128),  # a knowledge-base entry id is up to 128
    Field("since", "date", "开始日期"),
    Field("until", "date", "结束日期"),
    Field("page", "int", "页码", min=1, max=100000, default=1),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)

# What each action code means, as staff say it. The code itself stays on the page (smaller, and as the cell's
# title) for the 操作 filter; a code not listed here is shown as it is.
ACTION_LABELS = {
    "activity.created": "新建活动", "activity.updated": "修改活动", "activity.registrations_exported": "导出报名名单",
    "appeal.issues_exported": "导出企业问题清单", "appeal.weekly_exported": "导出诉求周报", "appeal.weekly_report": "生成诉求周报",
    "appeal_category.saved": "保存诉求类别", "appeal_holiday.set": "设置节假日", "appeal_holiday.deleted": "删除节假日",
    "binding.requested": "申请绑定企业", "binding.verified": "通过企业绑定", "binding.rejected": "驳回企业绑定",
    "binding.withdrawn": "撤回绑定申请", "binding.ended": "解除企业绑定（本人）", "binding.revoked": "解除企业绑定",
    "binding.removed": "企业删除，绑定随之解除", "binding.merged": "合并企业，绑定随之转移",
    "building.created": "新建楼宇", "building.updated": "修改楼宇", "building.deleted": "删除楼宇",
    "building.merged": "合并重复楼宇",
    "buildings.imported": "导入楼宇", "demo.seeded": "生成演示数据",
    "enterprise.created": "新建企业", "enterprise.updated": "修改企业", "enterprise.deleted": "删除企业",
    "enterprise.merged": "合并企业", "enterprise.retired": "企业档案并入后留底", "enterprises.imported": "导入企业",
    "grid.created": "新建网格", "grid.updated": "修改网格", "grid.deleted": "删除网格", "job.requeued": "后台任务重新排队",
    "kb.entry_created": "新建知识条目", "kb.entry_updated": "修改知识条目", "kb.entry_retired": "下线知识条目",
    "kb.entry_restored": "恢复知识条目", "kb.imported": "导入知识库", "kb.phrasing_added": "添加相似问法",
    "kb.unanswered_ignored": "忽略未答问题", "kb.unanswered_resolved": "未答问题已处理",
    "kb.unanswered_reopened": "未答问题重新待处理",
    "notice.created": "新建通知", "notice.updated": "修改通知", "notice.published": "发布通知", "notice.resumed": "继续发送通知",
    "notice.finished": "通知发送完毕", "notice.stopped": "停止发送通知", "notice.send_halted": "微信拒收，其余停发", "notice.test_sent": "发送测试通知", "notice.test_recipient_set": "设置测试接收人",
    "notice.test_recipient_cleared": "取消测试接收人",
    "registration.created": "报名", "registration.checked_in": "签到", "registration.admitted_from_waitlist": "候补转正",
    "staff.created": "新建工作人员账号", "staff.updated": "修改工作人员账号", "staff.enabled": "启用工作人员账号",
    "staff.disabled": "停用工作人员账号", "staff.password_changed": "修改或重置密码",
    "staff.login": "工作人员登录", "staff.login_failed": "工作人员登录失败", "staff.login_locked": "登录失败过多，暂时锁定",
    "staff.logout": "工作人员退出登录",
    "staff.renamed": "工作人员账号改名",
    "subscriptions.set": "设置活动订阅", "user.created": "用户首次登录", "user.profile_updated": "修改个人资料",
    "user.linked": "关联公众号", "user.link_failed": "关联公众号未成功", "user.merged": "合并用户账号",
    "user.blocked": "屏蔽用户", "user.unblocked": "解除屏蔽用户",
    "wechat.kefu_lost": "客服消息未能送达", "wechat.qrcode_created": "生成公众号二维码",
}



def action_label(code: str) -> str:
    """The Chinese name of an audit action; codes made of a family and a step (appeal.assigned,
    registration.cancelled, enterprises.exported) are named from their family's own labels."""
    if code in ACTION_LABELS:
        return ACTION_LABELS[code]
    family, _, step = code.partition(".")
    if family == "appeal":
        from ..appeals.services import ACTIONS
        from ..appeals.states import EVENT_LABELS

        label = EVENT_LABELS.get(step) or (ACTIONS[step][2] if step in ACTIONS else None)
        return f"诉求：{label}" if label else code
    if family == "registration":
        from ..activities.models import STATUS_LABELS

        return f"报名状态改为「{STATUS_LABELS[step]}」" if step in STATUS_LABELS else code
    if step == "exported":
        from ..enterprises.importer import KINDS

        return f"导出{KINDS[family][0]}名单" if family in KINDS else code
    return code


def known_codes() -> dict[str, str]:
    """Every action code the code writes, with its Chinese name (and the names row_label gives a password change)."""
    from ..activities.models import STATUS_LABELS
    from ..appeals.services import ACTIONS
    from ..appeals.states import EVENT_LABELS
    from ..enterprises.importer import KINDS

    codes = [*ACTION_LABELS, *(f"appeal.{a}" for a in (*EVENT_LABELS, *ACTIONS)),
             *(f"registration.{s}" for s in STATUS_LABELS), *(f"{kind}.exported" for kind in KINDS)]
    named = {code: action_label(code) for code in codes}
    named["staff.password_changed"] += " 修改密码 重置密码"
    return named


def codes_named(words: str) -> list[str]:
    """The action codes whose Chinese name contains `words` (what staff read on the page, typed into 操作)."""
    return sorted(code for code, name in known_codes().items() if words in name)


def row_label(row: AuditLog) -> str:
    """The Chinese name of one audit row's action; staff.password_changed says whether the person changed their
    own password (修改密码) or an admin reset it (重置密码). A row from before `by` was recorded is told by
    whether the account changed itself."""
    if row.action == "staff.password_changed":
        by = (row.data or {}).get("by")
        if by is None:
            by = "self" if row.actor_type == "staff" and row.actor_id == row.target_id else "admin"
        return "修改密码" if by == "self" else "重置密码"
    return action_label(row.action)


def _filters() -> tuple[dict[str, Any], dict[str, str], str | None]:
    """The validated filters, the raw values to put back into the form, and the note on a 对象类型 left out."""
    raw = {k: v for k, v in request.args.items() if k in FILTER_NAMES and v.strip()}
    # 对象类型 is a select: a type it lacks comes from an old or edited link, and is left out with a note as on the
    # other list pages. What is typed into the boxes still comes back with its reason and no rows.
    _, note = without_refused_filters({k: v for k, v in raw.items() if k == "target_type"},
                                      lambda only: validate(only, [f for f in FILTERS if f.name == "target_type"]))
    if note:
        raw.pop("target_type")
    args = validate(raw, FILTERS)
    if args["since"] and args["until"] and args["since"] > args["until"]:
        raise ValidationError("填写的内容有误：开始日期不能晚于结束日期", fields={"since": "开始日期晚于结束日期"})
    return args, raw, note


def _shanghai_midnight(day) -> datetime:
    return datetime.combine(day, time.min, SHANGHAI)


def _pretty(data: Any) -> str:
    """The data column as indented JSON with Chinese left readable (the template escapes it)."""
    if not data:
        return ""
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)


def _when(value: datetime | None) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") if value else ""


@bp.get("/audit")
@console_required(StaffRole.ADMIN)
def audit_log():
    try:
        args, raw, note = _filters()
    except ValidationError as exc:
        # The form comes back with what was typed and the reason; no rows, rather than unfiltered ones.
        values = {k: v for k, v in request.args.items() if k in FILTER_NAMES}
        return render_template("console/audit.html", page=None, rows=[], values=values, link_args={}, staff_names={},
                               error=exc.message, actor_types=ACTOR_TYPES, target_types=TARGET_LABELS), 400
    query = dict(args)
    if query["action"] and not query["action"].isascii():
        # 操作 typed as the page names it (登录失败, 交办) rather than as a code: the actions of that name.
        query["actions"], query["action"] = codes_named(query["action"]) or [query["action"]], None
    query["since"] = _shanghai_midnight(args["since"]) if args["since"] else None
    query["until"] = _shanghai_midnight(args["until"] + timedelta(days=1)) if args["until"] else None
    with session_scope() as s:
        page = search_audit(s, per_page=PER_PAGE, **query)
        staff_names = {str(a.id): a.username for a in auth_services.list_staff(s)}
        rows = [{"row": r, "when": _when(r.created_at), "data": _pretty(r.data), "label": row_label(r),
                 "target": TARGET_LABELS.get(r.target_type, r.target_type)} for r in page.items]
    link_args = {k: v for k, v in raw.items() if k != "page"}
    return render_template("console/audit.html", page=page, rows=rows, values=raw, link_args=link_args,
                           staff_names=staff_names, error=None, actor_types=ACTOR_TYPES, target_types=TARGET_LABELS,
                           filter_error=note), 422 if note else 200


add_nav("audit_console.audit_log", "操作日志", StaffRole.ADMIN, "系统")
