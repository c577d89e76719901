"""QA of the chat (nineteenth pass, revchat), through the real (signed, encrypted) webhook and POST /api/v1/chat: a
greeting addressed to 小二, a long enterprise name in the appeal intake, a queue question with “|” added as a
phrasing, and the waitlist as the chat's activity detail tells it."""

from __future__ import annotations

from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatsmall_qa_s18 import _warm_index  # noqa: F401  (the index built first)

# ---------------------------------------------------------------------------------------------- 1. greetings

ADDRESSED = ("你好小二", "小二你好", "您好，小二", "hi 小二", "在吗小二", "小二在吗", "你好呀小二", "店小二你好", "小二")


def test_a_greeting_addressed_to_xiaoer_reads_as_a_bare_greeting(oa_kb, client, user_token, make_user):  # noqa: F811
    """“你好” got “您好！我是数字店小二，有什么可以帮您？…” (the router's fixed words), “你好小二” / “小二你好” / “hi 小二”
    another introduction (the knowledge base's small talk): two voices for one hello. One greeting now, both chats."""
    bare = say(oa_kb, "oRevchatHello", "你好")
    assert bare, bare
    for i, text in enumerate(ADDRESSED):
        assert say(oa_kb, f"oRevchatHello{i}", text) == bare, text
    h = user_token(make_user())
    assert _app(client, h, "你好")["reply"] == bare
    for text in ADDRESSED:
        body = _app(client, h, text)
        assert body["reply"] == bare and body["decision"] == "smalltalk", (text, body)
