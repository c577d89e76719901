"""Small-talk detection tests."""

from __future__ import annotations

import pytest

from knowledge.smalltalk import detect_smalltalk, is_greeting, is_thanks, wants_human


@pytest.mark.parametrize(
    "text", ["你好", "您好！", "在吗？", "在不在", "hello", "Hi~", "哈喽", "你好，在吗", "早上好"]
)
def test_greetings(text: str) -> None:
    assert detect_smalltalk(text) == "greeting" and is_greeting(text)


@pytest.mark.parametrize(
    "text", ["谢谢", "多谢！", "thx", "Thanks!", "好的，谢谢", "謝謝", "谢谢啦😀", "辛苦了"]
)
def test_thanks(text: str) -> None:
    assert detect_smalltalk(text) == "thanks" and is_thanks(text)


@pytest.mark.parametrize(
    "text", ["人工", "转人工", "找客服", "真人", "我要人工客服", "客服", "能不能转人工服务"]
)
def test_handoff(text: str) -> None:
    assert detect_smalltalk(text) == "handoff" and wants_human(text)


@pytest.mark.parametrize(
    "text",
    [
        "人工智能企业有什么补贴",
        "你好，我想问一下落户需要什么条件",
        "谢谢你们上次帮我们办的营业执照，这次想问问社保",
        "",
        "   ",
        "😀",
        None,
        "x" * 5000,
        "<script>alert(1)</script>",
    ],
)
def test_not_smalltalk(text: str | None) -> None:
    assert detect_smalltalk(text) is None
