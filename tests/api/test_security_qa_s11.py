"""Security review, session 11: defects found attacking the public API and the console, each test failing without
its fix."""

from __future__ import annotations

import pytest

from wxapp_backend.knowledge_store.models import AnswerFeedback

COVERED = "外籍人才工作许可怎么办"  # answered by the default knowledge base


@pytest.fixture
def kb(app_ctx):
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    load_default_if_empty()


def _ask(client, text=COVERED, headers=None):
    resp = client.post("/api/v1/chat", json={"text": text}, headers=headers or {})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["decision"] == "answer" and body["turn_id"], body
    return body


def _vote(client, turn, headers=None, **extra):
    return client.post("/api/v1/kb/feedback", headers=headers or {},
                       json={"entry_id": turn["entry_id"], "useful": False, "turn_id": turn["turn_id"], **extra})


# --- 1. votes on chat turns belong to whoever got the answer --------------------------------------------------

def test_an_anonymous_chat_turn_cannot_be_voted_on_by_whoever_guesses_its_id(client, kb, db, make_user, user_token):
    """Turn ids are sequential and an anonymous turn took a vote from anyone: a script walked the ids and voted
    every answer 没用, moving the 有用 share the staff judge the knowledge base by. Now the answer comes with an
    unguessable vote_token, and a vote on an anonymous turn needs it."""
    turn = _ask(client)
    assert isinstance(turn.get("vote_token"), str) and len(turn["vote_token"]) >= 20, turn
    guessed = _vote(client, turn)  # the id alone, anonymous
    assert guessed.status_code == 404, guessed.get_json()
    assert _vote(client, turn, headers=user_token(make_user())).status_code == 404  # logged in is no better
    forged = _vote(client, turn, vote_token=turn["vote_token"][:-2] + ("AA" if turn["vote_token"][-2:] != "AA"
                                                                       else "BB"))
    assert forged.status_code == 404
    other = _ask(client)  # a token is good for its own turn only
    assert _vote(client, turn, vote_token=other["vote_token"]).status_code == 404
    assert db.query(AnswerFeedback).count() == 0
    mine = _vote(client, turn, vote_token=turn["vote_token"])
    assert mine.status_code == 200, mine.get_json()
    assert [(f.turn_id, f.useful) for f in db.query(AnswerFeedback)] == [(turn["turn_id"], False)]


def test_a_logged_in_users_turn_takes_votes_from_that_user_only(client, kb, db, make_user, user_token):
    owner, other = user_token(make_user()), user_token(make_user())
    turn = _ask(client, headers=owner)
    assert turn.get("vote_token") is None  # the login is the proof: no token to leak
    assert _vote(client, turn, headers=other).status_code == 404
    assert _vote(client, turn).status_code == 404
    assert _vote(client, turn, headers=owner).status_code == 200
    assert db.query(AnswerFeedback).count() == 1


def test_an_anonymous_vote_needs_a_turn(client, kb, db):
    """Without a turn an anonymous vote was counted every time (30 a minute from each address): leaving the turn
    id out was the way around binding votes to turns. A vote on a search result needs a login (one per entry)."""
    resp = client.post("/api/v1/kb/feedback", json={"entry_id": "talent-foreign-work-permit", "useful": False})
    assert resp.status_code == 401, resp.get_json()
    assert "登录" in resp.get_json()["message"]
    assert db.query(AnswerFeedback).count() == 0
