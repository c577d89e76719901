"""The mini-program's user API under /api/v1, second pass (QA session 12): double taps on 有用, appeal keys reused
with another body, expired logins on the open pages, number questions, and paging 我的报名."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.api.test_miniapp_qa_s12 import PNG, _uploads
from tests.integration.test_activity_races import _parallel
from wxapp_backend.knowledge_store.models import AnswerFeedback, KBEntry

VOTE_INDEX = "uq_kb_feedback_user_entry_without_turn"


# --- 1. 有用 on a search result, tapped twice at once ------------------------------------------------------

@pytest.fixture
def slow_vote_lookup(monkeypatch):
    """Widen the window between “has this user voted on this entry?” and the insert, so that the race happens
    on every run and not only on a lucky one."""
    from wxapp_backend.knowledge_store import services

    original = services.own_vote

    def slow(session, user_id, entry_id):
        found = original(session, user_id, entry_id)
        time.sleep(0.05)
        return found

    monkeypatch.setattr(services, "own_vote", slow)


def _double_taps(app, db, make_user, user_token, n=6):
    db.add(KBEntry(id="qa12-vote", question="开办企业需要多久？", answer="一般 1 个工作日内办结。"))
    db.commit()
    user = make_user()
    h = user_token(user)
    codes = _parallel(app, n, lambda c, i: c.post("/api/v1/kb/feedback", json={"entry_id": "qa12-vote",
                                                                              "useful": True}, headers=h).status_code)
    db.expire_all()
    return codes, db.query(AnswerFeedback).filter_by(user_id=user.id, entry_id="qa12-vote").count()


@pytest.mark.postgres
def test_two_useful_taps_at_once_on_a_search_result_are_one_vote(app, app_ctx, make_user, user_token, db,
                                                                 slow_vote_lookup):
    codes, votes = _double_taps(app, db, make_user, user_token)
    assert Counter(codes) == Counter({200: 6}), Counter(codes)
    assert votes == 1


@pytest.mark.postgres
def test_negative_control_without_the_index_the_taps_are_counted_twice(app, app_ctx, make_user, user_token, db,
                                                                        slow_vote_lookup):
    engine = app.extensions["wxapp"].db.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {VOTE_INDEX}")
    try:
        codes, votes = _double_taps(app, db, make_user, user_token)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM kb_feedback")
            conn.exec_driver_sql(f"CREATE UNIQUE INDEX {VOTE_INDEX} ON kb_feedback (user_id, entry_id) "
                                 "WHERE turn_id IS NULL")
    assert votes > 1, (codes, votes)  # the race the index closes


def test_one_user_has_one_vote_per_search_result_in_the_database_itself(app_ctx, make_user, db):
    """The rule holds in the schema (SQLite and PostgreSQL alike), not only in the service's look-up first; votes
    on chat turns, and votes of users since deleted (user_id NULL), are not limited by it."""
    from sqlalchemy.exc import IntegrityError

    from wxapp_backend.knowledge_store.models import ChatTurn

    db.add(KBEntry(id="qa12-vote", question="开办企业需要多久？", answer="一般 1 个工作日内办结。"))
    user = make_user()
    db.add(AnswerFeedback(entry_id="qa12-vote", user_id=user.id, useful=True))
    db.commit()
    db.add(AnswerFeedback(entry_id="qa12-vote", user_id=user.id, useful=False))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    turns = [ChatTurn(channel="api", user_id=user.id, question="开办企业", decision="answer", entry_id="qa12-vote")
             for _ in range(2)]
    db.add_all(turns)
    db.commit()
    db.add_all([AnswerFeedback(entry_id="qa12-vote", user_id=user.id, useful=True, turn_id=t.id) for t in turns])
    db.add_all([AnswerFeedback(entry_id="qa12-vote", user_id=None, useful=True) for _ in range(2)])
    db.commit()
    assert db.query(AnswerFeedback).count() == 5


def test_migration_0002_folds_votes_already_doubled_into_one(app_ctx, tmp_path):
    """A database at 0001 may already hold doubled votes (the index could not be created over them): the upgrade
    keeps each user's first vote on an entry and leaves votes on chat turns and of deleted users alone."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from wxapp_backend.cli import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            # (a plain SQLite connection does not enforce the foreign keys: no users or turns are needed)
            rows = [(1, None, "e1", 1, 1), (2, None, "e1", 1, 0), (3, None, "e1", 1, 1), (4, None, "e2", 1, 1),
                    (5, None, "e1", 2, 0), (6, 7, "e1", 1, 1), (7, 8, "e1", 1, 1), (8, None, "e1", None, 1),
                    (9, None, "e1", None, 0)]
            for row in rows:
                conn.execute(text("INSERT INTO kb_feedback (id, turn_id, entry_id, user_id, useful, created_at) "
                                  "VALUES (:i, :t, :e, :u, :y, '2026-01-01')"),
                             dict(zip("iteuy", row, strict=True)))
            command.upgrade(alembic_config(conn), "head")
            left = [r[0] for r in conn.execute(text("SELECT id FROM kb_feedback ORDER BY id"))]
            assert left == [1, 4, 5, 6, 7, 8, 9]
            with pytest.raises(Exception, match="UNIQUE"):
                with conn.begin_nested():
                    conn.execute(text("INSERT INTO kb_feedback (turn_id, entry_id, user_id, useful, created_at) "
                                      "VALUES (NULL, 'e2', 1, 0, '2026-01-01')"))
    finally:
        engine.dispose()


