"""Appeal rates over a period; the definitions and denominators are written out in docs/appeals.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, true
from sqlalchemy.orm import Session

from ..audit import Actor
from ..db import utcnow
from .models import Appeal, AppealRating, AppealReturn, handled_by
from .states import AppealStatus

S = AppealStatus
RESOLUTION_TARGET = 0.90  # 诉求解决率 ≥ 90 %
EXCLUDED = (S.REJECTED.value, S.DUPLICATE.value, S.WITHDRAWN.value)


# What each rate counts, in the words staff read on the weekly page and in its workbook (docs/appeals.md has the
# same table): a director reporting the ≥ 90 % upwards must be able to say what is in it and what is not.
DEFINITIONS: dict[str, str] = {
    "response": "分子：1 个工作日内首次处理（受理、不予受理、合并等）的诉求；分母：本期提交的诉求，"
                "不含无人处理前已撤回或已合并的，也不含尚未处理但还没到响应期限的",
    "on_time": "分子：在办结期限（含批准的延期）内办结的诉求；分母：本期首次办结的诉求（已合并的随主诉求，不另计）",
    "resolution": "分子：现为已办结或已关闭、且本轮未被企业评价为未解决的诉求；分母：本期提交并受理办理的诉求，"
                  "不含不予受理、已合并、已撤回的",
    "satisfaction": "分子：4 星或 5 星的评价；分母：本期收到的评价（每条诉求每轮办结一条）",
}


def percent_text(numerator: int, denominator: int) -> str:
    """A rate as a whole percent for staff pages, rounded down: 89.7 % of a ≥ 90 % target must not read "90%"."""
    return f"{numerator * 100 // denominator}%" if denominator else "—"


@dataclass
class Rate:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        # Rounded down to 4 places, as percent_text rounds: 179 999 / 200 000 rounded read 0.9 (the target met).
        return self.numerator * 10000 // self.denominator / 10000 if self.denominator else None

    def meets(self, target: float) -> bool | None:
        """numerator / denominator >= target, counted in whole numbers (no float rounding); None for a rate of none."""
        if not self.denominator:
            return None
        return self.numerator * 100 >= round(target * 100) * self.denominator

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
    satisfaction_average: float | None = None  # 平均满意度: mean stars of the ratings given in the period

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("response", "on_time", "resolution", "satisfaction"):
            d[k] = getattr(self, k).as_dict()
        d["satisfaction"]["average"] = d.pop("satisfaction_average")
        d["resolution"]["target"] = RESOLUTION_TARGET
        d["resolution"]["meets_target"] = self.resolution.meets(RESOLUTION_TARGET)
        return d


def _scope(stmt, actor: Actor | None):
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        stmt = stmt.where(handled_by(actor.department))  # given to it, not only guessed for it
    return stmt


def compute(session: Session, start: datetime, end: datetime, actor: Actor | None = None, *,
            now: datetime | None = None) -> Metrics:
    """Rates for appeals in [start, end), as they stand at `now`. See docs/appeals.md for what each counts.

    Every figure is counted in the database: a period of a year or more holds thousands of appeals, which must
    not be loaded one by one to be counted."""
    def count(cond) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    responded = Appeal.first_response_at.is_not(None)
    # The rating of the appeal's current round. A "not resolved" rating starts the next round, so an earlier
    # round's rating says nothing about the result now: read as the latest rating, it kept an appeal resolved
    # again (and then confirmed, or closed unrated) out of the resolution rate for good.
    last_rated_resolved = (select(AppealRating.resolved).where(AppealRating.appeal_id == Appeal.id,
                                                               AppealRating.round == Appeal.round)
                           .limit(1).scalar_subquery())
    # 响应率: submitted in the period, not withdrawn/merged before anyone responded; responded in time. One not
    # responded to yet whose response deadline has not passed is neither a hit nor a miss yet: left out (it made
    # the rolling 30-day figure dip with every new appeal).
    now = now or utcnow()
    still_in_time = and_(Appeal.first_response_at.is_(None), Appeal.response_due_at.is_not(None),
                         Appeal.response_due_at > now)
    resp_den = or_(responded, and_(Appeal.status.notin_(EXCLUDED), ~still_in_time))
    resp_num = and_(responded, Appeal.response_due_at.is_not(None),
                    Appeal.first_response_at <= Appeal.response_due_at)
    # 诉求解决率: submitted in the period and accepted for handling; now resolved/closed and not rated unresolved.
    # A merged child stays out after it followed its master to resolved (its status is no longer duplicate):
    # the master already counts that problem once.
    res_den = and_(Appeal.status.notin_(EXCLUDED), Appeal.master_id.is_(None))
    res_num = and_(res_den, Appeal.status.in_((S.RESOLVED.value, S.CLOSED.value)),
                   or_(last_rated_resolved.is_(None), last_rated_resolved == true()))
    submitted, n_resp_num, n_resp_den, n_res_num, n_res_den = session.execute(_scope(
        select(func.count(Appeal.id), count(resp_num), count(resp_den), count(res_num), count(res_den))
        .where(Appeal.submitted_at >= start, Appeal.submitted_at < end), actor)).one()
    # 按时办结率: first resolved in the period; resolved by the (extended) deadline.
    n_done, n_on_time = session.execute(_scope(
        select(func.count(Appeal.id), count(Appeal.resolved_on_time == true()))
        .where(Appeal.first_resolved_at >= start, Appeal.first_resolved_at < end, Appeal.master_id.is_(None)),
        actor)).one()
    # 满意率: ratings given in the period; 4 or 5 stars.
    rq = select(func.count(AppealRating.id), count(AppealRating.satisfaction >= 4),
                func.sum(AppealRating.satisfaction)).where(
        AppealRating.created_at >= start, AppealRating.created_at < end)
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        rq = rq.where(AppealRating.department == actor.department)
    n_rated, n_happy, stars = session.execute(rq).one()
    # 退单数: return requests made in the period, by the department that returned the appeal.
    retq = select(AppealReturn.department, func.count(AppealReturn.id)).where(
        AppealReturn.created_at >= start, AppealReturn.created_at < end).group_by(AppealReturn.department)
    if actor is not None and actor.type == "staff" and actor.role == "dept":
        retq = retq.where(AppealReturn.department == actor.department)
    returns = {d: n for d, n in session.execute(retq)}
    return Metrics(start.isoformat(), end.isoformat(), int(submitted), Rate(int(n_resp_num), int(n_resp_den)),
                   Rate(int(n_on_time), int(n_done)), Rate(int(n_res_num), int(n_res_den)),
                   Rate(int(n_happy), int(n_rated)), returns,
                   round(int(stars) / int(n_rated), 2) if n_rated else None)
