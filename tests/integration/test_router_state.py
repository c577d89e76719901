"""Conversation state: per-user JSON in Redis with a TTL, safe under concurrent messages."""

from __future__ import annotations

import threading
import time

from handlers import state


def _hammer(fn, n=8):
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_get_set_clear_and_ttl(redis_client):
    assert state.get(redis_client, "oa", "oS1") == {}
    state.set(redis_client, "oa", "oS1", {"flow": "appeal", "step": 1}, ttl=60)
    assert state.get(redis_client, "oa", "oS1") == {"flow": "appeal", "step": 1}
    assert 0 < redis_client.ttl(state.state_key("oa", "oS1")) <= 60
    assert state.get(redis_client, "wxa", "oS1") == {}  # accounts are separate
    state.clear(redis_client, "oa", "oS1")
    assert state.get(redis_client, "oa", "oS1") == {}


def test_merge_and_empty_update_deletes(redis_client):
    s = state.ConversationState(redis_client, "oa", "oS2")
    s.merge(flow="appeal", step=1)
    s.merge(step=2, extra=None)
    assert s.get() == {"flow": "appeal", "step": 2}
    s.update(lambda d: {})
    assert redis_client.exists(state.state_key("oa", "oS2")) == 0


def _slow_increment(d):
    n = d.get("n", 0)
    time.sleep(0.005)  # widen the read-modify-write window
    d["n"] = n + 1
    return d


def test_concurrent_updates_are_not_lost(redis_client):
    s = state.ConversationState(redis_client, "oa", "oS3")
    _hammer(lambda: [s.update(_slow_increment) for _ in range(5)])
    assert s.get()["n"] == 40


def test_negative_control_naive_read_modify_write_loses_updates(redis_client):
    s = state.ConversationState(redis_client, "oa", "oS4")

    def naive():
        for _ in range(5):
            s.set(_slow_increment(s.get()))

    _hammer(naive)
    assert s.get()["n"] < 40  # the race the test above would catch
