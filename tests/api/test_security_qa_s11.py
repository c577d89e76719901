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


# --- 2. /metrics can be closed with METRICS_TOKEN -----------------------------------------------------------

_metrics_apps: dict = {}


def _metrics_app(settings, token: str):
    from wxapp_backend import create_app

    if token not in _metrics_apps:
        _metrics_apps[token] = create_app(settings.with_overrides(metrics_token=token))
    return _metrics_apps[token]


def test_metrics_token_is_read_from_the_environment_and_never_shown(tmp_path):
    from wxapp_backend.config import Settings

    token = "metrics-" + "x" * 24
    s = Settings.from_env({"INSTANCE_PATH": str(tmp_path), "METRICS_TOKEN": f"  {token} "})
    assert s.metrics_token == token
    assert s.describe()["metrics_token"] == "***"
    assert token in s.secret_values()  # redacted from every log line
    assert Settings.from_env({"INSTANCE_PATH": str(tmp_path)}).metrics_token == ""


def test_metrics_stay_open_without_a_token(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200 and b"# TYPE" in resp.data


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong-token", "Basic bWV0cmljczp4",
                                    "Bearer s3cret-metrics-token-xyz ", "Bearer 令牌", "s3cret-metrics-token-xyz"])
def test_metrics_need_the_bearer_token_when_one_is_set(app, settings, header):
    """/metrics named every endpoint with its traffic, the queue's depth and whether the database and Redis were
    up, to anyone on the internet: a scraper's token can now close it."""
    a = _metrics_app(settings, "s3cret-metrics-token-xyz")
    headers = {} if header is None else {"Authorization": header}
    resp = a.test_client().get("/metrics", headers=headers)
    if header == "Bearer s3cret-metrics-token-xyz ":  # surrounding space, as a header may carry
        assert resp.status_code == 200
        return
    assert resp.status_code == 401, (header, resp.status_code)
    body = resp.get_json()
    assert body["error"] == "unauthorized" and "令牌" in body["message"]
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert b"# TYPE" not in resp.data


def test_metrics_answer_the_right_token(app, settings):
    a = _metrics_app(settings, "s3cret-metrics-token-xyz")
    resp = a.test_client().get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token-xyz"})
    assert resp.status_code == 200 and b"# TYPE" in resp.data
    assert resp.content_type.startswith("text/plain")


@pytest.mark.parametrize("token", ["short", "x" * 15, "has a space in it 123", "令牌令牌令牌令牌令牌令牌令牌令牌"])
def test_a_metrics_token_that_could_be_guessed_or_never_sent_stops_the_start(tmp_path, token):
    """/metrics answers wrong tokens as fast as it likes: a short token would be guessed; one with a space or
    non-ASCII characters cannot go into a header as it is written."""
    from wxapp_backend.config import ConfigError, Settings

    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"INSTANCE_PATH": str(tmp_path), "METRICS_TOKEN": token})
    assert "METRICS_TOKEN" in str(exc.value) and token not in str(exc.value)


# --- 3. console sessions ---------------------------------------------------------------------------------------

def _login_form(client, staff):
    import re

    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": token})


def test_logging_in_over_a_live_console_session_ends_that_session(client, make_staff, console_login):
    """On a shared office PC the next person logs in over the last one's session: the browser forgot the old login
    but it stayed live in Redis for its 12 hours, so a copy of that cookie (another profile, a proxy log) went on
    working as the earlier account, as a logout would have ended it."""
    admin, clerk = make_staff(role="admin"), make_staff(role="dept")
    console_login(admin)
    copied = client.get_cookie("wxapp_console").value
    assert _login_form(client, clerk).status_code == 302
    assert client.get("/console/").status_code == 200  # the new login works
    client.set_cookie("wxapp_console", copied)
    resp = client.get("/console/jobs")
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]


def test_a_failed_login_leaves_the_live_session_alone(client, make_staff, console_login):
    """Only a login that succeeds replaces the session: a mistyped password on the login page does not log out
    whoever is logged in."""
    import re

    admin = make_staff(role="admin")
    console_login(admin)
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/console/login", data={"username": admin.username, "password": "wrong-pass-1",
                                                "csrf_token": token})
    assert resp.status_code == 401
    assert client.get("/console/jobs").status_code == 200


# --- 4. roles on every console page and staff API route ------------------------------------------------------

def _filled(rule: str) -> str:
    import re

    url = re.sub(r"<any\(([a-z_]+)[^>]*>", r"\1", rule)  # the first choice of an <any(...)> segment
    url = re.sub(r"<int:[^>]+>", "1", url)
    return re.sub(r"<[^>]+>", "x", url)


def test_every_staff_route_checks_the_role_it_declares(app, client, make_staff, staff_headers, console_login):
    """Every console page and /api/v1/staff route names its least role (console_required / staff_api_required),
    and a department or staff account below it gets 403 on every method, before anything is looked up (ids that
    do not exist: a 404 would mean the role was checked after the lookup, or not at all)."""
    from wxapp_backend.auth.models import ROLE_RANK, StaffRole

    open_doors = {"console.login", "console.logout", "auth_api.staff_login"}
    routes = [r for r in app.url_map.iter_rules()
              if r.rule.startswith(("/console", "/api/v1/staff")) and r.endpoint not in open_doors]
    undeclared = [r.rule for r in routes if getattr(app.view_functions[r.endpoint], "__staff_role__", None) is None]
    assert not undeclared, undeclared
    problems, tried = [], 0
    for role in (StaffRole.DEPT, StaffRole.STAFF):
        account = make_staff(role=role)
        csrf = console_login(account)
        bearer = staff_headers(account)
        for rule in routes:
            need = app.view_functions[rule.endpoint].__staff_role__
            if ROLE_RANK[StaffRole(need)] <= ROLE_RANK[role] or rule.endpoint == "auth_api.staff_logout":
                continue
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                url = _filled(rule.rule)
                if url.startswith("/console"):
                    resp = client.open(url, method=method, data=None if method == "GET" else {"csrf_token": csrf})
                else:
                    resp = client.open(url, method=method, headers=bearer, json=None if method == "GET" else {})
                tried += 1
                if resp.status_code != 403:
                    problems.append(f"{role} {method} {url} (needs {need}): {resp.status_code}")
    assert tried >= 80
    assert not problems, "\n".join(problems)
