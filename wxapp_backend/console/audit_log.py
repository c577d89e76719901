"""Console page for the audit log (admins only, read-only): newest first, filtered and paginated."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template, request

from ..audit import search_audit
from ..auth import services as auth_services
from ..auth.guard import console_required
from ..auth.models import StaffRole
from ..db import session_scope
from ..errors import ValidationError
from ..validation import Field, validate
from . import add_nav

bp = Blueprint("audit_console", __name__, url_prefix="/console")

SHANGHAI = ZoneInfo("Asia/Shanghai")
PER_PAGE = 50
ACTOR_TYPES = {"staff": "工作人员", "user": "用户", "system": "系统"}
FILTERS = (
    Field("actor_type", "enum", "操作人类型", choices=tuple(ACTOR_TYPES)),
    Field("actor_id", "str", "操作人编号", max_len=64),
    Field("username", "str", "工作人员用户名", max_len=64),
    Field("action", "str", "操作", max_len=64),
    Field("target_type", "str", "对象类型", max_len=40),
    Field("target_id", "str", "对象编号", max_len=128),  # a knowledge-base entry id is up to 128
    Field("since", "date", "开始日期"),
    Field("until", "date", "结束日期"),
    Field("page", "int", "页码", min=1, max=100000, default=1),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)


def _filters() -> tuple[dict[str, Any], dict[str, str]]:
    """The validated filters, and the raw values to put back into the form."""
    raw = {k: v for k, v in request.args.items() if k in FILTER_NAMES and v.strip()}
    args = validate(raw, FILTERS)
    if args["since"] and args["until"] and args["since"] > args["until"]:
        raise ValidationError("填写的内容有误：开始日期不能晚于结束日期", fields={"since": "开始日期晚于结束日期"})
    return args, raw


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
        args, raw = _filters()
    except ValidationError as exc:
        # The form comes back with what was typed and the reason; no rows, rather than unfiltered ones.
        values = {k: v for k, v in request.args.items() if k in FILTER_NAMES}
        return render_template("console/audit.html", page=None, rows=[], values=values, link_args={}, staff_names={},
                               error=exc.message, actor_types=ACTOR_TYPES), 400
    query = dict(args)
    query["since"] = _shanghai_midnight(args["since"]) if args["since"] else None
    query["until"] = _shanghai_midnight(args["until"] + timedelta(days=1)) if args["until"] else None
    with session_scope() as s:
        page = search_audit(s, per_page=PER_PAGE, **query)
        staff_names = {str(a.id): a.username for a in auth_services.list_staff(s)}
        rows = [{"row": r, "when": _when(r.created_at), "data": _pretty(r.data)} for r in page.items]
    link_args = {k: v for k, v in raw.items() if k != "page"}
    return render_template("console/audit.html", page=page, rows=rows, values=raw, link_args=link_args,
                           staff_names=staff_names, error=None, actor_types=ACTOR_TYPES)


add_nav("audit_console.audit_log", "操作日志", StaffRole.ADMIN, "系统")
