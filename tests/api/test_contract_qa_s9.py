"""Conformance with the public contract (../shared/ARCHITECTURE.md) and README.md: shapes, names, options."""

from __future__ import annotations

import pytest

from wxapp_backend.config import ConfigError, Settings

PAGE_KEYS = {"items", "total", "page", "per_page", "pages"}


def test_every_paginated_list_answers_with_the_same_page_shape(client, make_staff, staff_headers, make_user,
                                                               user_token, make_activity):
    """The staff notice list took page/per_page but answered only {items}: a script could not tell how many
    notices there were or when to stop; the activity list and the inbox had no `pages`. Every paginated list
    now answers {items, total, page, per_page, pages}, as appeals and enterprises do."""
    headers = staff_headers(make_staff(role="staff"))
    for i in range(3):
        resp = client.post("/api/v1/staff/notices", json={"title": f"通知{i}", "summary": "摘要",
                                                          "page": "pages/index/index", "audience": {"categories": ["fitness"]}},
                           headers=headers)
        assert resp.status_code == 201, resp.get_json()
    body = client.get("/api/v1/staff/notices?per_page=2&page=2", headers=headers).get_json()
    assert PAGE_KEYS <= set(body)
    assert (body["total"], body["page"], body["per_page"], body["pages"], len(body["items"])) == (3, 2, 2, 2, 1)

    for _ in range(3):
        make_activity()
    body = client.get("/api/v1/activities?per_page=2").get_json()
    assert PAGE_KEYS <= set(body) and (body["total"], body["pages"]) == (3, 2)
    assert body["categories"]  # the list keeps what it answered before

    inbox = client.get("/api/v1/me/inbox", headers=user_token(make_user())).get_json()
    assert PAGE_KEYS <= set(inbox) and (inbox["total"], inbox["pages"], inbox["unread"]) == (0, 1, 0)


def test_wxa_state_outside_the_three_values_wechat_knows_is_refused_at_start(tmp_path):
    """README: WXA_STATE is developer, trial or formal. Anything else (a typo, "production") was taken as it
    stood and sent as every subscribe message's miniprogram_state, a value WeChat does not know. Like
    WXA_MSG_FORMAT it is now checked when the settings are built."""
    base = {"INSTANCE_PATH": str(tmp_path)}
    for bad in ("production", "release", "formal,"):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env({**base, "WXA_STATE": bad})
        assert "WXA_STATE" in str(exc.value)
    assert Settings.from_env({**base, "WXA_STATE": " Trial "}).wxa_state == "trial"
    assert Settings.from_env(base).wxa_state == "formal"


def test_kb_search_command_refuses_a_limit_the_api_would_refuse(app, app_ctx):
    """`kb search QUERY --limit 0` (or -1) was taken: the decision was worked out over no entries at all, so a
    question the bot offers choices for printed "决定：fallback" with nothing under it, telling staff the
    knowledge base had no answer. The limit is now 1-20, as GET /api/v1/kb/search?limit= takes."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    load_default_if_empty()
    runner = app.test_cli_runner()
    good = runner.invoke(args=["kb", "search", "营业执照", "--limit", "1"])
    assert good.exit_code == 0 and "fallback" not in good.output and "1. [" in good.output
    for bad in ("0", "-1", "21"):
        result = runner.invoke(args=["kb", "search", "营业执照", "--limit", bad])
        assert result.exit_code == 2 and "--limit" in result.output, (bad, result.output)
        assert "决定" not in result.output


def test_a_lifetime_timeout_or_size_of_zero_or_less_is_refused_at_start(tmp_path):
    """README gives these in seconds (or bytes). 0 or a negative number was taken: USER_TOKEN_TTL=0 made every
    mini-program login a 500 (Redis refuses a zero expiry), WECHAT_API_TIMEOUT=0 every WeChat API call (requests
    refuses a zero timeout), MAX_CONTENT_LENGTH=0 every request body a 413. They are now refused with a
    ConfigError naming the variable, as a value that is not a number already is."""
    base = {"INSTANCE_PATH": str(tmp_path)}
    for name in ("USER_TOKEN_TTL", "STAFF_TOKEN_TTL", "MAX_CONTENT_LENGTH", "WECHAT_API_TIMEOUT", "WEBHOOK_DEADLINE"):
        for bad in ("0", "-5") + (("nan", "inf") if name in {"WECHAT_API_TIMEOUT", "WEBHOOK_DEADLINE"} else ()):
            with pytest.raises(ConfigError) as exc:
                Settings.from_env({**base, name: bad})
            assert name in str(exc.value), (name, bad)
    s = Settings.from_env({**base, "USER_TOKEN_TTL": "60", "WECHAT_API_TIMEOUT": "2.5", "WEBHOOK_TIMESTAMP_WINDOW": "0"})
    assert (s.user_token_ttl, s.wechat_api_timeout, s.webhook_timestamp_window) == (60, 2.5, 0)  # 0: no window


def test_a_console_csrf_token_with_non_ascii_characters_is_a_clean_400(client, make_staff, console_login, db):
    """hmac.compare_digest raises TypeError for a str holding non-ASCII characters: a console POST whose
    csrf_token field or X-CSRF-Token header held one ("é", pasted or forged) was a 500. It is now the same
    Chinese 400 as any other wrong token, and nothing happens."""
    from wxapp_backend.auth.models import StaffUser

    admin = make_staff(role="admin")
    console_login(admin)
    for kwargs in ({"data": {"csrf_token": "é", "username": "newbie", "password": "Secret123", "role": "staff"}},
                   {"data": {"username": "newbie", "password": "Secret123", "role": "staff"},
                    "headers": {"X-CSRF-Token": "токен"}}):
        resp = client.post("/console/staff/new", **kwargs)
        assert resp.status_code == 400, resp.status_code
        assert "页面已过期" in resp.get_data(as_text=True)
    assert db.query(StaffUser).filter_by(username="newbie").count() == 0
    assert client.get("/console/").status_code == 200  # still logged in
