"""Declarative input validation with Chinese messages; the same fields describe the OpenAPI schemas."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from knowledge.text import strip_invisible

from .errors import ValidationError

# ASCII: \d alone also takes Arabic-Indic, Devanagari ... digits, which nobody can dial or search for.
PHONE_RE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8}(-\d{1,6})?)$", re.ASCII)
# A link in a chat text, as WeChat makes it clickable (up to a space or Chinese punctuation): a text cut to a length
# must not end inside one (it still opens, on a page that does not exist).
LINK_RE = re.compile(r"https?://[^\s，。；、！？（）“”《》<>\"'…]+", re.IGNORECASE)
# Control characters other than tab/newline never belong in user text.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def dialable(value: str) -> str:
    """A phone number as stored, from the ways people write one (NFKC-folded already): blanks left out, a mobile
    without its dashes or country code (“138-0013-8000”, “+86 138 0013 8000” -> 13800138000), a landline with its
    area code in brackets or its number split (“(021)62345678”, “021-6234-5678” -> 021-62345678). Anything else comes back as it was, for PHONE_RE to judge."""
    value = re.sub(r"\s", "", value)
    mobile = re.sub(r"^(?:\+|00)?86(?=1)", "", re.sub(r"[-—－]", "", value))
    if re.fullmatch(r"1[3-9]\d{9}", mobile, re.ASCII):
        return mobile
    # The area code set apart by brackets or a dash (never guessed from bare digits: 02162345678 stays as it is).
    landline = re.fullmatch(r"(?:\((0\d{2,3})\)-?|(0\d{2,3})-)(\d{3,4})-?(\d{4})((?:-\d{1,6})?)", value, re.ASCII)
    if landline:
        return f"{landline[1] or landline[2]}-{landline[3]}{landline[4]}{landline[5]}"
    return value


def credit_code_problem(code: str) -> str | None:
    """Why a 统一社会信用代码 (GB 32100-2015) is invalid, or None when it is valid."""
    if len(code) != 18:
        return "统一社会信用代码应为 18 位"
    bad = [c for c in code if c not in _CREDIT_CHARS]
    if bad:
        return f"统一社会信用代码含有不允许的字符“{bad[0]}”（不使用 I、O、Z、S、V）"
    if not code[2:8].isdigit():
        return "统一社会信用代码第 3-8 位应为行政区划码（数字）"
    total = sum(_CREDIT_CHARS.index(c) * w for c, w in zip(code[:17], _CREDIT_WEIGHTS, strict=True))
    check = _CREDIT_CHARS[(31 - total % 31) % 31]
    if code[17] != check:
        return "统一社会信用代码校验位不正确，请核对后重新输入"
    return None


def enterprise_name_problem(name: str) -> str | None:
    """Why `name` cannot be an enterprise's name, or None: it has words in it (“？？”, “🙂🙂” or “12” made a file
    in the registry under that name) and stays on one line."""
    if any(ch in name for ch in "\r\n\t\u2028\u2029"):
        return "企业名称请写在一行里，不要换行"
    if sum(ch.isalpha() for ch in name) < 2:
        return "企业名称应至少有 2 个汉字或字母，请按营业执照上的名称填写"
    return None


def building_name_problem(name: str) -> str | None:
    """Why `name` cannot be a building's name, or None: it stays on one line (a line break split every list, export
    and reply naming it) and has a word in it (“？？” or “12” was filed, a building nobody finds by name)."""
    if any(ch in name for ch in "\r\n\t\u2028\u2029"):
        return "楼宇名称请写在一行里，不要换行"
    if not any(ch.isalpha() for ch in name):
        return "楼宇名称应至少有 1 个汉字或字母，如“环球港A座”“1号楼”"
    return None


# Letters that print as nothing: the Hangul fillers and the blank braille pattern (blank nicknames are made of them).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def shows_nothing(value: str) -> bool:
    """Whether `value` has no character a reader can see: only blanks, format characters (zero-width spaces,
    bidi marks), combining marks with nothing to sit on (a lone variation selector U+FE0F) and blank letters."""
    return all(unicodedata.category(ch)[0] in "ZM" or unicodedata.category(ch) in {"Cc", "Cf"}
               or ch in _BLANK_LETTERS for ch in value)


def credit_code_check_char(first17: str) -> str:
    """The check character for the first 17 characters (used by demo data and tests)."""
    total = sum(_CREDIT_CHARS.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_CHARS[(31 - total % 31) % 31]


DB_INT_MAX = 2**31 - 1  # integer columns are INTEGER (32-bit) in PostgreSQL
MIN_YEAR, MAX_YEAR = 1900, 2999


@dataclass(frozen=True)
class Field:
    """One input field: its type, limits and the Chinese label used in messages."""

    name: str
    kind: str = "str"  # str | text | int | float | bool | date | datetime | phone | credit_code | list | dict | enum
    label: str = ""
    required: bool = False
    max_len: int | None = None
    min_len: int | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    # Names people read for enum codes (活动类别 lunch_hour -> 午间一小时): messages name them, not the codes alone.
    choice_names: Mapping[str, str] | None = None
    item: Field | None = None  # for lists
    max_items: int | None = None
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    description: str = ""
    # Text kept exactly as typed (a password): invisible characters are not removed from it.
    verbatim: bool = False
    # A "float" that must be a whole number (参加人数): 2.5 and "2.5" are refused, 3.0 is 3.
    whole: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name


def clean_text(value: str) -> str:
    """Text without control characters (PostgreSQL refuses NUL) and surrounding blanks."""
    return _CONTROL_RE.sub("", value).strip()


def _named(title: str, word: str) -> str:
    """The label with the word for what it is (生日 -> 生日日期), unless it already says it (开始时间, 日期)."""
    return title if title.endswith(word) else title + word


def _coerce(f: Field, value: Any) -> Any:  # noqa: C901 - one branch per kind reads best
    t = f.title
    if f.kind in {"str", "text", "phone", "credit_code", "enum"}:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and f.kind in {"str", "phone"}:
            value = str(value)
        if not isinstance(value, str):
            raise _Bad(f"{t}应为文字")
        value = clean_text(value)
        if not f.verbatim:
            value = strip_invisible(value).strip()
        if f.kind in {"phone", "credit_code"}:  # full-width digits and letters from a Chinese input method
            value = unicodedata.normalize("NFKC", value)
        if f.kind == "credit_code":
            value = value.upper().replace(" ", "")
        if value == "":
            return None
        if f.max_len is not None and len(value) > f.max_len:
            raise _Bad(f"{t}不能超过 {f.max_len} 个字（现在 {len(value)} 个）")
        if f.min_len is not None and len(value) < f.min_len:
            raise _Bad(f"{t}至少 {f.min_len} 个字")
        if f.kind == "phone":
            value = dialable(value)
        if f.kind == "phone" and not PHONE_RE.match(value):
            raise _Bad(f"{t}格式不对，请填写 11 位手机号或带区号的座机号")
        if f.kind == "credit_code":
            problem = credit_code_problem(value)
            if problem:
                raise _Bad(problem)
        if f.kind == "enum" and value not in f.choices:
            names = f.choice_names or {}
            raise _Bad(f"{t}只能是：{'、'.join(f'{names[c]}（{c}）' if c in names else c for c in f.choices)}")
        return value
    if f.kind == "int":
        if isinstance(value, bool):
            raise _Bad(f"{t}应为整数")
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            text = value.strip()
            # More digits than any field takes is a whole number all the same: out of range, not “应为整数” (and
            # never handed to int(), which refuses more than 4300 digits).
            value = int(text) if len(text) <= 30 else (-(10**30) if text.startswith("-") else 10**30)
        if not isinstance(value, int):
            raise _Bad(f"{t}应为整数")
        _range(f, value)
        if not -DB_INT_MAX <= value <= DB_INT_MAX:  # ids and counts are 32-bit INTEGER columns
            raise _Bad(f"{t}超出可用范围")
        return value
    if f.kind == "float":
        wrong = f"{t}应为整数（不能有小数）" if f.whole else f"{t}应为数字（如 3 或 2.5）"
        if isinstance(value, bool):
            raise _Bad(wrong)
        if isinstance(value, str):
            # Digits as typed, full-width ones folded. float() also reads "1e3", "1_000" and Arabic-Indic digits:
            # numbers nobody typed into a box that asks for 参加人数.
            value = unicodedata.normalize("NFKC", value).strip()
            if not re.fullmatch(r"[+-]?\d+" if f.whole else r"[+-]?(?:\d+\.?\d*|\.\d+)", value, re.ASCII):
                raise _Bad(wrong)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise _Bad(f"{t}应为数字") from None
        except OverflowError:  # an integer too large for a float
            raise _Bad(f"{t}应为有限的数字") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _Bad(f"{t}应为有限的数字")
        if f.whole and not value.is_integer():
            raise _Bad(wrong)
        _range(f, value)
        return value
    if f.kind == "bool":
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):  # as "1"/"0" were taken and 1/0 refused (a client's JSON 1)
            return bool(value)
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "是"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "否"}:
            return False
        raise _Bad(f"{t}应为是或否")
    if f.kind == "date":
        if isinstance(value, str) and not clean_text(value):
            # A browser sends a date input left empty as "": no date, as a blank text field is no text (the KB
            # form refused every entry without 生效日期/截止日期, and a 截止日期 could not be removed).
            return None
        if isinstance(value, date) and not isinstance(value, datetime):
            parsed_day = value
        elif not isinstance(value, str):  # the number 20240101 was read as 2024-01-01 (and 1 refused in ISO words)
            raise _Bad(f"{_named(t, '日期')}应为 2025-01-31 这样的文字，不是数字")
        else:
            try:
                parsed_day = date.fromisoformat(str(value).strip())
            except ValueError:
                raise _Bad(f"{_named(t, '日期')}格式不对，请用 2025-01-31 这样的格式") from None
        _year_range(t, parsed_day.year)
        return parsed_day
    if f.kind == "datetime":
        if isinstance(value, datetime):
            parsed = value
        elif not isinstance(value, str):
            raise _Bad(f"{_named(t, '时间')}应为 2025-01-31 09:30 这样的文字，不是数字")
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
            except ValueError:
                # Staff read this beside a date-time box: an ISO string with a T and an offset told them nothing
                # (and the API takes this form too, as Shanghai time).
                raise _Bad(f"{_named(t, '时间')}格式不对，请用 2025-01-31 09:30 这样的格式") from None
        if parsed.tzinfo is None:
            from zoneinfo import ZoneInfo

            parsed = parsed.replace(tzinfo=ZoneInfo("Asia/Shanghai"))  # the centre's local time
        _year_range(t, parsed.year)
        return parsed
    if f.kind == "list":
        if not isinstance(value, list):
            raise _Bad(f"{t}应为列表")
        if f.max_items is not None and len(value) > f.max_items:
            raise _Bad(f"{t}最多 {f.max_items} 项")
        if f.item is None:
            return value
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_coerce(f.item, v))
            except _Bad as exc:
                raise _Bad(f"{t}第 {i + 1} 项：{exc.msg}") from None
        return [v for v in out if v is not None]
    if f.kind == "dict":
        if not isinstance(value, dict):
            raise _Bad(f"{t}应为对象")
        return value
    raise AssertionError(f"unknown field kind {f.kind}")


def row_id(value: object) -> int | None:
    """A positive id from a form or query string value; None when it is not one or cannot exist (beyond the
    INTEGER id columns), so that the caller answers "not found" instead of sending it to the database."""
    text = str(value).strip() if value is not None else ""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 0 < number <= DB_INT_MAX else None


def text_key(value: object, max_len: int) -> str | None:
    """A text id (a knowledge entry's) from a URL or form value; None when no row can have it: longer than its
    column, or with control characters, NUL among them, which PostgreSQL refuses even in a query's parameter."""
    text = str(value).strip() if value is not None else ""
    if not text or len(text) > max_len or _CONTROL_RE.search(text):
        return None
    return text


def row_ids(values: Iterable[object]) -> list[int]:
    """The values that are ids (see row_id), in order; the others are dropped."""
    return [i for i in map(row_id, values) if i is not None]


def _year_range(title: str, year: int) -> None:
    # Dates are turned into UTC instants and compared in the database: year 1 or 9999 would overflow there.
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise _Bad(f"{title}的年份应在 {MIN_YEAR} 到 {MAX_YEAR} 之间")


def _bound(v: float) -> str:
    """A bound as a person writes it: 1000000, not 1e+06; 35.5 as it is."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _range(f: Field, value: float) -> None:
    if f.min is not None and value < f.min:
        raise _Bad(f"{f.title}不能小于 {_bound(f.min)}")
    if f.max is not None and value > f.max:
        raise _Bad(f"{f.title}不能大于 {_bound(f.max)}")


class _Bad(Exception):
    def __init__(self, msg: str) -> None:
        self.msg = msg
        super().__init__(msg)


def validate(data: Mapping[str, Any] | None, fields_: Iterable[Field], *, partial: bool = False) -> dict[str, Any]:
    """Check `data` against `fields_`; returns clean values or raises ValidationError naming each bad field.

    With partial=True (edits), absent fields are left out instead of defaulted or required.
    """
    data = data or {}
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields_:
        if f.name not in data or data[f.name] is None:
            if partial:
                continue
            if f.required:
                errors[f.name] = f"请填写{f.title}"
            else:
                out[f.name] = f.default
            continue
        try:
            value = _coerce(f, data[f.name])
        except _Bad as exc:
            errors[f.name] = exc.msg
            continue
        if value is None and f.required:
            errors[f.name] = f"请填写{f.title}"
            continue
        if value is not None and f.check is not None:
            problem = f.check(value)
            if problem:
                errors[f.name] = problem
                continue
        out[f.name] = value if value is not None else f.default
    if errors:
        first = next(iter(errors.values()))
        raise ValidationError(f"填写的内容有误：{first}", fields=errors)
    return out


def require_present(data: Mapping[str, Any], fields_: Iterable[Field], hint: str = "") -> None:
    """For a body that replaces a whole setting (PUT): each field must be sent, a required one not as null. validate()
    would default an absent one, and a page that lost its state ({}) or misspelt the name set the setting to nothing
    (all subscriptions gone). The message names the field in words and as sent; `hint` says how to ask for nothing."""
    missing = [f for f in fields_ if f.name not in data or (f.required and data[f.name] is None)]
    if missing:
        names = "、".join(f"{f.title}（{f.name}）" for f in missing)
        raise ValidationError(f"填写的内容有误：缺少{names}{hint}",
                              fields={f.name: f"请填写{f.title}" for f in missing})


def require_some(data: Mapping[str, Any], fields_: Iterable[Field]) -> None:
    """For a body whose fields are all optional (an edit, a reason): one that is not empty yet names none of them
    (“nick_name”, “reson”) is a mistake, not a request with nothing in it; answered 200, the page said 已保存 and
    nothing was saved, or a withdrawal went through without the reason typed. {} stays what it was, and fields sent
    beside known ones are left alone (a page may send back what GET gave it)."""
    fields_ = tuple(fields_)
    if data and not any(f.name in data for f in fields_):
        sent = "、".join(str(k)[:40] for k in list(data)[:5])
        names = "、".join(f"{f.name}（{f.title}）" for f in fields_)
        raise ValidationError(f"填写的内容有误：不认识提交的字段 {sent}，可以填写的是 {names}",
                              fields={str(k)[:40]: "不认识这个字段" for k in list(data)[:20]})


def openapi_schema(fields_: Iterable[Field]) -> dict[str, Any]:
    """JSON schema (OpenAPI 3) for a list of fields."""
    props: dict[str, Any] = {}
    required = []
    for f in fields_:
        props[f.name] = _field_schema(f)
        if f.required:
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _field_schema(f: Field) -> dict[str, Any]:
    kinds = {
        "str": {"type": "string"}, "text": {"type": "string"}, "int": {"type": "integer"},
        "float": {"type": "number"}, "bool": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
        "datetime": {"type": "string", "format": "date-time"}, "phone": {"type": "string", "pattern": PHONE_RE.pattern},
        "credit_code": {"type": "string", "minLength": 18, "maxLength": 18}, "dict": {"type": "object"},
        "enum": {"type": "string", "enum": list(f.choices)},
    }
    if f.kind == "list":
        s: dict[str, Any] = {"type": "array", "items": _field_schema(f.item) if f.item else {}}
        if f.max_items is not None:
            s["maxItems"] = f.max_items
    else:
        s = dict(kinds["int"] if f.whole else kinds[f.kind])
    if f.max_len is not None and f.kind in {"str", "text"}:
        s["maxLength"] = f.max_len
    if f.min is not None:
        s["minimum"] = f.min
    elif f.kind == "int":
        s["minimum"] = -DB_INT_MAX
    if f.max is not None:
        s["maximum"] = f.max
    elif f.kind == "int":
        s["maximum"] = DB_INT_MAX
    if f.label or f.description:
        s["description"] = " ".join(x for x in (f.label, f.description) if x)
    return s
