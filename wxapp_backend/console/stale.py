"""Console side of the stale-page check (..edits): the version a form was loaded on, and what differs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import request


def seen_stamp() -> datetime | None:
    """The record's updated_at on the page the form was sent from (None from a form without one)."""
    try:
        seen = datetime.fromisoformat(request.form.get("updated_at", ""))
    except ValueError:
        return None
    return seen if seen.tzinfo is not None else None


def seen_version() -> str | None:
    """The record's version_digest (..edits) on the page the form was sent from, for a record without an
    updated_at column (None from a form without one)."""
    seen = request.form.get("version", "")
    return seen if len(seen) == 64 and all(c in "0123456789abcdef" for c in seen) else None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, (list, tuple, set)):
        return "、".join(str(x) for x in value)
    # A browser sends a textarea's line breaks as CR LF, whatever the record holds.
    return "" if value is None else str(value).replace("\r\n", "\n").strip()


def differences(
    now: Mapping[str, Any], typed: Mapping[str, Any], labels: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """(label, now on file, typed) for each field whose form value differs from the record as its form shows it
    now: empty for a resend of what is already saved (a double click), which is no conflict."""
    rows = []
    for name, label in labels.items():
        if name in typed and _shown(now.get(name)) != _shown(typed[name]):
            rows.append((label, _shown(now.get(name)), _shown(typed[name])))
    return rows
