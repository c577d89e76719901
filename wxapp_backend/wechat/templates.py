"""Subscribe-message field rules: check every value by its key's type before sending, so 47003 never surprises.

A template key names its type by prefix and a number: ``thing1`` is a ``thing``, ``time12`` a ``time``.
`validate()` raises `TemplateFieldError` (a ValueError, Chinese message naming the field) for the first bad
value; `fit()` shortens ``thing`` values to 20 characters with "…" for callers that prefer truncating.
The limits are those of WeChat's subscribe-message documentation (see /work/shared/WECHAT.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

__all__ = ["TYPE_LABELS", "TemplateFieldError", "field_type", "fit", "format_date", "format_time",
           "validate", "validate_value"]

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
ELLIPSIS = "…"

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_KEY_RE = re.compile(r"([a-z_]+?)(\d*)")

# 24-hour clock; dates as 2025年10月16日, 2025-10-16 or 2025/10/16. Digits are 0-9 only, here and in number and
# amount: Python's \d also takes the full-width "１２" a Chinese input method types (and other scripts' digits),
# which WeChat refuses (47003).
_DATE = r"(?P<y>[0-9]{4})(?:年(?P<m1>[0-9]{1,2})月(?P<d1>[0-9]{1,2})日|(?P<sep>[-/])(?P<m2>[0-9]{1,2})(?P=sep)(?P<d2>[0-9]{1,2}))"
_TIME = r"(?P<H>[01]?[0-9]|2[0-3]):(?P<M>[0-5][0-9])(?::(?P<S>[0-5][0-9]))?"
_DATE_POINT = re.compile(rf"{_DATE}(?:\s*{_TIME})?")
_TIME_POINT = re.compile(rf"(?:{_DATE}\s*)?{_TIME}")

TYPE_LABELS = {
    "thing": "事物", "number": "数字", "letter": "字母", "symbol": "符号", "character_string": "字符串",
    "time": "时间", "date": "日期", "amount": "金额", "phone_number": "电话", "car_number": "车牌",
    "name": "姓名", "phrase": "汉字",
}


class TemplateFieldError(ValueError):
    """A subscribe-message value WeChat would refuse (47003); `field` names the template key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"订阅消息字段 {field} {problem}")


def field_type(key: str) -> str:
    """The type of a template key: ``thing1`` -> ``thing``, ``character_string2`` -> ``character_string``."""
    m = _KEY_RE.fullmatch(key)
    return m.group(1) if m else ""


def _points(value: str) -> list[str]:
    # A range is two points joined by "~" (WeChat allows ranges for time and date).
    parts = [p.strip() for p in value.split("~")]
    return parts if 1 <= len(parts) <= 2 and all(parts) else []


def _real_date(m: re.Match[str]) -> bool:
    if not m.group("y"):
        return True
    month = m.group("m1") or m.group("m2")
    day = m.group("d1") or m.group("d2")
    try:
        date(int(m.group("y")), int(month), int(day))
    except ValueError:
        return False
    return True


def _check_datetime(value: str, pattern: re.Pattern[str]) -> str | None:
    points = _points(value)
    if not points:
        return "格式不对"
    for p in points:
        m = pattern.fullmatch(p)
        if m is None or not _real_date(m):
            return "应为 24 小时制，例如 2025年10月16日 14:30 或 2025-10-16 14:30"
    return None


def _thing(v: str) -> str | None:
    return f"不能超过 20 个字（现在 {len(v)} 个）" if len(v) > 20 else None


def _phrase(v: str) -> str | None:
    if len(v) > 5:
        return f"不能超过 5 个汉字（现在 {len(v)} 个）"
    return None if all(_CJK_RE.fullmatch(c) for c in v) else "只能是汉字"


def _character_string(v: str) -> str | None:
    if len(v) > 32:
        return f"不能超过 32 个字符（现在 {len(v)} 个）"
    return None if v.isascii() and v.isprintable() and " " not in v else "只能是字母、数字或符号"


def _number(v: str) -> str | None:
    if re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", v) is None:
        return "只能是数字（可带小数）"
    digits = sum(c.isdigit() for c in v)
    return f"不能超过 32 位数字（现在 {digits} 位）" if digits > 32 else None


def _letter(v: str) -> str | None:
    if not (v.isascii() and v.isalpha()):
        return "只能是字母"
    return f"不能超过 32 个字母（现在 {len(v)} 个）" if len(v) > 32 else None


