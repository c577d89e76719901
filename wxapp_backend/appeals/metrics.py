"""Appeal rates over a period; the definitions and denominators are written out in docs/appeals.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..audit import Actor
from .models import Appeal, AppealRating, AppealReturn
from .states import AppealStatus

S = AppealStatus
RESOLUTION_TARGET = 0.90  # 诉求解决率 ≥ 90 %
EXCLUDED = (S.REJECTED.value, S.DUPLICATE.value, S.WITHDRAWN.value)


def percent_text(numerator: int, denominator: int) -> str:
    """A rate as a whole percent for staff pages, rounded down: 89.7 % of a ≥ 90 % target must not read "90%"."""
    return f"{numerator * 100 // denominator}%" if denominator else "—"


@dataclass
class Rate:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return round(self.numerator / self.denominator, 4) if self.denominator else None

    def as_dict(self) -> dict:
        return {"numerator": self.numerator, "denominator": self.denominator, "rate": self.value}


@dataclass
class Metrics:
    start: str
    end: str
    submitted: int
    response: Rate
    on_time: Rate
    resolution: Rate
    satisfaction: Rate
    returns_by_department: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("response", "on_time", "resolution", "satisfaction"):
            d[k] = getattr(self, k).as_dict()
        d["resolution"]["target"] = RESOLUTION_TARGET
        d["resolution"]["meets_target"] = (self.resolution.value or 0) >= RESOLUTION_TARGET \
            if self.resolution.denominator else None
        return d


def _scope(stmt, actor: Actor | None):
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        stmt = stmt.where(Appeal.department == actor.department)
    return stmt


def compute(session: Session, start: datetime, end: datetime, actor: Actor | None = None) -> Metrics:
    """Rates for appeals in [start, end). See docs/appeals.md for what each counts."""
    base = _scope(select(Appeal).where(Appeal.submitted_at >= start, Appeal.submitted_at < end), actor)
    rows = list(session.scalars(base).unique())
    submitted = len(rows)
    # 响应率: submitted in the period, not withdrawn/merged before anyone responded; responded in time.
    resp_den = [a for a in rows if a.first_response_at is not None or a.status not in EXCLUDED]
    resp_num = [a for a in resp_den if a.first_response_at is not None and a.response_due_at is not None
                and a.first_response_at <= a.response_due_at]
    # 按时办结率: first resolved in the period; resolved by the (extended) deadline.
    done = list(session.scalars(_scope(select(Appeal).where(Appeal.first_resolved_at >= start,
                                                            Appeal.first_resolved_at < end,
                                                            Appeal.master_id.is_(None)), actor)).unique())
    on_time = [a for a in done if a.resolved_on_time]
    # 诉求解决率: submitted in the period and accepted for handling; now resolved/closed and not rated unresolved.
    # A merged child stays out after it followed its master to resolved (its status is no longer duplicate):
    # the master already counts that problem once.
    res_den = [a for a in rows if a.status not in EXCLUDED and a.master_id is None]
    last_rating = {}
    if res_den:
        for r in session.scalars(select(AppealRating).where(AppealRating.appeal_id.in_([a.id for a in res_den]))
                                 .order_by(AppealRating.round)):
            last_rating[r.appeal_id] = r
    res_num = [a for a in res_den if a.status in (S.RESOLVED.value, S.CLOSED.value)
               and (a.id not in last_rating or last_rating[a.id].resolved)]
    # 满意率: ratings given in the period; 4 or 5 stars.
    rq = select(AppealRating).where(AppealRating.created_at >= start, AppealRating.created_at < end)
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        rq = rq.where(AppealRating.department == actor.department)
    rated = list(session.scalars(rq))
    happy = [r for r in rated if r.satisfaction >= 4]
    # 退单数: return requests made in the period, by the department that returned the appeal.
    retq = select(AppealReturn.department, func.count(AppealReturn.id)).where(
        AppealReturn.created_at >= start, AppealReturn.created_at < end).group_by(AppealReturn.department)
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        retq = retq.where(AppealReturn.department == actor.department)
    returns = {d: n for d, n in session.execute(retq)}
    return Metrics(start.isoformat(), end.isoformat(), submitted, Rate(len(resp_num), len(resp_den)),
                   Rate(len(on_time), len(done)), Rate(len(res_num), len(res_den)), Rate(len(happy), len(rated)),
                   returns)
