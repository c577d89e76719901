"""Notification kinds -> subscribe-message template and field mapping, as configuration.

Defaults live in `DEFAULT_KINDS` below, with placeholder template ids (``PLACEHOLDER-...``) that WeChat
will refuse; a deployment names its real templates in a YAML or JSON file given by ``NOTIFY_TEMPLATES``
(setting `notify_templates_path`). The file maps kind names to entries; an entry replaces only the keys it
gives, and new kinds may be added::

    appeal_accepted:
      template_id: "x9bVqPz7N0..."   # 小程序后台 > 订阅消息 > 我的模板; "" turns subscribe messages off
      page: pages/appeal/detail      # optional: page opened from the message when notify() gives none
      long_term: false               # optional: long-term subscription (public-service categories only)
      fields:                        # template key: notify() field name (replaces the default mapping)
        thing1: title
        phrase2: status
        time3: time
      defaults:                      # optional: template key: value used when notify() gave no such field
        phrase2: 已受理
      fallback: notice               # optional: kind whose template to use while this one has none configured

A kind with a ``fallback`` (by default: ``activity_changed`` -> ``notice``) whose template the file never
names (it is still the placeholder default) takes its fallback's template, fields, defaults and long_term once
the file configures the fallback (a real id, or "" for off): a deployment that has not yet applied for a
template of its own for 活动调整 keeps sending it with the generic notice template, as before that kind existed.

How a message's data is made from a notification (`render`): for each template key, the notify() field
named by the mapping (``title`` and ``body`` default to the inbox title and body), else the template key
itself as a field name, else the entry's default, else -- for ``time``/``date`` keys -- the time the
notification was made. ISO datetimes given for ``time``/``date`` keys become ``2025年10月16日 14:30``
(Shanghai). ``thing`` values are shortened to 20 characters with "…"; the result is then validated
(`wechat.templates.validate`), so a bad value fails here, not as a 47003 from WeChat.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..wechat.templates import (
    LOCAL_TZ,
    TYPE_LABELS,
    TemplateFieldError,
    field_type,
    fit,
    format_date,
    format_time,
    validate,
)

log = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "PLACEHOLDER-"


@dataclass(frozen=True)
class Kind:
    """One kind of notification and the subscribe-message template that carries it."""

    name: str
    template_id: str
    fields: dict[str, str]  # template key -> notify() field name
    defaults: dict[str, str] = field(default_factory=dict)  # template key -> value when the field is absent
    page: str = ""
    long_term: bool = False
    fallback: str = ""  # kind whose template stands in while this one's is not configured


_APPEAL_FIELDS = {"character_string1": "number", "thing2": "title", "phrase3": "status", "time4": "time",
                  "thing5": "note"}
_REGISTRATION_FIELDS = {"thing1": "title", "phrase2": "result", "time3": "time", "thing4": "note"}


def _appeal(name: str, status: str, note: str) -> Kind:
    return Kind(name, PLACEHOLDER_PREFIX + "appeal-progress", dict(_APPEAL_FIELDS),
                {"phrase3": status, "thing5": note}, "pages/appeals/detail")


def _registration(name: str, result: str, note: str) -> Kind:
    return Kind(name, PLACEHOLDER_PREFIX + "registration-result", dict(_REGISTRATION_FIELDS),
                {"phrase2": result, "thing4": note}, "pages/activity/detail")


DEFAULT_KINDS: dict[str, Kind] = {k.name: k for k in (
    _appeal("appeal_accepted", "已受理", "我们已受理您的诉求"),
    _appeal("appeal_needs_info", "待补充", "请补充诉求材料"),
    _appeal("appeal_resolved", "已办结", "请查看办理结果并评价"),
    _appeal("appeal_closed", "已关闭", "诉求已关闭"),
    _appeal("appeal_escalated", "已升级", "已提交上级协调办理"),
    _appeal("appeal_merged", "已合并", "与同一问题合并办理"),
    _appeal("appeal_split", "单独办理", "已取消合并，单独办理"),
    _appeal("appeal_extended", "已延期", "办理期限已延长"),
    # To staff (their WeChat-linked user): an appeal they handle (their department's, or theirs as 承办人) is given to
    # them (交办, 改派承办人), due soon, overdue, urged (催办) or pressed by the enterprise; a 会办 task is given to them,
    # or a 会办 task of theirs or a 办不成事 is past its deadline; the centre answered their 退单 / 延期 (and the centre
    # hears of those requests); one not yet accepted is due soon, overdue or pressed (to the centre's staff).
    _appeal("appeal_staff_alert", "待处理", "请登录工作台查看"),
    Kind("activity_reminder", PLACEHOLDER_PREFIX + "activity-reminder",
         {"thing1": "title", "time2": "time", "thing3": "place", "thing4": "note"},
         {"thing3": "详见活动页面", "thing4": "请准时参加"}, "pages/activity/detail"),
    _registration("waitlist_promoted", "候补成功", "您已从候补转为正式报名"),
    _registration("registration_approved", "报名成功", "期待您的参加"),
    _registration("registration_rejected", "未通过", "报名未通过审核"),
    _registration("registration_cancelled", "已取消", "您的报名已取消"),
    Kind("notice", PLACEHOLDER_PREFIX + "notice", {"thing1": "title", "time2": "time", "thing3": "note"},
         {"thing3": "点击查看详情"}, "pages/notice/detail"),
    # 活动调整: a published activity's time or place changed (to its registrants). notify() gives "activity" (the
    # activity's name), "title" ("活动调整：<name>", what the notice template shows), "time" (the new start),
    # "place" and "note".
    Kind("activity_changed", PLACEHOLDER_PREFIX + "activity-changed",
         {"thing1": "activity", "time2": "time", "thing3": "place", "thing4": "note"},
         {"thing3": "详见活动页面", "thing4": "时间或地点有调整"}, "pages/activity/detail", fallback="notice"),
    Kind("binding_result", PLACEHOLDER_PREFIX + "binding-result", dict(_REGISTRATION_FIELDS),
         {"phrase2": "已处理", "thing4": "企业身份核实结果"}, "pages/me/index"),
)}

_ENTRY_KEYS = {"template_id", "page", "long_term", "fields", "defaults", "fallback"}


def _str_map(name: str, key: str, value: Any, *, template_keys: bool) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                              for k, v in value.items()):
        raise ConfigError(f"notify templates: {name}.{key} must map names to text")
    if template_keys:
        bad = [k for k in value if field_type(k) not in TYPE_LABELS]
        if bad:
            raise ConfigError(f"notify templates: {name}.{key}: {bad[0]!r} is not a template key like thing1")
    return {k: str(v) for k, v in value.items()}


def parse_kinds(raw: Any, base: Mapping[str, Kind] = DEFAULT_KINDS) -> dict[str, Kind]:
    """Merge a loaded file's content over `base`; ConfigError names the first mistake."""
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise ConfigError("notify templates: the file must map kind names to entries")
    out = dict(base)
    for name, entry in raw.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise ConfigError(f"notify templates: entry {name!r} must be a mapping")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ConfigError(f"notify templates: {name} has unknown keys {sorted(unknown)}")
        kind = out.get(name) or Kind(name, "", {})
        changes: dict[str, Any] = {}
        if "template_id" in entry:
            tid = entry["template_id"]
            if not isinstance(tid, str) or len(tid) > 64:
                raise ConfigError(f"notify templates: {name}.template_id must be text of at most 64 characters")
            changes["template_id"] = tid.strip()
        if "page" in entry:
            if not isinstance(entry["page"], str):
                raise ConfigError(f"notify templates: {name}.page must be text")
            changes["page"] = entry["page"].strip()
        if "long_term" in entry:
            if not isinstance(entry["long_term"], bool):
                raise ConfigError(f"notify templates: {name}.long_term must be true or false")
            changes["long_term"] = entry["long_term"]
        if "fields" in entry:
            changes["fields"] = _str_map(name, "fields", entry["fields"], template_keys=True)
        if "defaults" in entry:
            changes["defaults"] = _str_map(name, "defaults", entry["defaults"], template_keys=True)
        if "fallback" in entry:
            if not isinstance(entry["fallback"], str):
                raise ConfigError(f"notify templates: {name}.fallback must be the name of another kind")
            changes["fallback"] = entry["fallback"].strip()
        kind = replace(kind, **changes)
        if kind.template_id and not kind.fields:
            raise ConfigError(f"notify templates: {name} has a template_id but no fields")
        out[name] = kind
    out = _resolve_fallbacks(out)
    long_term: dict[str, bool] = {}
    for kind in out.values():  # one template is either long-term or one-time, whatever kind uses it
        if kind.template_id and long_term.setdefault(kind.template_id, kind.long_term) != kind.long_term:
            raise ConfigError(f"notify templates: template {kind.template_id} is long_term for one kind only")
    return out


