"""Knowledge-base entry schema: one FAQ or policy item, immutable, with validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import date
from urllib.parse import urlsplit

# Ids end up in URLs, logs and the labelled set: no whitespace, no "|" (the CSV list separator), no "/" (one
# path segment in /console/kb/<id>/edit and /api/v1/kb/entries/<id>), and nothing a browser rewrites in a path:
# "\" (read as "/") and the segments "." and ".." (resolved away, so the entry's pages could not be reached).
ID_RE = re.compile(r"^(?!\.{1,2}$)[^\s|/\\]{1,128}$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")

POLICY_FIELDS: tuple[str, ...] = (
    "issuer",
    "eligibility",
    "conditions",
    "window",
    "benefit",
    "where_to_apply",
    "url",
    "valid_from",
    "valid_until",
)
DATE_FIELDS: tuple[str, ...] = ("valid_from", "valid_until")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "question", "answer")
# The database's column sizes (kb_entries): longer text must be refused here, with the field named, rather than
# by PostgreSQL mid-import.
MAX_LENGTHS: dict[str, int] = {"question": 300, "category": 40, "issuer": 200, "window": 300, "url": 500}

FIELD_LABELS: dict[str, str] = {
    "id": "编号",
    "question": "标准问题",
    "similar": "相似问法",
    "answer": "答案",
    "category": "分类",
    "tags": "标签",
    "issuer": "发布部门",
    "eligibility": "适用对象",
    "conditions": "申请条件",
    "window": "申报时间",
    "benefit": "支持内容",
    "where_to_apply": "办理渠道",
    "url": "原文链接",
    "valid_from": "生效日期",
    "valid_until": "截止日期",
    "retired": "已下线",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One knowledge-base item; `similar` holds alternative phrasings of `question`."""

    id: str
    question: str
    answer: str
    similar: tuple[str, ...] = ()
    category: str = ""
    tags: tuple[str, ...] = ()
    issuer: str | None = None
    eligibility: str | None = None
    conditions: str | None = None
    window: str | None = None
    benefit: str | None = None
    where_to_apply: str | None = None
    url: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    retired: bool = field(default=False)

    def is_current(self, today: date) -> bool:
        """True when the entry is live on `today`: not retired and inside its validity window."""
        if self.retired:
            return False
        if self.valid_from is not None and today < self.valid_from:
            return False
        if self.valid_until is not None and today > self.valid_until:
            return False
        return True

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The standard question followed by every distinct non-empty alternative phrasing."""
        seen: dict[str, None] = {self.question.strip(): None}
        for s in self.similar:
            s = s.strip()
            if s:
                seen.setdefault(s, None)
        return tuple(k for k in seen if k)

    @property
    def has_policy(self) -> bool:
        """True when any policy field is set."""
        return any(getattr(self, f) not in (None, "") for f in POLICY_FIELDS)

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form (dates as ISO strings, tuples as lists) for JSON and YAML export."""
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, date):
                v = v.isoformat()
            out[f.name] = v
        return out


def entry_issues(entry: Entry) -> list[tuple[str, str]]:
    """The problems with one entry as (field, Chinese text to follow the field's label); empty means valid."""
    issues: list[tuple[str, str]] = []
    for name in REQUIRED_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, str) or not value.strip():
            issues.append((name, "不能为空"))
    if isinstance(entry.id, str) and entry.id.strip() and not ID_RE.match(entry.id):
        issues.append(("id", f"不能含空白、“/”、“\\” 或 “|”，不能是 “.” 或 “..”，且不超过 128 个字符：{entry.id}"))
    for name, limit in MAX_LENGTHS.items():
        value = getattr(entry, name)
        if isinstance(value, str) and len(value) > limit:
            issues.append((name, f"不能超过 {limit} 个字（现在 {len(value)} 个）"))
    for name in ("similar", "tags"):
        value = getattr(entry, name)
        if not isinstance(value, tuple) or not all(isinstance(x, str) for x in value):
            issues.append((name, "必须是文本列表"))
    for name in DATE_FIELDS:
        value = getattr(entry, name)
        if value is not None and not isinstance(value, date):
            issues.append((name, "必须是日期（YYYY-MM-DD）"))
    if (
        isinstance(entry.valid_from, date)
        and isinstance(entry.valid_until, date)
        and entry.valid_from > entry.valid_until
    ):
        issues.append(("valid_from", f"（{entry.valid_from}）晚于{FIELD_LABELS['valid_until']}（{entry.valid_until}）"))
    if entry.url and not re.match(r"^https?://", entry.url):
        issues.append(("url", f"必须以 http:// 或 https:// 开头：{entry.url}"))
    elif entry.url and not _is_web_address(entry.url):
        issues.append(("url", f"不是有效的网址（应像 https://zwdt.sh.gov.cn/ 这样写明网站，且不能含空格）：{entry.url}"))
    for f in fields(entry):
        # A lone surrogate ("\ud83d" in a JSON or YAML file cut mid-emoji) is no UTF-8 text: the database write
        # failed with a traceback, after the whole file had been read as fine.
        value = getattr(entry, f.name)
        texts = value if isinstance(value, tuple) else (value,)
        if any(isinstance(t, str) and _SURROGATE_RE.search(t) for t in texts):
            issues.append((f.name, "含有无法识别的字符（可能是被截断的表情符号），请删除或重新输入这个字符"))
    return issues


def _is_web_address(url: str) -> bool:
    """An http(s) link that names a site and holds no blank: “https://” alone, or a link with a space in it, went
    out at the end of the bot's reply as 【原文】 and opened nothing (WeChat links only up to the space)."""
    if any(ch.isspace() for ch in url):
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:  # an unclosed [ of an IPv6 address
        return False
    return bool(host) and bool(host.strip("."))


def validate_entry(entry: Entry) -> list[str]:
    """Return the problems with one entry as Chinese messages; an empty list means valid."""
    # Files name their columns in English or Chinese: both are given.
    return [f"“{name}”（{FIELD_LABELS[name]}）{text}" for name, text in entry_issues(entry)]


def validate_entries(entries: list[Entry]) -> list[str]:
    """Validate many entries, including id uniqueness across them; messages name the entry id."""
    errors: list[str] = []
    seen: set[str] = set()
    for i, e in enumerate(entries, start=1):
        for msg in validate_entry(e):
            errors.append(f"第 {i} 条（{e.id}）：{msg}")
        if e.id in seen:
            errors.append(f"第 {i} 条：编号 “{e.id}” 重复")
        seen.add(e.id)
    return errors
