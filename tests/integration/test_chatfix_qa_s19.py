"""QA of the chat (nineteenth pass, chatfix), through the real (signed, encrypted) webhook: an activity's detail with
every field at its longest keeps its mini-program link and its how-to-register lines inside WeChat's 2,048 bytes, and a
“不对” / “没用” / “有用” vote the database could not take still gets its reply."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from handlers.bot import HOW_TO_REGISTER
from tests.conftest import WXA_APPID
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatact_qa_s17 import _linked_follower, _register
from tests.integration.test_chatbot_qa_s17 import _votes
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

_ANCHOR = re.compile(r'<a data-miniprogram-appid="([^"]+)" data-miniprogram-path="([^"]+)">([^<]+)</a>')

# The longest each field may be (wxapp_backend.activities.services: title 100, address 200; a building's name 100;
# the description 5,000, of which the chat shows at most DESCRIPTION_CHARS), in 3-byte Chinese and 4-byte emoji.
KINDS = {"chinese": "楼", "emoji": "🎉", "mixed": "白领🎉"}


def _longest(make_activity, make_building, kind: str, n: int = 5) -> list:
    """`n` activities with every free-text field at its maximal length in `kind`'s characters (a few more than the
    list shows: its “回复 2、3、4、5” is the longest there is)."""
    ch = KINDS[kind]
    text = (ch * 5000)[:5000]
    building = make_building(name=text[:100], address="")
    now = datetime.now(UTC)
    return [make_activity(title=text[:99] + str(i), building_id=building.id, address=text[:200],
                          description=text, capacity=30, starts_at=now + timedelta(days=2, hours=i))
            for i in range(1, n + 2)]


def _plain(reply: str) -> str:
    return _ANCHOR.sub(r"\3", reply)


def _check_detail(reply: str, *, linked: bool, tail: str) -> None:
    assert len(reply.encode()) <= REPLY_TEXT_MAX_BYTES, len(reply.encode())
    assert reply.count("<a ") == reply.count("</a>"), reply
    plain = _plain(reply)
    assert tail in plain, plain  # the closing lines whole, not cut
    assert "回复 2、3、4、5）" in plain, plain
    links = _ANCHOR.findall(reply)
    if linked:
        assert links and all(appid == WXA_APPID for appid, _p, _t in links), reply
        assert any(path.startswith("pages/activity/detail?id=") and text == "小程序“白领活动”"
                   for _a, path, text in links), reply
    else:
        assert not links and "<a" not in reply, reply
    assert "简介：" in plain and "…（完整介绍" in plain, plain  # shortened, and said where the rest is


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_longest_activity_detail_keeps_its_link_and_how_to_register(oa_kb, make_activity, make_building,  # noqa: F811
                                                                     kind):
    """A 100-character title, a 100-character building and a 200-character address, a long description: the detail
    picked from “活动” was ~2,013 bytes, so the 小程序“白领活动” link (its markup ~100 bytes more) was dropped; with
    emoji the text passed 2,048 bytes and WeChat's cut took “报名方法” and “回复 2、3…” with it. The description
    is now shortened (“…”, where the full text is) to leave room for the links and the closing lines."""
    made = _longest(make_activity, make_building, kind)
    openid = f"oChatfixLong{kind}"
    assert "回复序号（1～5）" in say(oa_kb, openid, "活动")
    reply = say(oa_kb, openid, "1")
    _check_detail(reply, linked=True, tail=HOW_TO_REGISTER)
    assert f"pages/activity/detail?id={made[0].id}" in reply, reply
    if kind != "emoji":  # 3-byte text: everything but the description whole (building name, then the address)
        text = (KINDS[kind] * 5000)[:5000]
        assert made[0].title in reply and f"地点：{text[:100]} {text[:200]}\n" in reply, reply


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_longest_activity_detail_of_ones_own_registration_keeps_its_link(oa_kb, make_activity,  # noqa: F811
                                                                         make_building, make_user, kind):
    """The same picked from “我的报名”: its closing line (the registration, and where to cancel or show the check-in
    code) and a link to the activity's page stay."""
    made = _longest(make_activity, make_building, kind)
    openid = f"oChatfixMine{kind}"
    user_id = _linked_follower(make_user, openid)
    for a in made:
        _register(user_id, a.id)
    assert "回复序号（1～5）" in say(oa_kb, openid, "我的报名")
    reply = say(oa_kb, openid, "1")
    _check_detail(reply, linked=True, tail="您的报名：报名成功。取消报名、出示签到码请到小程序“我的报名”。")
    assert any(text == "小程序“我的报名”" for _a, _p, text in _ANCHOR.findall(reply)), reply


