"""Chat photos survive a lost job: the appeal records the photos due (a photos_pending event) in the transaction
that saves it, and the SLA tick's sweep fetches what is neither attached nor given up when no job is on its way.
Before, the media ids lived only in the job's arguments: an enqueue that failed after the commit (Redis down) or a
job Redis lost took the photos with it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from wxapp_backend import queue as queue_mod
from wxapp_backend.appeals import jobs
from wxapp_backend.appeals.intake import submit_from_chat
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.db import session_scope, utcnow

MEDIA_GET = "/cgi-bin/media/get"


@pytest.fixture
def submit(app_ctx, make_user, monkeypatch):
    user = make_user()

    def run(media: list[str], *, lose_the_job: bool = False, draft_id: str = "d1") -> int:
        if lose_the_job:
            def redis_down(*args, **kwargs):
                raise ConnectionError("Redis is down")
            monkeypatch.setattr(queue_mod, "enqueue", redis_down)
        with session_scope() as s:
            appeal = submit_from_chat(s, user.id, {"id": draft_id, "content": "楼道里堆满了垃圾，已经一周了",
                                                   "contact_name": "张三", "contact_phone": "13800138000",
                                                   "media": media}, account="oa")
            appeal_id = appeal.id
        monkeypatch.undo()
        return appeal_id

    return run


def _media(appeal_id: int) -> list[str]:
    with session_scope() as s:
        return [i["media_id"] for i in s.get(Appeal, appeal_id).images or []]


def test_photos_whose_job_was_lost_are_fetched_by_the_sweep(submit, run_jobs, standin, app):
    appeal_id = submit(["MEDIA-A", "MEDIA-B"], lose_the_job=True)
    assert run_jobs() == 0 and _media(appeal_id) == []  # the enqueue after the commit failed
    assert jobs.sweep_chat_photos(utcnow() + timedelta(minutes=5)) == 0  # a job may still be on its way
    later = utcnow() + timedelta(minutes=20)
    assert jobs.tick(now=later)["photos"] == 1
    assert run_jobs() == 1
    assert sorted(_media(appeal_id)) == ["MEDIA-A", "MEDIA-B"]
    assert jobs.sweep_chat_photos(later) == 0  # nothing left to fetch
    assert jobs.sweep_chat_photos(utcnow() + timedelta(days=4)) == 0  # WeChat no longer keeps them anyway


def test_the_sweep_leaves_a_job_on_its_way_and_photos_given_up_alone(submit, run_jobs, standin, app):
    later = utcnow() + timedelta(minutes=20)
    queued = submit(["MEDIA-Q"], draft_id="d-queued")
    assert jobs.sweep_chat_photos(later) == 0  # its own job is still queued: no second run
    run_jobs()
    assert _media(queued) == ["MEDIA-Q"]

    standin.fail_next(MEDIA_GET, 40007, times=5)  # invalid media_id: expired, never retried
    given_up = submit(["MEDIA-X"], draft_id="d-expired")
    run_jobs()
    assert _media(given_up) == []
    with session_scope() as s:
        ev = s.scalar(select(AppealEvent).where(AppealEvent.appeal_id == given_up,
                                                AppealEvent.action == "photos_attached"))
        assert ev.data["not_fetched"] == ["MEDIA-X"] and "1 张未能获取" in ev.note
    assert jobs.sweep_chat_photos(later) == 0  # recorded as not fetched: not asked for again
