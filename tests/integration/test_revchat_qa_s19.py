"""QA of the chat (nineteenth pass, revchat), through the real (signed, encrypted) webhook and POST /api/v1/chat: a
greeting addressed to 小二, a long enterprise name in the appeal intake, a queue question with “|” added as a
phrasing, and the waitlist as the chat's activity detail tells it."""

from __future__ import annotations

from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatsmall_qa_s18 import _warm_index  # noqa: F401  (the index built first)
from tests.integration.test_crash2_qa_s18 import db_away  # noqa: F401  (the fixture)
from tests.integration.test_crash_qa_s9 import chat  # noqa: F401  (the fixture)
from tests.integration.test_kbstore_qa_s10 import kb  # noqa: F401  (the fixture)
from wxapp_backend.knowledge_store.models import KBEntry

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


# ---------------------------------------------------------------------------------------------- 2. long enterprise name

LONG_NAME = "上海" + "星辰大海国际企业管理咨询服务" * 15 + "有限公司"  # 214 characters


def test_an_enterprise_name_over_200_characters_is_refused_not_cut(oa_kb, make_building):  # noqa: F811
    """At the intake's enterprise step a 214-character name was kept cut at 200 without a word (staff got “…国际企业
    管理咨询服”, the user never knew). It is refused now, the limit said, the step asked again; nothing is kept of it,
    and a name that fits goes on as before. With the building named beside it, the name is what is measured."""
    assert len(LONG_NAME) > 200
    make_building(name="新华大厦")
    openid = "oRevchatLongName"
    say(oa_kb, openid, "我要反映")
    assert "企业名称" in say(oa_kb, openid, "楼道里的灯坏了两个星期了")
    for said in (LONG_NAME, LONG_NAME + "，新华大厦"):
        reply = say(oa_kb, openid, said)
        assert "200 个字" in reply and f"{len(LONG_NAME)} 个字" in reply, reply
        assert "联系人" not in reply and "请告诉我企业名称" in reply, reply
    # 200 characters with the building beside them: fits
    fits = LONG_NAME[:196] + "有限公司"
    assert "联系人" in say(oa_kb, openid, fits + "，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert f"企业：{fits}" in summary and "楼宇：新华大厦" in summary, summary


def test_a_long_enterprise_name_is_refused_with_the_database_away(chat, db_away):  # noqa: F811
    """With the database away for a moment the answer is kept as said, to be looked up on 确认: it was cut at 200."""
    assert chat("我要反映").startswith("好的")
    assert chat("楼道里的灯坏了两个星期了").startswith("请告诉我企业名称")
    with db_away():
        reply = chat(LONG_NAME)
    assert "200 个字" in reply and "联系人" not in reply, reply
    assert chat("上海某某科技有限公司").startswith("请留下联系人")


# ---------------------------------------------------------------------------------------------- 3. a bar in a phrasing


def test_a_queue_question_with_a_bar_is_added_as_a_phrasing_as_asked(app, client, kb, make_staff, console_login, db,
                                                                     tmp_path):
    """“A|B 股怎么选” from the unanswered queue, added to an entry in one click, became “A B 股怎么选”: the words were
    not the user's any more. The console's box shows a bar in a phrasing as “\\|” and the table files write it so
    (session 18): the phrasing keeps its bar, the edit box shows it escaped, a save leaves it, and an .xlsx export and
    re-import give it back unchanged."""
    from tests.integration.test_kbsmall_qa_s18 import _form
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    token = console_login(make_staff(role="staff"))
    asked = "A|B 股怎么选，全角｜也\n一样吗"
    client.post("/api/v1/chat", json={"text": asked})
    qid = db.query(UnansweredQuestion).filter_by(text=asked).one().id
    entry = "talent-foreign-work-permit"
    assert client.post(f"/console/kb/unanswered/{qid}/phrasing",
                       data={"csrf_token": token, "entry_id": entry}).status_code == 302
    db.expire_all()
    kept = "A|B 股怎么选，全角｜也 一样吗"
    similar = list(db.get(KBEntry, entry).similar)
    assert kept in similar, similar
    form = _form(client.get(f"/console/kb/{entry}/edit").get_data(as_text=True))
    assert "A\\|B 股怎么选，全角\\｜也 一样吗" in form["similar"].splitlines(), form["similar"]
    form["csrf_token"] = token
    assert client.post(f"/console/kb/{entry}/edit", data=form).status_code == 302
    db.expire_all()
    assert list(db.get(KBEntry, entry).similar) == similar
    out = tmp_path / "kb.xlsx"
    assert app.test_cli_runner().invoke(args=["kb", "export", str(out)]).exit_code == 0
    result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
    assert result.exit_code == 0, result.output
    db.expire_all()
    assert list(db.get(KBEntry, entry).similar) == similar


# ---------------------------------------------------------------------------------------------- 4. the waitlist in the detail


def test_the_detail_picked_from_my_registrations_says_the_waitlist_as_the_list_does(oa_kb, make_activity,  # noqa: F811
                                                                                    make_user):
    """“我的报名” listed “楼宇音乐会（候补第2位）” and “已开始的课（活动已开始，候补未能递补）”; “1” / “2” then said
    “您的报名：候补中” for both, and “名额：已满，可候补” for the class already under way (no waitlist moves then). The
    detail now says what the list said, and offers no waitlist once the activity has begun."""
    from datetime import UTC, datetime, timedelta

    from tests.integration.test_chatact_qa_s17 import _linked_follower, _register
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope

    soon = make_activity(title="楼宇音乐会", capacity=1, waitlist_enabled=True)
    begun = make_activity(title="已开始的课", capacity=1, waitlist_enabled=True)
    for a in (soon, begun):
        _register(make_user().id, a.id)
        _register(make_user().id, a.id)
    openid = "oRevchatWaitlist"
    user_id = _linked_follower(make_user, openid)
    _register(user_id, soon.id)
    _register(user_id, begun.id)
    with session_scope() as s:
        s.get(Activity, begun.id).starts_at = datetime.now(UTC) - timedelta(minutes=30)
    listed = say(oa_kb, openid, "我的报名")
    assert "1. 已开始的课" in listed and "候补未能递补" in listed and "2. 楼宇音乐会" in listed, listed
    assert "候补第2位" in listed, listed
    detail = say(oa_kb, openid, "2")
    assert "【楼宇音乐会】" in detail and "您的报名：候补第2位" in detail and "候补中" not in detail, detail
    detail = say(oa_kb, openid, "1")
    assert "【已开始的课】" in detail and "候补未能递补" in detail and "候补中" not in detail, detail
    assert "可候补" not in detail and "名额：已满" in detail, detail
