"""QA of the bot's conversation state (thirteenth pass, seventh look): two messages from the same user at the same
moment, through the real webhook. Each message's route was decided from the state its claim read, and the handlers
read-modified-wrote the state with nothing between them: the later message acted on a state the earlier one had
already changed (the rating's comment lost, the menu not setting a draft aside)."""

from __future__ import annotations

import threading

from handlers import appeal_intake
from handlers.appeal_followup import ASK_COMMENT
from handlers.state import get as state_get
from tests.integration.test_chat2_qa_s11 import (  # noqa: F401  (a follower's appeal, acted on by staff)
    _rating_of,
    appeal_of,
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)

WAIT = 1.5  # how long a paused handler waits for the other message before it goes on (it must not hang)
ARRIVE = 15  # how long a message waits for the other one to reach the moment it is sent at (a busy machine)


class _Together:
    """Both pushes claimed (their state read: the claim is the webhook's first Redis round trip) before either is
    handled: the webhook's `_run` waits at a barrier. Then the push with a text in `later` waits for its event (at
    most ARRIVE): it is handled a moment after the other one."""

    def __init__(self, application, later: dict[str, threading.Event], parties: int = 2) -> None:
        self.pipeline = application.extensions["wxapp_pipeline"]
        self.barrier = threading.Barrier(parties, timeout=10)
        self.later = later
        self._run = self.pipeline._run

    def __enter__(self):
        def run(msg, deadline, prefetched=None):
            self.barrier.wait()
            if msg.content in self.later:
                assert self.later[msg.content].wait(ARRIVE), "the other message never got there"
            return self._run(msg, deadline, prefetched)

        self.pipeline._run = run
        return self

    def __exit__(self, *exc):
        del self.pipeline._run  # the class's method again


