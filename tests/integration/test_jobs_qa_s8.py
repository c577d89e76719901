"""QA session 8, background jobs: retries that must not spend twice, transient failures that must be retried."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.db import session_scope
from wxapp_backend.wechat.client import WeChatAPIError
from wxapp_backend.wechat.jobs import open_window, window_key

CUSTOM = "/cgi-bin/message/custom/send"
MEDIA = "/cgi-bin/media/get"


@pytest.fixture(autouse=True)
def _no_backoff(app_ctx, monkeypatch):
    """Busy (-1) retries inside a call without waiting."""
    from wxapp_backend.wechat import client

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))


# --------------------------------------------------------------------------- late replies (客服消息)

def test_a_retried_late_reply_spends_one_window_slot(app_ctx, standin):
    """WeChat busy, then the RQ retry sends it: one message went out, so one of the user's 5 sends is spent
    (each retry used to take another slot: three busy answers left the user one late reply and no
    notification)."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oRetry", kind="message")
    text = {"msgtype": "text", "text": {"content": "稍等，答案来了"}}
    standin.fail_next(CUSTOM, -1, times=3)  # the call's own busy backoff is used up: the job raises
    with pytest.raises(WeChatAPIError):
        wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0")
    assert wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0") == "sent"  # the RQ retry
    assert int(r.hget(window_key("wxa", "oRetry"), "sent")) == 1
    assert wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0") == "already_sent"


def test_different_late_replies_each_spend_a_slot(app_ctx, standin):
    """Control: the slot is kept per send, not per user."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oTwo", kind="message")
    text = {"msgtype": "text", "text": {"content": "答案"}}
    assert wechat_jobs.send_customer_message("wxa", "oTwo", text, "wxa-two-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oTwo", text, "wxa-two-1") == "sent"
    assert int(r.hget(window_key("wxa", "oTwo"), "sent")) == 2


# --------------------------------------------------------------------------- chat photos of an appeal

def _chat_appeal(user, media: list[str]) -> int:
    from wxapp_backend.appeals import intake

    draft = {"id": "qa-draft-1", "content": "楼道里堆满了垃圾，已经一周了", "contact_name": "张三",
             "contact_phone": "13800138000", "media": media}
    with session_scope() as s:
        return intake.submit_from_chat(s, user.id, draft, account="oa").id


def _photos(appeal_id: int) -> tuple[list[str], list[str]]:
    from wxapp_backend.appeals.models import Appeal, AppealEvent

    with session_scope() as s:
        images = [i["media_id"] for i in s.get(Appeal, appeal_id).images or []]
        notes = list(s.scalars(select(AppealEvent.note).where(AppealEvent.appeal_id == appeal_id,
                                                              AppealEvent.action == "photos_attached")))
    return images, notes


def test_a_photo_whose_download_fails_for_now_is_fetched_by_the_retry(app_ctx, make_user, standin, run_jobs):
    """WeChat busy on one photo: the job is retried (it is enqueued with retries) instead of telling the
    enterprise the photo could not be fetched and dropping it; the photo that came is kept at once."""
    from rq.registry import ScheduledJobRegistry

    from wxapp_backend.appeals.jobs import fetch_chat_images

    user = make_user()
    standin.fail_next(MEDIA, -1, times=3)  # MEDIA-A: busy, after the call's own backoff too
    appeal_id = _chat_appeal(user, ["MEDIA-A", "MEDIA-B"])
    assert run_jobs() == 1
    assert _photos(appeal_id) == (["MEDIA-B"], ["对话中发送的照片已保存 1 张"])
    queue = app_ctx.extensions["wxapp"].queue
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [f"appeal-{appeal_id}-chat-images"]
    assert fetch_chat_images(appeal_id, "oa", ["MEDIA-A", "MEDIA-B"]) == 1  # the retry
    images, notes = _photos(appeal_id)
    assert images == ["MEDIA-B", "MEDIA-A"] and len(notes) == 2 and not any("未能获取" in n for n in notes)


def test_on_the_last_try_a_failed_photo_is_recorded(app_ctx, make_user, standin, run_jobs):
    """Control: with no retry left the job ends, and the enterprise is told which photos did not come."""
    from rq.registry import ScheduledJobRegistry

    from wxapp_backend.queue import enqueue

    user = make_user()
    appeal_id = _chat_appeal(user, [])
    standin.fail_next(MEDIA, -1, times=3)
    enqueue("wxapp_backend.appeals.jobs.fetch_chat_images", appeal_id, "oa", ["MEDIA-A", "MEDIA-B"])
    assert run_jobs() == 1
    assert _photos(appeal_id) == (["MEDIA-B"], ["对话中发送的照片已保存 1 张，1 张未能获取"])
    assert ScheduledJobRegistry(queue=app_ctx.extensions["wxapp"].queue).count == 0


def test_an_expired_photo_is_recorded_at_once(app_ctx, make_user, standin, run_jobs):
    """A refusal (40007: the media id expired) is not retried: the others are kept and the loss is told."""
    from rq.registry import ScheduledJobRegistry

    user = make_user()
    appeal_id = _chat_appeal(user, ["invalid-MEDIA-A", "MEDIA-B"])
    assert run_jobs() == 1
    assert _photos(appeal_id) == (["MEDIA-B"], ["对话中发送的照片已保存 1 张，1 张未能获取"])
    assert ScheduledJobRegistry(queue=app_ctx.extensions["wxapp"].queue).count == 0
