"""The push path splits WeChat's query string itself; it must read it exactly as Flask does."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("query", ["", "a=1", "a=1&a=2", "a&b=", "&&a=1&", "a=1=2", "x=%E4%B8%AD", "a=b+c",
                                   "signature=abc&timestamp=1714036504&nonce=123&encrypt_type=aes&msg_signature=f",
                                   "a=1;b=2", "=x", "a==", "中=文"])
def test_query_args_match_parse_qsl(query):
    from urllib.parse import parse_qsl

    from wxapp_backend.wechat.webhook import query_args

    expected: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        expected.setdefault(key, value)
    assert query_args(query) == expected
