"""QA of the chatbot as a demanding enterprise user has it in WeChat (seventeenth pass, chatbot): through the real
(signed, encrypted) webhook and POST /api/v1/chat: a “您是不是想问” choice picked as people type it (“我选2”, “(2)”,
“No.2”), thanks said with what for (“谢谢你的帮助”), and a question asked at the contact or photo step of the intake."""

from __future__ import annotations

from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)

# “人才” offers three choices; the second is the overview of the talent policies.
PICKS = ("我选2", "我选第二个", "(2)", "（２）", "【2】", "No.2", "选项2", "我要第2个", "第2个吧。")
SECOND = "梯度化"


def test_a_choice_picked_in_a_sentence_or_brackets_is_that_choice(oa_kb, client, user_token, make_user):  # noqa: F811
    """“我选2”, “No.2” after “您是不是想问” got “这个问题我还没学会” (a row in staff's unanswered queue, the choices
    dropped); “(2)” got “小二没看明白这个数字”. Each is choice 2 now, in WeChat and in the app's chat; a number out of
    range written so says which numbers to reply."""
    before = _unanswered(oa_kb)
    for i, text in enumerate(PICKS):
        openid = f"oChatbotPick{i}"
        assert "您是不是想问" in say(oa_kb, openid, "人才")
        reply = say(oa_kb, openid, text)
        assert SECOND in reply, (text, reply)
    assert _unanswered(oa_kb) == before
    openid = "oChatbotPickOut"
    say(oa_kb, openid, "人才")
    for text in ("(9)", "我选9"):
        reply = say(oa_kb, openid, text)
        assert "1～3" in reply and "没学会" not in reply, (text, reply)
    h = user_token(make_user())
    for text in ("我选2", "(2)", "No.2"):
        assert _app(client, h, "人才")["decision"] == "suggest"
        body = _app(client, h, text)
        assert body["decision"] == "answer" and SECOND in body["reply"], (text, body)


THANKS_SAID = ("谢谢你的帮助", "感谢您的解答", "谢谢解答", "谢谢你的回答", "谢谢您的耐心解答", "好的，谢谢你的回复", "感谢帮助",
               "非常感谢您的帮助！", "thank you very much")


def test_thanks_for_the_help_is_thanks(oa_kb, client, user_token, make_user):  # noqa: F811
    """“谢谢你的帮助”, “感谢您的解答” got a “您是不是想问” list (企业经营遇到困难…帮助) or “这个问题我还没学会”, a row in
    staff's unanswered queue. They are thanks: “不客气”, nothing queued; a question that thanks first still is one."""
    before = _unanswered(oa_kb)
    for i, text in enumerate(THANKS_SAID):
        reply = say(oa_kb, f"oChatbotThanks{i}", "营业执照丢了怎么办")
        reply = say(oa_kb, f"oChatbotThanks{i}", text)
        assert "不客气" in reply, (text, reply)
    assert _unanswered(oa_kb) == before
    h = user_token(make_user())
    assert "不客气" in _app(client, h, "谢谢你的帮助")["reply"]
    assert "营业执照" in say(oa_kb, "oChatbotThanksQ", "谢谢，营业执照丢了怎么办")


def _to_step(application, openid: str, n: int) -> None:
    """An intake at step `n` (3: contact, 4: photos)."""
    assert "登记诉求" in say(application, openid, "我要反映")
    answers = ("办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000")
    for text in answers[:n - 1]:
        say(application, openid, text)


def test_a_question_at_the_contact_or_photo_step_is_answered_and_the_draft_kept(oa_kb):  # noqa: F811
    """A question typed at the photo step (“营业执照丢了怎么办？”) got the photo prompt again, the question unanswered;
    at the contact step “没有认出手机号”. At the enterprise step it was answered and the draft kept aside: so now at
    these steps too, and “继续” resumes the step; the appeal is filed as it was filled in."""
    for n, ask in ((3, "联系人"), (4, "照片")):
        openid = f"oChatbotTopic{n}"
        _to_step(oa_kb, openid, n)
        reply = say(oa_kb, openid, "营业执照丢了怎么办？")
        assert "一网通办" in reply and f"第 {n}/5 步" in reply and "继续" in reply, (n, reply)
        assert ask in say(oa_kb, openid, "继续"), n
        if n == 3:
            assert "照片" in say(oa_kb, openid, "张三 13800138000")
        summary = say(oa_kb, openid, "跳过")
        assert "问题：办公室空调坏了一周了" in summary and "张三" in summary, summary
    openid = "oChatbotTopicName"  # a contact that merely has a question word in it is still the contact
    _to_step(oa_kb, openid, 3)
    assert "照片" in say(oa_kb, openid, "什么先生 13800138000")


