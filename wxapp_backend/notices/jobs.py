"""Delivery of notifications (subscribe message with credit, else customer-service message, else inbox only)."""

from __future__ import annotations

from ..db import session_scope, utcnow
from .models import DeliveryStatus, Notification


def deliver_notification(notification_id: int) -> str:
    """Deliver one notification; safe to run twice (a finished notification is left alone)."""
    with session_scope() as s:
        note = s.get(Notification, notification_id, with_for_update=True)
        if note is None or note.status != DeliveryStatus.PENDING.value:
            return "skipped"
        # Channel selection (credits, customer-service window) is added by the WeChat client work;
        # until then every notification is delivered to the inbox only.
        note.status = DeliveryStatus.INBOX_ONLY.value
        note.finished_at = utcnow()
        return note.status