def _resolve_fallbacks(kinds: dict[str, Kind]) -> dict[str, Kind]:
    """A kind whose template is still the placeholder default takes its fallback's, when that one is configured."""
    out = dict(kinds)
    for name, kind in kinds.items():
        if not kind.fallback:
            continue
        if kind.fallback == name or kind.fallback not in kinds:
            raise ConfigError(f"notify templates: {name}.fallback names no other kind ({kind.fallback!r})")
        fb = kinds[kind.fallback]
        if kind.template_id.startswith(PLACEHOLDER_PREFIX) and not fb.template_id.startswith(PLACEHOLDER_PREFIX):
            out[name] = replace(kind, template_id=fb.template_id, fields=dict(fb.fields), defaults=dict(fb.defaults),
                                long_term=fb.long_term)
    return out


def load_kinds(path: str | os.PathLike[str] | None) -> dict[str, Kind]:
    """The defaults, overridden by the YAML (.yaml/.yml) or JSON file at `path` when given."""
    if not path:
        return dict(DEFAULT_KINDS)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"notify templates: cannot read {p}: {exc.strerror}") from None
    import yaml

    try:
        raw = yaml.safe_load(text) if p.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"notify templates: {p} is not valid: {exc}") from None
    return parse_kinds(raw)


_cache: dict[str, tuple[float, dict[str, Kind]]] = {}
_cache_lock = threading.Lock()