# --- 2. an appeal's Idempotency-Key sent again with another body -------------------------------------------

def _appeal(**kw) -> dict:
    return {"content": "园区南门的路灯坏了三天，晚上下班很黑", "contact_name": "张三", "contact_phone": "13800138000", **kw}


def test_an_appeal_key_reused_with_another_body_is_refused_not_answered_with_the_first(app, client, make_user,
                                                                                      user_token, db):
    """The page kept its Idempotency-Key after the first appeal and sent the next problem with it: the answer was
    the first appeal (200), so the second problem was silently dropped. As for registrations, the key reused for
    something else is now a 409 that says so; the same body again is still the first appeal."""
    from wxapp_backend.appeals.models import Appeal

    h = user_token(make_user())
    key = {**h, "Idempotency-Key": "appeal-tap-1"}
    first = client.post("/api/v1/appeals", json=_appeal(), headers=key)
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/v1/appeals", json=_appeal(), headers=key)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    kept = _uploads(app)
    for other in (_appeal(content="停车场入口的道闸一直抬不起来"), _appeal(contact_phone="13900139000"),
                  _appeal(contact_name="李四"), _appeal(images=[PNG]), _appeal(enterprise_name="某某科技有限公司")):
        resp = client.post("/api/v1/appeals", json=other, headers=key)
        assert resp.status_code == 409, (other, resp.get_json())
        body = resp.get_json()
        assert body["error"] == "idempotency_key_reused"
        assert "Idempotency-Key" not in body["message"] and "已用于" in body["message"], body["message"]
    assert db.query(Appeal).count() == 1
    assert _uploads(app) == kept  # the refused one's photo is not left on disk
    # The same key of another user is theirs; a new key files the second problem.
    assert client.post("/api/v1/appeals", json=_appeal(content="停车场入口的道闸一直抬不起来"),
                       headers={**user_token(make_user()), "Idempotency-Key": "appeal-tap-1"}).status_code == 201
    assert client.post("/api/v1/appeals", json=_appeal(content="停车场入口的道闸一直抬不起来"),
                       headers={**h, "Idempotency-Key": "appeal-tap-2"}).status_code == 201


def test_an_appeal_retried_with_its_key_and_photo_is_still_the_first(app, client, make_user, user_token, db):
    from wxapp_backend.appeals.models import Appeal

    key = {**user_token(make_user()), "Idempotency-Key": "appeal-photo-1"}
    first = client.post("/api/v1/appeals", json=_appeal(images=[PNG]), headers=key)
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/v1/appeals", json=_appeal(images=[PNG]), headers=key)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert db.query(Appeal).count() == 1


# --- 3. a login that has expired, on the pages open to everyone --------------------------------------------

def _open_calls(activity_id: int):
    return (("GET", "/api/v1/activities", None), ("GET", f"/api/v1/activities/{activity_id}", None),
            ("GET", "/api/v1/kb/search?q=开办企业需要什么材料", None), ("POST", "/api/v1/chat", {"text": "开办企业需要什么材料"}))


