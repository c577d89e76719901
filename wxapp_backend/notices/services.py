"""notify(): tell one user something — inbox always, then a subscribe or customer-service message by job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..queue import enqueue_after_commit
from .models import InboxItem, Notification


def notify(session: Session, user_id: int, kind: str, fields: dict[str, Any], page: str = "", *,
           title: str, body: str = "", ref: str = "", dedup_key: str | None = None,
           subscribe_message: dict[str, Any] | None = None) -> Notification:
    """Record a notification in the caller's transaction; delivery runs as a job after commit.

    The inbox entry is written here, so the user always sees it even when WeChat refuses every channel.
    Delivery never raises into the caller: a failed send only changes the notification's status.
    With `dedup_key`, a second call with the same key returns the first notification (jobs that run twice).
    With `subscribe_message` ({"data": {template key: value}, "page": "..."}) the subscribe message sends exactly
    those values and that page (even none), not ones made through the kind (a notice's test send: what its fan-out
    sends).
    """
    if dedup_key:
        existing = session.scalar(select(Notification).where(Notification.dedup_key == dedup_key))
        if existing is not None:
            return existing
    item = InboxItem(user_id=user_id, kind=kind, title=title[:100], body=body, page=page, ref=ref)
    session.add(item)
    session.flush()
    # A None field is left out, so the kind's default fills it (str() would send the word "None").
    note = Notification(user_id=user_id, kind=kind, fields={k: str(v) for k, v in fields.items() if v is not None},
                        page=page, ref=ref, inbox_item_id=item.id, dedup_key=dedup_key,
                        subscribe_message=subscribe_message)
    session.add(note)
    session.flush()
    enqueue_after_commit(session, "wxapp_backend.notices.jobs.deliver_notification", note.id,
                         job_id=f"notify-{note.id}", retries=3)  # RQ retries transient WeChat errors
    return note