def _symbol(v: str) -> str | None:
    if any(c.isalnum() or c.isspace() for c in v):
        return "只能是符号"
    return f"不能超过 5 个符号（现在 {len(v)} 个）" if len(v) > 5 else None


def _name(v: str) -> str | None:
    if _CJK_RE.search(v):
        # WeChat counts a name mixing 汉字 and letters as a Chinese name (10 characters at most).
        if not all(_CJK_RE.fullmatch(c) or c == "·" or (c.isascii() and c.isalpha()) for c in v):
            return "中文姓名只能是汉字或字母"
        return f"中文姓名不能超过 10 个字（现在 {len(v)} 个）" if len(v) > 10 else None
    if not v.isascii() or any(c.isdigit() for c in v):
        return "只能是汉字或字母"
    return f"英文姓名不能超过 20 个字母（现在 {len(v)} 个）" if len(v) > 20 else None


def _phone(v: str) -> str | None:
    # Digits and symbols (+86-021-..., (021)...); no letters, no blanks.
    if not (v.isascii() and all(c.isdigit() or (c.isprintable() and not c.isalnum() and not c.isspace())
                                for c in v)):
        return "只能是数字或符号（如 +、-、括号）"
    return f"不能超过 17 位（现在 {len(v)} 位）" if len(v) > 17 else None


def _car(v: str) -> str | None:
    if len(v) > 8:
        return f"不能超过 8 位（现在 {len(v)} 位）"
    middle_ok = all(c.isascii() and c.isalnum() for c in v[1:-1])
    ends_ok = all(c.isascii() and c.isalnum() or _CJK_RE.fullmatch(c) for c in (v[0], v[-1]))
    return None if middle_ok and ends_ok else "车牌号格式不对（首尾可为汉字，其余为字母或数字）"


def _amount(v: str) -> str | None:
    # One currency sign, at most 10 digits in all (decimals allowed), "元" at the end allowed.
    if re.fullmatch(r"[¥￥$]?[0-9]{1,10}(\.[0-9]{1,2})?元?", v) is None or sum(c.isdigit() for c in v) > 10:
        return "应为金额（不超过 10 位数字），例如 100、99.50 或 100元"
    return None


_RULES: dict[str, Callable[[str], str | None]] = {
    "thing": _thing,
    "phrase": _phrase,
    "character_string": _character_string,
    "number": _number,
    "letter": _letter,
    "symbol": _symbol,
    "name": _name,
    "phone_number": _phone,
    "car_number": _car,
    "amount": _amount,
    "time": lambda v: _check_datetime(v, _TIME_POINT),
    "date": lambda v: _check_datetime(v, _DATE_POINT),
}


def validate_value(key: str, value: object) -> str:
    """The value when WeChat would take it for `key`; raises TemplateFieldError otherwise."""
    kind = field_type(key)
    rule = _RULES.get(kind)
    if rule is None:
        raise TemplateFieldError(key, "的类型不认识（请核对模板字段名，如 thing1、time2）")
    if not isinstance(value, str):
        raise TemplateFieldError(key, "应为文字")
    if not value.strip():
        raise TemplateFieldError(key, "不能为空")
    problem = rule(value)
    if problem:
        raise TemplateFieldError(key, f"（{TYPE_LABELS[kind]}）{problem}：{value[:40]}")
    return value


def validate(data: Mapping[str, object]) -> dict[str, str]:
    """Check every value of a subscribe message's data; returns {key: value} or raises TemplateFieldError."""
    if not data:
        raise TemplateFieldError("data", "不能为空")
    return {key: validate_value(key, value) for key, value in data.items()}


def fit(data: Mapping[str, str]) -> dict[str, str]:
    """Shorten ``thing`` values to 20 characters (19 + "…") and strip blanks; other values are left alone."""
    out = {}
    for key, value in data.items():
        if isinstance(value, str):
            value = " ".join(value.split())
            if field_type(key) == "thing" and len(value) > 20:
                value = value[:19] + ELLIPSIS
        out[key] = value
    return out


def format_time(moment: datetime) -> str:
    """A datetime as a template ``time``: 2025年10月16日 14:30 in Shanghai time."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(LOCAL_TZ)
    return f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"


def format_date(day: date) -> str:
    """A date as a template ``date``: 2025年10月16日."""
    if isinstance(day, datetime) and day.tzinfo is not None:
        day = day.astimezone(LOCAL_TZ)
    return f"{day.year}年{day.month}月{day.day}日"