def test_a_question_at_the_confirmation_is_answered_and_the_draft_kept(oa_kb):  # noqa: F811
    """At “请核对您的诉求”, “营业执照丢了怎么办？” got “诉求还没有提交哦” and the summary again, the question unanswered. It
    is answered now, the draft kept (“继续” shows the summary, “确认” files it); “这样对吗？” is still about the summary."""
    openid = "oChatbotConfirmQ"
    _to_step(oa_kb, openid, 4)
    assert "请核对" in say(oa_kb, openid, "跳过")
    reply = say(oa_kb, openid, "营业执照丢了怎么办？")
    assert "一网通办" in reply and "第 5/5 步" in reply and "诉求还没有提交" not in reply, reply
    assert "请核对" in say(oa_kb, openid, "继续")
    assert "请核对" in say(oa_kb, openid, "这样对吗？")


def _votes(application, entry_id: str) -> list[bool]:
    from sqlalchemy import select

    from wxapp_backend.db import session_scope
    from wxapp_backend.knowledge_store.models import AnswerFeedback

    with application.app_context(), session_scope() as s:
        return list(s.scalars(select(AnswerFeedback.useful).where(AnswerFeedback.entry_id == entry_id)))


def test_useful_or_not_typed_after_an_answer_is_a_vote_on_it(oa_kb, client, user_token, make_user):  # noqa: F811
    """“没用” / “有用” typed just after an answer got a kind word and was thrown away: staff's 有用 share and the entry's
    votes (what the app's buttons feed) never heard of it. It is now the user's vote on that answer (a second one
    changes it); with no answer just given, nothing is recorded."""
    entry = "startup-license-lost"
    before = _votes(oa_kb, entry)
    openid = "oChatbotVote"
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    assert "很高兴能帮到您" in say(oa_kb, openid, "很有帮助，谢谢")
    assert _votes(oa_kb, entry) == [*before, True]
    # (session 18, chatsmall: “没用” right after the answer offers the next guesses, as “不对” does)
    assert "抱歉" in say(oa_kb, openid, "没用")
    assert _votes(oa_kb, entry) == [*before, False]  # changed, not a second vote
    assert "很高兴能帮到您" in say(oa_kb, "oChatbotVoteNone", "有用")
    assert _votes(oa_kb, entry) == [*before, False]
    h = user_token(make_user())
    assert "一网通办" in _app(client, h, "营业执照丢了怎么办")["reply"]
    _app(client, h, "答非所问")
    assert _votes(oa_kb, entry) == [*before, False, False]


def test_a_question_in_english_is_told_in_english_to_ask_in_chinese(oa_kb, client, user_token, make_user):  # noqa: F811
    """“How do I register a company?” got the Chinese “这个问题我还没学会” alone: a foreign employee (外籍人才 are among
    the centre's users) could not read that the bot only reads Chinese, nor how to reach a person. The reply now
    says both in both languages; the question still reaches staff's unanswered queue (someone asked it)."""
    before = _unanswered(oa_kb)
    reply = say(oa_kb, "oChatbotEnglish", "How do I register a company?")
    assert "only read questions in Chinese" in reply and "人工" in reply and "中文" in reply, reply
    assert _unanswered(oa_kb) == before + 1
    body = _app(client, user_token(make_user()), "Can you speak English?")
    assert body["decision"] == "fallback" and "Chinese" in body["reply"], body
    # A Chinese question the knowledge base lacks keeps the Chinese reply; one English word in it changes nothing.
    body = _app(client, user_token(make_user()), "火星移民怎么申请")
    assert body["decision"] == "fallback" and "Chinese" not in body["reply"], body
    body = _app(client, user_token(make_user()), "火星移民的NASA Mars手续怎么办")
    assert "Chinese" not in body["reply"], body
