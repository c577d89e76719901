"""Inputs the fuzzers do not make: JSON that parses but is no text (lone surrogates), nesting beyond the parser,
and the like. Each must be a 4xx with a Chinese message and leave the stored data as it was."""

from __future__ import annotations

import re

from sqlalchemy import select

from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope

_HAN = re.compile(r"[\u4e00-\u9fff]")


def _post_raw(client, method: str, path: str, body: str, headers: dict) -> object:
    return client.open(path, method=method, data=body.encode("utf-8"),
                       headers={**headers, "Content-Type": "application/json"})


def _assert_clean_4xx(resp, status: int = 400) -> None:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    data = resp.get_json()
    assert {"error", "message", "fields"} <= set(data) and _HAN.search(data["message"]), data


def test_lone_surrogate_in_json_is_400_and_changes_nothing(client, make_user, user_token):
    """"\\ud800" is legal JSON but no UTF-8 text: it reached the database (UnicodeEncodeError, a 500) and
    WeChat's jscode2session call (a 500)."""
    user = make_user(openid="surrogate-user", nickname="小王")
    headers = user_token(user)
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "\\ud800"}', headers))
    _assert_clean_4xx(_post_raw(client, "POST", "/api/v1/auth/login", '{"code": "a\\udc00b"}', {}))
    # in a key, nested, or in a list: the same
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小李", "\\ud800": 1}', headers))
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小李", "x": [{"y": "\\udfff"}]}',
                                headers))
    with session_scope() as s:
        assert s.scalars(select(User.nickname).where(User.id == user.id)).one() == "小王"
    # a proper pair is one emoji, and welcome
    resp = _post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小王\\ud83d\\ude00"}', headers)
    assert resp.status_code == 200 and resp.get_json()["nickname"] == "小王\U0001f600"


def test_json_nested_beyond_the_parser_is_400(client, make_user, user_token):
    """200 000 "[" fit well within the body limit but are deeper than the parser recurses: it was a 500."""
    headers = user_token(make_user(openid="deep-user"))
    deep = "[" * 200_000 + "]" * 200_000
    _assert_clean_4xx(_post_raw(client, "POST", "/api/v1/chat", deep, headers))
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": ' + deep + "}", headers))
