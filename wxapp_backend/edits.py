"""The stale-page check shared by the console's edit forms (enterprises, buildings, grids, activities, notice
drafts, staff accounts): a save from a page loaded before a colleague saved the same record is refused
(StaleEdit, 409 `stale_edit`) instead of silently putting back what the colleague changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import Conflict, NotFound


class StaleEdit(Conflict):
    """An edit made on a page loaded before a colleague saved the record (the console shows both versions)."""

    code = "stale_edit"


def locked_for_edit(session: Session, model: type, row_id: int, missing: str) -> Any:
    """The row, locked and read afresh: two saves from pages of the same moment cannot both pass the stale check."""
    row = session.scalar(
        select(model)
        .where(model.id == row_id)
        .with_for_update(of=model)
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise NotFound(missing)
    return row


def version_digest(values: Mapping[str, Any]) -> str:
    """The version of a record without an updated_at column (staff accounts): sha256 of its editable values as
    canonical JSON, sent in the page as `seen` is and compared with the stored values' digest on save."""
    text = json.dumps(dict(values), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def refuse_stale(
    row: Any,
    changes: Collection[Any],
    seen: datetime | str | None,
    what: str,
    *,
    now: datetime | str | None = None,
) -> None:
    """The console's forms send every field: saved from a page loaded before a colleague's save (`seen`, the
    row's updated_at then, or `now`'s kind of stamp: a version_digest), they would silently put back what the
    colleague changed. A resend that changes nothing more (a double click) is no conflict."""
    current = row.updated_at if now is None else now
    if changes and seen is not None and current != seen:
        raise StaleEdit(
            f"这份{what}在您编辑期间已被其他同事修改并保存，为免覆盖对方的修改，这次没有保存。"
            "下方对照列出了现在保存的内容和您填写的内容；您填写的内容仍在表单里，请核对后再点“保存”。"
        )