def test_a_longest_activity_detail_without_the_mini_program_appid(settings, make_activity, make_building):
    """Without WXA_APPID there is no link to make room for: the description keeps more of itself, still within the
    limit and with the closing lines whole."""
    from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, build
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    bare = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID, wxa_appid="")
    with bare.app_context():
        load_default_if_empty()
        _longest(make_activity, make_building, "emoji")
    say(bare, "oChatfixBare", "活动")
    reply = say(bare, "oChatfixBare", "1")
    _check_detail(reply, linked=False, tail=HOW_TO_REGISTER)
    # the room the links would take is the description's
    assert len(reply.encode()) > REPLY_TEXT_MAX_BYTES - 120, len(reply.encode())


# ---------------------------------------------------------------------------------------------- 2. vote, database away

LICENSE = "startup-license-lost"  # “营业执照丢了怎么办” answers it; 电子营业执照 … are its next-best guesses


@pytest.fixture
def vote_write_fails(monkeypatch):
    """`with vote_write_fails():` the 有用/没用 vote's write fails as when PostgreSQL is briefly away."""
    from wxapp_backend.knowledge_store import services

    calls = []

    def away(*a, **kw):
        calls.append(kw)
        raise OperationalError("INSERT INTO answer_feedback", {}, Exception("connection refused"))

    @contextlib.contextmanager
    def switch():
        monkeypatch.setattr(services, "record_feedback", away)
        try:
            yield calls
        finally:
            monkeypatch.undo()

    return switch


@pytest.mark.parametrize("said", ["不对", "没用"])
def test_wrong_right_after_an_answer_still_gets_the_next_guesses_with_the_database_away(oa_kb, make_user,  # noqa: F811
                                                                                     vote_write_fails, caplog,
                                                                                     said):
    """“不对” / “没用” just after an answer records a 没用 vote first; with the database away that write raised and
    the whole message failed (no apology, no other guesses). The vote is now best effort (logged with what it was);
    the user gets the next guesses, which a digit then picks."""
    openid = f"oChatfixVote{said}"
    _linked_follower(make_user, openid)
    before = _votes(oa_kb, LICENSE)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    with vote_write_fails() as calls:
        reply = say(oa_kb, openid, said)
    assert calls, "the vote was not even tried"
    assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply, reply
    assert "算作" not in reply, reply  # no vote was recorded: the apology does not say one was
    assert _votes(oa_kb, LICENSE) == before
    assert any("vote not recorded" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text
    picked = say(oa_kb, openid, "1")
    assert "电子营业执照" in picked, picked


def test_useful_typed_with_the_database_away_still_gets_its_thanks(oa_kb, make_user, vote_write_fails):  # noqa: F811
    """“有用” after an answer: the same vote, the same failure; the user still gets the kind word."""
    openid = "oChatfixUseful"
    _linked_follower(make_user, openid)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    with vote_write_fails() as calls:
        reply = say(oa_kb, openid, "有用")
    assert calls and reply and "抱歉" not in reply and "稍后" not in reply, reply


def test_wrong_with_the_whole_database_away_still_gets_the_next_guesses(oa_kb, make_user, monkeypatch):  # noqa: F811
    """The database wholly away for the “不对” (every session fails to connect): past the vote, the hint under the
    guesses (an appeal waiting for material) read the database too and failed the message. The user gets the
    apology and the guesses; the 没用 vote is lost (logged)."""
    from wxapp_backend import db as db_module

    openid = "oChatfixVoteAway"
    _linked_follower(make_user, openid)
    before = _votes(oa_kb, LICENSE)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")

    @contextlib.contextmanager
    def away(self):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        yield  # pragma: no cover

    real = db_module.Database.session_scope
    monkeypatch.setattr(db_module.Database, "session_scope", away)
    try:
        reply = say(oa_kb, openid, "不对")
    finally:
        monkeypatch.setattr(db_module.Database, "session_scope", real)
    assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply, reply
    assert "算作" not in reply, reply
    assert _votes(oa_kb, LICENSE) == before


@pytest.mark.parametrize("said", ["不对", "没用"])
def test_wrong_right_after_an_answer_says_the_vote_counted_only_when_it_did(oa_kb, make_user, said):  # noqa: F811
    """The positive control of the two above: with the database there, the 没用 vote is recorded and the apology says
    so (“算作一次“没用”评价”); with it away the same words claimed a vote that was never stored."""
    openid = f"oChatfixCounted{said}"
    _linked_follower(make_user, openid)
    before = _votes(oa_kb, LICENSE)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    reply = say(oa_kb, openid, said)
    assert "算作一次" in reply and "您是不是想问" in reply, reply
    assert _votes(oa_kb, LICENSE) != before