def test_an_expired_login_on_an_open_page_says_log_in_again(app, client, make_user, user_token, make_activity,
                                                             redis_client):
    """The mini-program sends its stored token with every request. Once it had expired, the activity list, the
    activity page, search and chat answered as if nobody were logged in (no 已报名, no vote on one's own answers),
    and the page never learnt it should log in again. A token that is sent and not valid is now a 401
    invalid_token with a Chinese message; without a token (or the empty one a page sends before login) the pages
    stay open to everyone."""
    a = make_activity()
    user = make_user()
    h = user_token(user)
    for method, url, body in _open_calls(a.id):
        assert client.open(url, method=method, json=body, headers=h).status_code == 200, url
    for key in redis_client.scan_iter("tok:user:*"):
        redis_client.delete(key)  # what the TTL does when it runs out
    from flask import g

    g.pop("user_auth", None)  # the test's app context outlives each request; a real one does not
    for headers in (h, {"Authorization": "Bearer forged-token-123"}):
        for method, url, body in _open_calls(a.id):
            resp = client.open(url, method=method, json=body, headers=headers)
            assert resp.status_code == 401, (url, resp.get_json())
            assert resp.get_json()["error"] == "invalid_token"
            assert "重新进入小程序" in resp.get_json()["message"], resp.get_json()
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "Bearer undefined"},
                    {"Authorization": "Bearer null"}):
        for method, url, body in _open_calls(a.id):
            resp = client.open(url, method=method, json=body, headers=headers)
            assert resp.status_code == 200, (headers, url, resp.get_json())
    detail = client.get(f"/api/v1/activities/{a.id}").get_json()
    assert "my_registration" not in detail


def test_an_expired_login_voting_on_an_answer_is_told_too(app, client, make_user, user_token, db):
    db.add(KBEntry(id="qa12-vote", question="开办企业需要多久？", answer="一般 1 个工作日内办结。"))
    db.commit()
    resp = client.post("/api/v1/kb/feedback", json={"entry_id": "qa12-vote", "useful": True},
                       headers={"Authorization": "Bearer forged-token-123"})
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_token"
    # Without a token a vote outside a chat turn still asks for a login, as before.
    resp = client.post("/api/v1/kb/feedback", json={"entry_id": "qa12-vote", "useful": True})
    assert resp.status_code == 401 and resp.get_json()["error"] == "login_required"


def test_a_staff_token_on_an_open_page_is_still_served(client, make_staff, staff_headers, make_activity):
    """A staff script that sends its own token with every request (a staff token is not a mini-program login)
    keeps reading the open pages, as before."""
    a = make_activity()
    h = staff_headers(make_staff(role="staff"))
    for method, url, body in _open_calls(a.id):
        assert client.open(url, method=method, json=body, headers=h).status_code == 200, url


# --- 4. number questions on a registration form ------------------------------------------------------------

def _register(client, aid, headers, answers):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers}, headers=headers)


def test_a_number_question_refuses_a_negative_or_huge_answer(client, new_activity, make_user, user_token):
    """随行人数 took -3 and 1e15: the roster summed them and the export showed them to staff as given."""
    aid = new_activity(capacity=10, questions=[{"key": "guests", "label": "随行人数", "type": "number"}])
    for value, says in ((-3, "随行人数不能小于 0"), (1e15, "随行人数不能大于 99999"), ("-0.5", "随行人数不能小于 0")):
        resp = _register(client, aid, user_token(make_user()), {"guests": value})
        assert resp.status_code == 422, (value, resp.get_json())
        assert resp.get_json()["fields"]["answers.guests"] == says, resp.get_json()
    ok = _register(client, aid, user_token(make_user()), {"guests": 2})
    assert ok.status_code == 201 and ok.get_json()["answers"] == {"guests": 2}


def test_staff_set_the_range_of_a_number_question(client, new_activity, make_user, user_token):
    aid = new_activity(capacity=10, questions=[
        {"key": "guests", "label": "随行人数", "type": "number", "min": 1, "max": 3, "required": True},
        {"key": "temp", "label": "体温", "type": "number", "min": 35.5, "max": 42},
        {"key": "floor", "label": "所在楼层", "type": "number", "min": -3, "max": 120}])
    detail = client.get(f"/api/v1/activities/{aid}").get_json()
    assert detail["questions"][0]["min"] == 1 and detail["questions"][0]["max"] == 3  # the page can say so
    for answers, field, says in (({"guests": 0}, "guests", "随行人数不能小于 1"),
                                 ({"guests": 4}, "guests", "随行人数不能大于 3"),
                                 ({"guests": 1, "temp": 35}, "temp", "体温不能小于 35.5"),
                                 ({"guests": 1, "floor": -4}, "floor", "所在楼层不能小于 -3")):
        resp = _register(client, aid, user_token(make_user()), answers)
        assert resp.status_code == 422, (answers, resp.get_json())
        assert resp.get_json()["fields"][f"answers.{field}"] == says, resp.get_json()
    ok = _register(client, aid, user_token(make_user()), {"guests": 3, "temp": 36.6, "floor": -2})
    assert ok.status_code == 201 and ok.get_json()["answers"] == {"guests": 3, "temp": 36.6, "floor": -2}


