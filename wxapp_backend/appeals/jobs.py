"""The SLA tick: warnings, overdue flags, 催办, auto-escalation, closing unrated appeals, the Monday report.

`tick()` is safe to run any number of times (every 5 minutes by the workers' beat, registered in
`appeals.api.register`, or `flask --app wsgi appeals tick`): each step records what it did on the appeal, so a second run finds nothing left to do.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from ..audit import SYSTEM
from ..db import session_scope, utcnow
from . import reports, services
from .calendar import TZ
from .models import Appeal, AppealTask, TaskKind
from .states import CLOCK_RUNNING, OPEN, AppealStatus

log = logging.getLogger(__name__)


def tick(now: datetime | None = None) -> dict[str, int]:
    """One pass over the open appeals; returns how many of each thing it did."""
    now = now or utcnow()
    done = {"warned": 0, "overdue": 0, "urged": 0, "escalated": 0, "closed": 0, "reports": 0,
            "escalation_overdue": 0, "tasks_overdue": 0, "info_reminded": 0, "info_resumed": 0}
    with session_scope() as s:
        ids = list(s.scalars(select(Appeal.id).where(
            Appeal.status.in_([st.value for st in CLOCK_RUNNING]
                              + [AppealStatus.RESOLVED.value, AppealStatus.PENDING_ENTERPRISE.value]))))
    for appeal_id in ids:  # one transaction per appeal: one bad row does not stop the rest
        try:
            with session_scope() as s:
                _one(s, appeal_id, now, done)
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("appeal tick failed", extra={"appeal_id": appeal_id})
    _late_escalations_and_tasks(now, done)
    done["photos"] = sweep_chat_photos(now)
    # Last week's report, stored once: on the Monday as before, and on any later day of the week when no tick ran
    # on the Monday (the service was down, the worker stopped): the week's report was then never made.
    with session_scope() as s:
        _, created = reports.prepare_weekly(s, reports.parse_week(None, now.astimezone(TZ).date())[0], now=now,
                                            via="tick", late=now.astimezone(TZ).weekday() != 0)
        done["reports"] += int(created)
    return done


def _one(s, appeal_id: int, now: datetime, done: dict[str, int]) -> None:
    appeal = services.get_appeal(s, appeal_id, SYSTEM, lock=True)
    cal = services.work_calendar(s)
    if appeal.status == AppealStatus.RESOLVED:
        ends = services.rating_window_ends(appeal, cal)  # what rate() refuses after
        if ends is not None and now > ends:
            services.transition(s, appeal, AppealStatus.CLOSED, SYSTEM, action="closed", now=now,
                                note="评价期已过，企业未评价，诉求自动关闭", rated=False)
            # As a close by staff is told: the appeal left their “待评价” without a word.
            services._notify(s, appeal, "appeal_closed", f"您的诉求 {appeal.number} 评价期（办结后 7 个工作日）已过，已自动关闭。"
                             "如问题仍未解决，请重新提交诉求。", "closed", now=now)
            done["closed"] += 1
        return
    if appeal.status == AppealStatus.PENDING_ENTERPRISE:
        did = services.watch_info_wait(s, appeal, now)
        if did:
            done[f"info_{did}"] += 1
        return
    if appeal.status not in CLOCK_RUNNING or appeal.due_at is None:
        return
    left = cal.working_minutes_between(now, appeal.due_at)
    if 0 < left <= services.WARN_MINUTES and appeal.warned_due_at != appeal.due_at and now < appeal.due_at:
        appeal.warned_due_at = appeal.due_at
        services._event(s, appeal, SYSTEM, "due_soon", at=now, note=f"距办结期限不足 1 个工作日（剩 {left} 分钟）",
                        department=appeal.department, due_at=appeal.due_at)
        s.flush()
        # Once per deadline (a 延期 or a resumed clock makes a new one, and its own alert); in this transaction,
        # so a tick that dies before its commit leaves neither the flag nor the alert, and the next one does both.
        services.notify_department(s, appeal, "due_soon", f"due_soon:{int(appeal.due_at.timestamp())}", now=now)
        done["warned"] += 1
    if now >= appeal.due_at:
        if not appeal.overdue:
            appeal.overdue = True
            ev = services._event(s, appeal, SYSTEM, "overdue", at=now, note="已超过办结期限", department=appeal.department)
            s.flush()
            services.notify_department(s, appeal, "overdue", f"overdue:{ev.id}", now=now)
            done["overdue"] += 1
        today = now.astimezone(TZ).date()
        if appeal.last_urged_on != today and cal.is_workday(today):
            appeal.last_urged_on = today
            appeal.urge_count += 1
            services._event(s, appeal, SYSTEM, "urged", at=now, note=f"系统催办（第 {appeal.urge_count} 次）",
                            department=appeal.department)
            done["urged"] += 1
        late = -cal.working_minutes_between(now, appeal.due_at)
        if late >= services.AUTO_ESCALATE_OVERDUE_DAYS * 510 and not appeal.escalated:
            services.escalate(s, SYSTEM, appeal, reason=f"超期 {services.AUTO_ESCALATE_OVERDUE_DAYS} 个工作日以上，"
                              "系统自动转入办不成事窗口", now=now)
            done["escalated"] += 1


def _late_escalations_and_tasks(now: datetime, done: dict[str, int]) -> None:
    """Flag, once each, a 办不成事 still owed past its 3 working days and an open 会办 or 差评整改 task past its
    deadline: the dates were shown but nothing noticed them pass. A 整改 follows a rating, on an appeal closed (or
    being handled again) by then."""
    with session_scope() as s:
        late = list(s.scalars(select(Appeal.id).where(services.escalation_overdue(now))))
        tasks = list(s.execute(select(AppealTask.id, AppealTask.appeal_id).join(Appeal, Appeal.id == AppealTask.appeal_id)
                               .where(AppealTask.status == "open", AppealTask.due_at.is_not(None),
                                      AppealTask.due_at <= now,
                                      or_(and_(AppealTask.kind == TaskKind.COORDINATION,
                                               Appeal.status.in_([st.value for st in OPEN])),
                                          AppealTask.kind == TaskKind.RECTIFICATION))))
    for appeal_id in late:
        try:
            with session_scope() as s:
                appeal = services.get_appeal(s, appeal_id, SYSTEM, lock=True)
                due = appeal.escalation_due_at.isoformat() if appeal.escalation_due_at else ""
                if _flagged(s, appeal_id, "escalation_overdue", "escalation_due_at", due):
                    continue
                services._event(s, appeal, SYSTEM, "escalation_overdue", at=now,
                                note="办不成事已超过 3 个工作日仍未处理完，请窗口负责人尽快联系企业", escalation_due_at=due)
                s.flush()
                services.notify_escalation_window(s, appeal, "escalation_overdue", f"escalation_overdue:{due}", now=now)
                done["escalation_overdue"] += 1
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("escalation overdue check failed", extra={"appeal_id": appeal_id})
    for task_id, appeal_id in tasks:
        try:
            with session_scope() as s:
                appeal = services.get_appeal(s, appeal_id, SYSTEM, lock=True)
                task = s.get(AppealTask, task_id)
                action, what = (("rectification_overdue", "差评整改任务") if task.kind == TaskKind.RECTIFICATION
                                else ("task_overdue", "会办任务"))
                if _flagged(s, appeal_id, action, "task_id", task_id):
                    continue
                services._event(s, appeal, SYSTEM, action, at=now, note=f"{task.department}的{what}已超过期限，请催办",
                                task_id=task_id, department=task.department)
                s.flush()
                services.notify_task_department(s, appeal, task, action, f"{action}:{task_id}", now=now)
                done["tasks_overdue"] += 1
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("task overdue check failed", extra={"appeal_id": appeal_id, "task_id": task_id})


def _flagged(s, appeal_id: int, action: str, key: str, value) -> bool:
    """An event of this kind already records this value (the tick runs every 5 minutes)."""
    from .models import AppealEvent

    return any((data or {}).get(key) == value for data in s.scalars(
        select(AppealEvent.data).where(AppealEvent.appeal_id == appeal_id, AppealEvent.action == action)))


def _retries_left() -> bool:
    """True inside an RQ job that will be tried again if it raises."""
    from rq import get_current_job

    job = get_current_job()
    return bool(job is not None and job.retries_left)


# WeChat keeps a temporary media file 3 days; a fetch job normally ends within minutes (its retries included).
MEDIA_KEPT = timedelta(days=3)
SWEEP_AFTER = timedelta(minutes=15)


def sweep_chat_photos(now: datetime | None = None) -> int:
    """Fetch again the chat photos of `photos_pending` events (15 minutes to 3 days old) that are neither attached
    nor given up, when no job for them is waiting or running: their job was never enqueued (Redis down at the
    commit) or Redis lost it. Returns how many jobs it enqueued."""
    from rq.job import Job, JobStatus

    from ..queue import enqueue, get_queue
    from .models import AppealEvent

    now = now or utcnow()
    with session_scope() as s:
        due = list(s.scalars(select(AppealEvent).where(
            AppealEvent.action == "photos_pending", AppealEvent.created_at > now - MEDIA_KEPT,
            AppealEvent.created_at <= now - SWEEP_AFTER).order_by(AppealEvent.id)))
        todo: list[tuple[int, str, list[str], str, str]] = []
        for ev in due:
            appeal = s.get(Appeal, ev.appeal_id)
            if appeal is None:
                continue
            settled = _settled_media(s, appeal)
            left = [m for m in ev.data.get("media") or [] if isinstance(m, str) and m not in settled]
            if left:
                todo.append((appeal.id, str(ev.data.get("account") or "oa"), left, f"appeal-sweep-photos-{ev.id}",
                             str(ev.data.get("job_id") or "")))
    if not todo:
        return 0
    queue = get_queue()
    active = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
    enqueued = 0
    for appeal_id, account, left, job_id, original in todo:
        if any(_job_status(Job, queue, j) in active for j in (job_id, original) if j):
            continue  # a run for them is still on its way
        try:
            enqueue("wxapp_backend.appeals.jobs.fetch_chat_images", appeal_id, account, left, job_id=job_id,
                    retries=2, now=now)
            enqueued += 1
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("chat photo sweep could not enqueue", extra={"appeal_id": appeal_id})
    if enqueued:
        log.warning("chat photos fetched again by the sweep", extra={"jobs": enqueued})
    return enqueued


def _settled_media(s, appeal: Appeal) -> set[str]:
    """Chat media ids nothing is left to do for: attached, given up (`not_fetched`), or the same photo as one the
    appeal already had (`same_photo`, not stored twice)."""
    from .models import AppealEvent

    done = {img.get("media_id") for img in appeal.images or []}
    for data in s.scalars(select(AppealEvent.data).where(AppealEvent.appeal_id == appeal.id,
                                                         AppealEvent.action == "photos_attached")):
        done.update((data or {}).get("not_fetched") or [])
        done.update((data or {}).get("same_photo") or [])
    return done


def _job_status(job_cls, queue, job_id: str):
    try:
        return job_cls.fetch(job_id, connection=queue.connection).get_status()
    except Exception:  # noqa: BLE001 - no such job (finished and expired, never enqueued, lost)
        return None


def fetch_chat_images(appeal_id: int, account: str, media_ids: list[str], now: datetime | None = None) -> int:
    """Download photos sent in the chat intake and attach them; media already attached are skipped, and a photo
    the appeal already has (or sent twice) is kept once (intake.distinct_photos; recorded as `same_photo`). The
    `photos_attached` row is stamped `now` when the enqueuer had a clock of its own (the sweep's, a travelled
    intake's), else the real clock.

    A photo WeChat could not give for now (busy, a timeout) is fetched by the job's retry, the others being
    kept at once; on the last try, or when WeChat refuses it (expired), it is recorded as not fetched."""
    from flask import current_app

    from ..wechat.client import WeChatAPIError, get_api
    from . import intake

    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        if appeal is None:
            return 0
        have = _settled_media(s, appeal)
        seen = intake.stored_keys(current_app.instance_path, appeal.images)
    todo = [m for m in media_ids if m not in have]
    same: list[str] = []  # the same photo as one the appeal has, or as one sent before it: kept once
    fetched: list[dict] = []
    failed: list[str] = []  # given up for good (recorded, so that the sweep does not fetch them again)
    later: WeChatAPIError | None = None
    api = get_api(account)
    for media_id in todo:
        try:
            data, _ctype = api.download_media(media_id, max_bytes=intake.MAX_IMAGE_BYTES)
            decoded = intake.decode_raw(data)
        except WeChatAPIError as exc:
            if exc.transient and _retries_left():
                later = exc
                continue
            log.warning("chat photo not fetched", extra={"appeal_id": appeal_id, "errcode": exc.errcode})
            failed.append(media_id)
            continue
        except Exception:  # noqa: BLE001 - an expired or refused photo must not lose the others
            log.warning("chat photo not fetched", extra={"appeal_id": appeal_id})
            failed.append(media_id)
            continue
        if not intake.distinct_photos([decoded], seen):
            same.append(media_id)
            continue
        stored = intake.store_images(current_app.instance_path, [decoded])[0]
        fetched.append({**stored, "media_id": media_id})
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, SYSTEM, lock=True)
        have = {img.get("media_id") for img in appeal.images or []}
        # Photos attached meanwhile (another run, a supplement in the mini-program) may be the same ones.
        seen = intake.stored_keys(current_app.instance_path, appeal.images)
        new = []
        for f in fetched:
            if f["media_id"] in have:
                continue
            kept = intake.stored_keys(current_app.instance_path, [f])
            if kept and kept <= seen:
                same.append(f["media_id"])
                continue
            seen |= kept
            new.append(f)
        # Photos added meanwhile (a supplement in the mini-program) count towards the nine as well.
        room = max(0, intake.MAX_IMAGES - len(appeal.images or []))
        failed += [f["media_id"] for f in new[room:]]
        new = new[:room]
        if new or failed or same:
            appeal.images = list(appeal.images or []) + new
            services._event(s, appeal, SYSTEM, "photos_attached",
                            note=f"对话中发送的照片已保存 {len(new)} 张" + (f"，{len(failed)} 张未能获取" if failed else "")
                            + (f"，{len(same)} 张与已有照片相同，未重复保存" if same else ""),
                            public=True, not_fetched=failed or None, same_photo=same or None, at=now)
    # Copies nobody names (another run attached the same media first, or no room was left): not kept on disk.
    intake.remove_images(current_app.instance_path, [f for f in fetched if f not in new])
    if later is not None:
        raise later  # RQ tries again; what was attached now is skipped then
    return len(fetched)