def _both(first, second) -> tuple[str, str]:
    """Run first() and second() in two threads; their results."""
    out: dict[str, str] = {}
    errors: list[BaseException] = []

    def go(name, fn):
        try:
            out[name] = fn()
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=go, args=("a", first)), threading.Thread(target=go, args=("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out["a"], out["b"]


def _to_comment_step(application, appeal_of, openid: str) -> str:  # noqa: F811
    number = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    assert "解决了吗" in say(application, openid, "评价")
    say(application, openid, "1")
    assert ASK_COMMENT in say(application, openid, "5")
    return number


def _comment_waits_for_skip(monkeypatch, skip_done: threading.Event, comment_saving: threading.Event,
                            comment: str = "很好") -> None:
    """The rating with the comment pauses just before it is saved until the other message has been answered (or
    WAIT passed): the moment “跳过” sent at the same time is handled."""
    from wxapp_backend.appeals import services

    real = services.rate

    def rate(session, user_id, appeal_id, **kw):
        if kw.get("comment") == comment:
            comment_saving.set()
            skip_done.wait(WAIT)
        return real(session, user_id, appeal_id, **kw)

    monkeypatch.setattr(services, "rate", rate)


def test_a_comment_and_skip_at_the_same_moment_keep_the_comment(oa_kb, appeal_of, monkeypatch):  # noqa: F811
    """At “还有什么想对我们说的吗”, “很好” and then “跳过” at once (a quick double tap): both messages read the comment step,
    “跳过” rated the appeal without a comment while “很好” was being saved, and “很好” got “评价没有提交：…” — the comment
    lost, the user told their rating failed. One message of a user now goes through its flow step at a time, on the
    state the one before left: the comment is saved and “跳过” finds the rating done."""
    openid = "oChat7Skip"
    number = _to_comment_step(oa_kb, appeal_of, openid)
    skip_done, comment_saving = threading.Event(), threading.Event()
    _comment_waits_for_skip(monkeypatch, skip_done, comment_saving)

    def skip():
        try:
            return say(oa_kb, openid, "跳过")
        finally:
            skip_done.set()

    with _Together(oa_kb, {"跳过": comment_saving}):  # handled while “很好” is being saved
        commented, skipped = _both(lambda: say(oa_kb, openid, "很好"), skip)
    assert "评价没有提交" not in commented and "评价没有提交" not in skipped, (commented, skipped)
    assert "感谢您的评价" in commented and number in commented, commented
    assert f"您对诉求 {number} 的评价已经收到了" in skipped, skipped
    rating = _rating_of(number)
    assert rating is not None and rating.comment == "很好" and rating.satisfaction == 5, rating
    assert state_get(oa_kb.extensions["wxapp"].redis, "oa", openid) == {}


def test_skip_just_after_the_rating_was_saved_says_so(oa_kb, appeal_of):  # noqa: F811
    """“跳过” once the rating is saved (the comment sent with it took the comment step, or a double tap) got “小二这边没有
    您正在填写的诉求，也没有提交任何内容”, to someone whose rating had just been saved. It now says the rating is in."""
    openid = "oChat7SkipAfter"
    number = _to_comment_step(oa_kb, appeal_of, openid)
    assert "感谢您的评价" in say(oa_kb, openid, "跳过")
    reply = say(oa_kb, openid, "跳过")
    assert f"您对诉求 {number} 的评价已经收到了" in reply and "没有提交" not in reply, reply
    assert "没有您正在填写的诉求" in say(oa_kb, "oChat7NeverRated", "跳过")  # control: nothing rated, as before


def test_control_two_users_are_not_serialised(oa_kb, appeal_of, monkeypatch):  # noqa: F811
    """Negative control: the one-at-a-time is per user. Two users' comments are saved at the same moment (each rating
    waits until the other one is being saved: a lock shared by all users would keep them apart and fail it)."""
    first, second = "oChat7Both1", "oChat7Both2"
    numbers = [_to_comment_step(oa_kb, appeal_of, openid) for openid in (first, second)]
    from wxapp_backend.appeals import services

    real = services.rate
    inside = threading.Barrier(2, timeout=6)  # less than state.LOCK_WAIT: a shared lock cannot get through

    def rate(session, user_id, appeal_id, **kw):
        inside.wait()  # both inside at once, or BrokenBarrierError
        return real(session, user_id, appeal_id, **kw)

    monkeypatch.setattr(services, "rate", rate)
    with _Together(oa_kb, {}):
        a, b = _both(lambda: say(oa_kb, first, "很好"), lambda: say(oa_kb, second, "很好"))
    assert "抱歉" not in a and "抱歉" not in b, (a, b)
    assert [_rating_of(n).comment for n in numbers] == ["很好", "很好"]


def test_the_menu_at_the_moment_an_intake_starts_sets_the_draft_aside(oa_kb, monkeypatch):  # noqa: F811
    """“我要反映” and “菜单” at once: both read “no conversation”, the menu answered as if there were none while the draft
    was being opened, so the draft stayed open and the user's next “2” (the menu's 2) became the problem described.
    The menu now meets the draft “我要反映” opened and sets it aside, as it does one opened earlier."""
    openid = "oChat7Menu"
    say(oa_kb, openid, "你好")
    started, menu_done = threading.Event(), threading.Event()
    real = appeal_intake._new_draft

    def new_draft(ctx, content=""):
        started.set()
        menu_done.wait(WAIT)  # the menu is handled while the draft is being opened
        return real(ctx, content)

    monkeypatch.setattr(appeal_intake, "_new_draft", new_draft)

    def menu():
        try:
            return say(oa_kb, openid, "菜单")
        finally:
            menu_done.set()

    with _Together(oa_kb, {"菜单": started}):  # handled while the draft is being opened
        opened, menu_reply = _both(lambda: say(oa_kb, openid, "我要反映"), menu)
    assert "登记诉求" in opened, opened
    assert "已为您保留" in menu_reply and "继续" in menu_reply, menu_reply
    draft = state_get(oa_kb.extensions["wxapp"].redis, "oa", openid)
    assert draft.get("paused") is True, draft
    reply = say(oa_kb, openid, "2")
    assert "content" not in state_get(oa_kb.extensions["wxapp"].redis, "oa", openid), reply
    assert "第 2 步" not in reply and "（第 1 步）" not in reply, reply


def test_control_menu_after_the_intake_started_sets_it_aside(oa_kb):  # noqa: F811
    """Negative control: one after the other (no race) the menu sets the draft aside and “2” is the menu's 2."""
    openid = "oChat7MenuAfter"
    say(oa_kb, openid, "你好")
    assert "登记诉求" in say(oa_kb, openid, "我要反映")
    assert "已为您保留" in say(oa_kb, openid, "菜单")
    say(oa_kb, openid, "2")
    assert "content" not in state_get(oa_kb.extensions["wxapp"].redis, "oa", openid)


def test_a_greeting_is_still_answered_from_the_claim(oa_kb, monkeypatch):  # noqa: F811
    """The hot path stays as it was: a greeting of a known user with no conversation is answered by the claim itself
    (one Redis round trip), no handler runs and so no per-user lock is taken."""
    openid = "oChat7Hello"
    say(oa_kb, openid, "你好")  # the user is known (cached) from now on
    pipeline = oa_kb.extensions["wxapp_pipeline"]
    ran = []
    monkeypatch.setattr(pipeline, "_run", lambda *a, **k: ran.append(a))
    assert "您好" in say(oa_kb, openid, "你好")
    assert ran == []


def test_step_lock_is_per_user_reentrant_and_never_hangs(redis_client):
    """The lock itself: a nested step of the same thread does not wait for itself; a lock left by a process that died
    is waited for at most `wait` (and expires by itself); it is released for the next message."""
    from handlers import state

    redis_client.set(state.state_key("oa", "oLock"), '{"flow":"x"}')
    with state.step_lock(redis_client, "oa", "oLock") as raw:
        assert state._load(raw) == {"flow": "x"}  # read in the same round trip as the lock
        with state.step_lock(redis_client, "oa", "oLock", wait=5) as inner:
            assert inner is state._NO_SNAPSHOT
        held_elsewhere = []
        t = threading.Thread(target=lambda: held_elsewhere.append(
            state.step_lock(redis_client, "oa", "oLock", wait=0.1).__enter__()))
        t.start()
        t.join()
        assert state._load(held_elsewhere[0]) == {"flow": "x"}  # another thread waited 0.1 s, then went on reading
        assert redis_client.exists(state.lock_key("oa", "oLock"))
    assert not redis_client.exists(state.lock_key("oa", "oLock"))
    redis_client.set(state.lock_key("oa", "oDead"), "gone", ex=state.LOCK_TTL)  # its holder died
    with state.step_lock(redis_client, "oa", "oDead", wait=0.1) as raw:
        assert raw is None  # went on without it, the state read all the same