@pytest.mark.parametrize("question, says", [
    ({"min": 5, "max": 1}, "最小值不能大于最大值"),
    ({"min": "一"}, "min"),
    ({"max": True}, "max"),
    ({"max": 10 ** 12}, "max"),
    ({"type": "text", "max": 3}, "只有数字题"),
])
def test_a_number_question_with_a_bad_range_is_refused_when_staff_save_it(client, staff, staff_headers, question,
                                                                          says):
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(days=2)
    body = {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 2,
            "questions": [{"key": "guests", "label": "随行人数", "type": "number", **question}]}
    resp = client.post("/api/v1/staff/activities", json=body, headers=staff_headers(staff))
    assert resp.status_code == 422, resp.get_json()
    assert says in resp.get_json()["fields"]["questions"], resp.get_json()


# --- 5. 我的报名, paged -------------------------------------------------------------------------------------

def test_my_registrations_are_paged_like_every_other_list(client, make_user, user_token, make_activity, db):
    """GET /me/registrations ignored ?page / ?per_page and stopped at 200 registrations, with no total: a user with
    more (a regular of 午间一小时 over the years) could never see the oldest, and the page could not say how many."""
    from wxapp_backend.activities.models import Registration

    user = make_user()
    h = user_token(user)
    a, b = make_activity(title="午间一小时·书法"), make_activity(title="楼宇音乐会")
    db.add_all([Registration(activity_id=a.id, user_id=user.id, status="cancelled") for _ in range(204)])
    db.add(Registration(activity_id=b.id, user_id=user.id, status="confirmed", active_key=f"{b.id}:{user.id}"))
    db.commit()
    ids = [r.id for r in db.query(Registration).order_by(Registration.id.desc())]
    first = client.get("/api/v1/me/registrations", headers=h).get_json()
    assert (first["total"], first["page"], first["per_page"], first["pages"]) == (205, 1, 20, 11)
    assert [r["id"] for r in first["items"]] == ids[:20]
    assert first["items"][0]["activity"]["title"] == "楼宇音乐会"
    last = client.get("/api/v1/me/registrations?page=3&per_page=100", headers=h).get_json()
    assert [r["id"] for r in last["items"]] == ids[200:] and last["pages"] == 3
    beyond = client.get("/api/v1/me/registrations?page=12", headers=h).get_json()
    assert beyond["items"] == [] and beyond["total"] == 205
    for query, field, says in (("per_page=101", "per_page", "每页条数不能大于 100"), ("page=0", "page", "页码不能小于 1"),
                               ("page=abc", "page", "页码应为整数")):
        resp = client.get(f"/api/v1/me/registrations?{query}", headers=h)
        assert resp.status_code == 422 and resp.get_json()["fields"][field] == says, resp.get_json()
    # Someone else's list is their own.
    other = client.get("/api/v1/me/registrations", headers=user_token(make_user())).get_json()
    assert other["items"] == [] and other["total"] == 0
    spec = client.get("/api/v1/openapi.json").get_json()["paths"]["/api/v1/me/registrations"]["get"]
    assert {p["name"] for p in spec["parameters"]} >= {"page", "per_page"}


# --- registrations: the same key with other answers (found on the way) --------------------------------------

def test_a_registration_key_reused_with_other_answers_is_refused_in_chinese(client, make_user, user_token,
                                                                           make_activity, db):
    """The registration's key, sent again with other answers (随行人数 1, then 3), answered with the first
    registration and its old answers (200): the change was silently lost. Like an appeal's key, it is now a 409
    that says so in Chinese (the message for another activity named the header “Idempotency-Key”); the same
    answers again are still the first registration."""
    from wxapp_backend.activities.models import Registration

    a, b = make_activity(questions=[{"key": "guests", "label": "随行人数", "type": "number"}]), make_activity()
    h = {**user_token(make_user()), "Idempotency-Key": "reg-tap-1"}
    first = _register(client, a.id, h, {"guests": 1})
    assert first.status_code == 201, first.get_json()
    again = _register(client, a.id, h, {"guests": 1.0})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    for aid, answers in ((a.id, {"guests": 3}), (a.id, {}), (b.id, {})):
        resp = _register(client, aid, h, answers)
        assert resp.status_code == 409, (aid, answers, resp.get_json())
        body = resp.get_json()
        assert body["error"] == "idempotency_key_reused" and "Idempotency-Key" not in body["message"], body
        assert "已用于" in body["message"]
    assert db.query(Registration).one().answers == {"guests": 1}
