"""What the chat's 我的诉求 / 评价 / 补充 (handlers/appeal_followup.py) read about a user's own appeals: which
rounds were rated, which appeal waits for a rating or for material, an appeal by its number."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .calendar import WorkCalendar
from .models import Appeal, AppealEvent, AppealRating
from .services import rating_window_ends
from .states import AppealStatus


def rated_rounds(session: Session, appeal_ids: list[int]) -> set[tuple[int, int]]:
    """(appeal id, round) of every rating of these appeals."""
    if not appeal_ids:
        return set()
    rows = session.execute(select(AppealRating.appeal_id, AppealRating.round)
                           .where(AppealRating.appeal_id.in_(appeal_ids)))
    return {(a, r) for a, r in rows}


def awaiting_rating(appeal: Appeal, rated: set[tuple[int, int]], now: datetime,
                    cal: WorkCalendar | None = None) -> bool:
    """Resolved, inside the rating window (services.rating_window_ends: 7 working days), and this round not rated
    yet (what `services.rate` accepts)."""
    if appeal.status != AppealStatus.RESOLVED or (appeal.id, appeal.round) in rated:
        return False
    ends = rating_window_ends(appeal, cal)
    return ends is not None and now <= ends


def needs_info(appeal: Appeal, rated: set[tuple[int, int]], now: datetime) -> bool:
    """Staff asked the enterprise for material (what `services.supplement` accepts)."""
    return appeal.status == AppealStatus.PENDING_ENTERPRISE


def own_by_number(session: Session, user_id: int, number: str) -> Appeal | None:
    """The user's own appeal with this number (SQ…, any case); None for anyone else's."""
    return session.scalars(select(Appeal).where(Appeal.user_id == user_id,
                                                Appeal.number == number.upper())).unique().first()


def own_by_id(session: Session, user_id: int, appeal_id: int) -> Appeal | None:
    """The user's own appeal with this id (picked from a list the chat showed them); None for anyone else's."""
    appeal = session.get(Appeal, appeal_id)
    return appeal if appeal is not None and appeal.user_id == user_id else None


def awaiting_rating_latest(session: Session, user_id: int, now: datetime) -> tuple[Appeal | None, int]:
    """The user's most recently resolved appeal still waiting for their rating, and how many wait in all."""
    from .services import list_own, work_calendar

    recent = list_own(session, user_id, per_page=50).items
    rated = rated_rounds(session, [a.id for a in recent])
    cal = work_calendar(session)
    waiting = sorted((a for a in recent if awaiting_rating(a, rated, now, cal)),
                     key=lambda a: (a.resolved_at, a.id), reverse=True)
    return (waiting[0] if waiting else None), len(waiting)


def needing_info_latest(session: Session, user_id: int) -> Appeal | None:
    """The user's most recent appeal on which staff wait for material from them (the chat's 补充)."""
    return session.scalars(select(Appeal).where(Appeal.user_id == user_id,
                                                Appeal.status == AppealStatus.PENDING_ENTERPRISE)
                           .order_by(Appeal.id.desc()).limit(1)).unique().first()


def rated_since(session: Session, user_id: int, since: datetime) -> str | None:
    """The number of the appeal this user rated most recently, if after `since`."""
    return session.scalar(select(Appeal.number).join(AppealRating, AppealRating.appeal_id == Appeal.id)
                          .where(AppealRating.user_id == user_id, AppealRating.created_at >= since)
                          .order_by(AppealRating.id.desc()).limit(1))


def told_since(session: Session, user_id: int, since: datetime) -> str | None:
    """The number of the appeal this user filed or supplemented most recently, if after `since` (a photo sent just
    after was meant for it)."""
    return session.scalar(select(Appeal.number).join(AppealEvent, AppealEvent.appeal_id == Appeal.id)
                          .where(Appeal.user_id == user_id, AppealEvent.action.in_(("submitted", "supplemented")),
                                 AppealEvent.created_at >= since)
                          .order_by(AppealEvent.id.desc()).limit(1))