def current_kinds() -> dict[str, Kind]:
    """The kinds of the current application (the file is re-read when it changes)."""
    from flask import current_app

    settings = current_app.extensions["wxapp"].settings
    path = settings.notify_templates_path
    mtime = os.stat(path).st_mtime if path and os.path.exists(path) else 0.0
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    try:
        kinds = load_kinds(path)
    except ConfigError:
        if hit is None:
            raise
        # The file was changed into one that cannot be used: keep the kinds read last, say so, and try again
        # on the next change. Every notification, and the subscribe-credits page, failed with a 500.
        log.error("NOTIFY_TEMPLATES: the changed file cannot be used; keeping the templates read before",
                  exc_info=True)
        with _cache_lock:
            _cache[path] = (mtime, hit[1])
        return hit[1]
    if not settings.env == "testing" and any(k.template_id.startswith(PLACEHOLDER_PREFIX) for k in kinds.values()):
        log.warning("notification kinds still use placeholder template ids; set NOTIFY_TEMPLATES")
    with _cache_lock:
        _cache[path] = (mtime, kinds)
    return kinds


def get_kind(name: str) -> Kind | None:
    return current_kinds().get(name)


def long_term_templates() -> dict[str, bool]:
    """Every configured template id -> whether it is a long-term subscription."""
    return {k.template_id: k.long_term for k in current_kinds().values() if k.template_id}


def _as_template_time(kind_name: str, value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value
    if kind_name == "date" and len(value.strip()) == 10:
        return format_date(date.fromisoformat(value.strip()))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=LOCAL_TZ)  # the centre's local time, as in validation.py
    return format_date(parsed) if kind_name == "date" else format_time(parsed)


def render(kind: Kind, fields: Mapping[str, Any], *, title: str = "", body: str = "",
           created_at: datetime | None = None) -> dict[str, str]:
    """The subscribe-message data for one notification, fitted and validated (TemplateFieldError)."""
    context = {"title": title, "body": body, **{k: str(v) for k, v in fields.items() if v is not None}}
    data: dict[str, str] = {}
    for key, source in kind.fields.items():
        value = context.get(source) or context.get(key) or kind.defaults.get(key, "")
        ftype = field_type(key)
        if ftype in ("time", "date"):
            if not value and created_at is not None:
                value = format_date(created_at) if ftype == "date" else format_time(created_at)
            value = _as_template_time(ftype, value)
        if not value:
            raise TemplateFieldError(key, f"缺少取值（通知字段 {source}）")
        data[key] = value
    return validate(fit(data))


def subscribe_request(kind_names: list[str], limit: int = 3) -> dict[str, list[str]]:
    """What the mini-program should pass to wx.requestSubscribeMessage (which takes at most 3 templates)."""
    template_ids: list[str] = []
    for name in kind_names:
        kind = get_kind(name)
        if kind is not None and kind.template_id and kind.template_id not in template_ids:
            template_ids.append(kind.template_id)
    return {"kinds": list(kind_names), "template_ids": template_ids[:limit]}
