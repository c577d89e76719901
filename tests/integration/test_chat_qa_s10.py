"""QA of the bot's conversations, third pass: a draft put aside by the menu, the intake's place step."""

from __future__ import annotations

from handlers import appeal_followup as followup
from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat2_qa_s9 import _draft_to, photo  # noqa: F401
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)


def test_an_answer_only_the_draft_understands_resumes_a_draft_put_aside(oa_kb):  # noqa: F811
    """At the contact step the puzzled user typed “？” (a menu word: the draft was put aside), then answered the
    step, “张三 13800138000”: it went to the knowledge base (“这个问题我还没学会…”) and the contact was dropped.
    An answer that only the intake understands (a name and a mobile, 跳过, 确认) now resumes the draft."""
    openid = "oPausedAnswer"
    _draft_to(oa_kb, openid, "contact")
    assert "已为您保留" in say(oa_kb, openid, "？")
    reply = say(oa_kb, openid, "张三 13800138000")
    assert "照片" in reply and "没学会" not in reply, reply
    say(oa_kb, openid, "菜单")
    summary = say(oa_kb, openid, "跳过")
    assert "请核对您的诉求" in summary and "张三 13800138000" in summary, summary
    assert "已提交" in say(oa_kb, openid, "确认")
    # Resumed, not still aside: a question after it is the draft's no more (it was submitted).
    assert "没有您正在填写的诉求" not in say(oa_kb, openid, "开办企业需要哪些材料")


def test_an_emoji_is_not_an_enterprise_name(oa_kb):  # noqa: F811
    """At the place step “😀” (or “？？”, “[微笑]”) was taken as the enterprise's name and the bot went on to the
    contact: the appeal reached staff under the enterprise “😀”. It now asks for the name in words."""
    for i, text in enumerate(("😀", "？？", "[微笑]", "👍👍👍")):
        openid = f"oEmojiPlace{i}"
        _draft_to(oa_kb, openid, "place")
        reply = say(oa_kb, openid, text)
        assert "企业名称" in reply and "联系人" not in reply, (text, reply)
        assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")


def test_a_question_at_the_place_step_is_answered_not_filed_as_the_enterprise(oa_kb):  # noqa: F811
    """Mid-intake, asked for the enterprise, the user switched topic and typed “开办企业需要哪些材料？”: it became the
    enterprise's name and the bot asked for a contact, the question unanswered. A question (with no enterprise or
    building in it) is now answered and the draft kept aside, as the menu does; “继续” picks it up."""
    openid = "oQuestionAtPlace"
    _draft_to(oa_kb, openid, "place")
    reply = say(oa_kb, openid, "开办企业需要哪些材料")
    assert "一窗通" in reply and "联系人" not in reply and "已为您保留" in reply, reply
    assert "企业名称" in say(oa_kb, openid, "继续")
    assert "联系人" in say(oa_kb, openid, "上海什么值得买科技有限公司")  # a name with 什么 in it is a name
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海什么值得买科技有限公司" in summary, summary


def test_a_supplement_nobody_asked_for_says_it_was_not_sent(chat):  # noqa: F811
    """“补充：还有2号楼的路灯也坏了” about an appeal being handled (staff asked for nothing) got “您目前没有需要补充材料
    的诉求”: not a word that what was written went nowhere, and the user believed staff had it. It now says it
    was not sent and how to reach staff (人工, or a new appeal)."""
    appeal_id, _ = chat.submit("办公室门口的路灯坏了一个月了没人修")
    chat.act(appeal_id, "accept")
    reply = chat("补充：还有2号楼的路灯也坏了")
    assert "没有提交" in reply and "人工" in reply, reply
    assert chat("补充") == followup.NOTHING_TO_SUPPLEMENT  # the bare command: nothing was written, nothing lost


def test_an_appeal_told_in_traditional_characters_starts_the_intake(oa_kb, client):  # noqa: F811
    """“我要投訴：樓下餐廳油煙太大…” (繁體, as typed by many Hong Kong and Taiwan staff of Shanghai enterprises) got
    “这个问题我还没学会…回复“我要反映”提交诉求”, while “我要投诉：…” starts the intake with the problem told. The
    problem is kept as written."""
    openid = "oTraditional"
    reply = say(oa_kb, openid, "我要投訴：樓下餐廳油煙太大，嗆得沒法辦公")
    assert "您说的问题已记下" in reply and "没学会" not in reply, reply
    say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "张三 13800138000")
    assert "问题：樓下餐廳油煙太大，嗆得沒法辦公\n" in say(oa_kb, openid, "跳过")
    from handlers.bot import APPEAL_APP_TOLD

    body = client.post("/api/v1/chat", json={"text": "我要投訴：樓下餐廳油煙太大，嗆得沒法辦公"}).get_json()
    assert body["reply"] == APPEAL_APP_TOLD, body


def test_a_contact_given_at_the_place_step_is_not_the_enterprise(oa_kb):  # noqa: F811
    """Asked for the enterprise, the user (with nothing on file, after “是”) answered with the contact, “我叫孙八，
    电话18612345678”: it became the enterprise's name, a mobile number in it, and the summary showed it so. The step
    now says the contact comes next and asks for the enterprise again."""
    openid = "oContactAtPlace"
    _draft_to(oa_kb, openid, "place")
    reply = say(oa_kb, openid, "我叫孙八，电话18612345678")
    assert "企业名称" in reply and "请留下联系人" not in reply, reply
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "孙八 18612345678")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司\n" in summary, summary


def test_a_building_not_on_file_is_not_shown_as_missing(oa_kb):  # noqa: F811
    """The prompt's own example, “上海某某科技有限公司，新华大厦”, with a building the centre has not registered: the
    summary said “楼宇：（未填写）” although the user had just written it (it is kept, with the enterprise's name).
    It now says the building was not found among the registered ones and is recorded with the name."""
    openid = "oUnknownBuilding"
    _draft_to(oa_kb, openid, "place")
    say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司，新华大厦\n" in summary, summary
    assert "楼宇：（未填写）" not in summary and "已随企业名称记录" in summary, summary
    openid = "oNoBuilding"  # only the enterprise given: nothing was written for the building
    _draft_to(oa_kb, openid, "photos")
    assert "楼宇：（未填写）" in say(oa_kb, openid, "跳过")
    for i, name in enumerate(("Shanghai Bright Consulting Co Ltd", "不是这家，是上海另一家公司")):
        openid = f"oNoBuildingSpaces{i}"  # spaces or a comma, but no building in it
        _draft_to(oa_kb, openid, "place")
        say(oa_kb, openid, name)
        say(oa_kb, openid, "张三 13800138000")
        assert "楼宇：（未填写）" in say(oa_kb, openid, "跳过"), name


def test_changing_the_photos_says_the_old_ones_were_dropped(oa_kb):  # noqa: F811
    """“修改照片” at the summary emptied the photos already sent and showed the photo step's first prompt (“如有现场
    照片…没有照片请回复“跳过””): the user answering “跳过” to keep them lost every one. It now says the earlier
    photos were removed and are to be sent again."""
    openid = "oEditPhotos"
    _draft_to(oa_kb, openid, "photos")
    photo(oa_kb, openid)
    photo(oa_kb, openid)
    assert "照片：2 张" in say(oa_kb, openid, "好了")
    reply = say(oa_kb, openid, "修改照片")
    assert "2 张" in reply and "重新发送" in reply, reply
    photo(oa_kb, openid)
    assert "照片：1 张" in say(oa_kb, openid, "好了")


def _voice(application, openid, said):
    return say(application, openid, extra={"MsgType": "voice", "MediaId": "VOICE1", "Format": "amr",
                                           "Recognition": said})


def test_spoken_commands_do_what_typed_ones_do(oa_kb):  # noqa: F811
    """With speech recognition on, “我的诉求。” / “菜单。” / “我要反映。” spoken went to the knowledge base as questions
    (“您是不是想问：1. 企业遇到困难有诉求，怎么反映？…”): only the intake's steps understood a voice. A transcript now
    meets the same rules as the words typed."""
    from handlers.bot import MENU_REPLY

    openid = "oSpoken"
    assert _voice(oa_kb, openid, "菜单。") == MENU_REPLY
    reply = _voice(oa_kb, openid, "我的诉求。")
    assert "您是不是想问" not in reply and "诉求" in reply, reply
    assert "请简单描述" in _voice(oa_kb, openid, "我要反映。")
    assert "企业名称" in _voice(oa_kb, openid, "我们楼里的电梯坏了三天了没人修。")
    assert "一窗通" in _voice(oa_kb, "oSpokenQuestion", "开办企业需要哪些材料？")  # questions still answered


def test_a_building_is_found_however_its_spaces_and_dots_are_typed(oa_kb, make_building):  # noqa: F811
    """The registered “上生·新所” and “新华路 669 号园区” were not found when written as people (and speech
    recognition) write them, “上生新所”, “新华路669号园区”: the appeal went in without its building."""
    make_building(name="上生·新所")
    make_building(name="新华路 669 号园区")
    for i, (text, building) in enumerate((("上海某某科技有限公司，上生新所", "上生·新所"),
                                          ("上海某某科技有限公司 新华路669号园区", "新华路 669 号园区"))):
        openid = f"oBuildingSpelling{i}"
        _draft_to(oa_kb, openid, "place")
        say(oa_kb, openid, text)
        say(oa_kb, openid, "张三 13800138000")
        summary = say(oa_kb, openid, "跳过")
        assert f"企业：上海某某科技有限公司\n楼宇：{building}\n" in summary, summary


def test_a_second_problem_told_during_a_draft_is_not_a_step_answer(oa_kb):  # noqa: F811
    """At the contact step the user told another problem, “我要反映：另外楼道灯也不亮”: the bot answered “没有认出手机号”
    (or, at the place step, took it as the enterprise's name). It now says a draft is open and the new problem
    was not recorded, as a bare 我要反映 during a draft does."""
    for step, asked in (("contact", "联系人"), ("place", "企业名称")):
        openid = f"oSecondProblem{step}"
        _draft_to(oa_kb, openid, step)
        reply = say(oa_kb, openid, "我要反映：另外楼道灯也不亮")
        assert "未填完的诉求" in reply and "没有登记" in reply and "手机号" not in reply, reply
        assert asked in say(oa_kb, openid, "继续")


def test_asking_for_a_person_in_the_app_chat_points_to_the_contact_button(client):
    """In the mini-program's chat “转人工客服” / “我要找真人” (words the knowledge base hears as a hand-over) answered
    “好的，正在为您转接人工客服，请稍候…”: the app cannot hand over by itself, nothing was coming, and the user waited.
    Every hand-over there now says what “人工” says: tap 联系客服."""
    from handlers.bot import HUMAN_APP

    for text in ("转人工客服", "人工", "我要找真人"):
        body = client.post("/api/v1/chat", json={"text": text}).get_json()
        assert body["decision"] == "handoff" and body["reply"] == HUMAN_APP, (text, body)


def test_no_to_the_enterprise_on_file_asks_for_the_right_one(oa_kb, make_user, make_building, make_enterprise):  # noqa: F811
    """“诉求将登记在“上海测试科技有限公司”名下。回复“是”确认，或直接输入企业名称…”: the user answered “不是” (or “不对”,
    “不是这家”), which was taken as the enterprise's name, and the appeal went in under the enterprise “不是”. A no
    now asks for the name; the known enterprise is not used either."""
    building = make_building(name="新华大厦")
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    for i, no in enumerate(("不是", "不对。", "不是这家")):
        openid = f"oSaysNo{i}"
        make_user(oa_openid=openid, enterprise_id=enterprise.id, binding_state="verified")
        say(oa_kb, openid, "我要反映")
        assert "上海测试科技有限公司" in say(oa_kb, openid, "楼道里的灯坏了两个星期了，晚上很黑")
        reply = say(oa_kb, openid, no)
        assert "企业名称" in reply and "联系人" not in reply, (no, reply)
        assert "联系人" in say(oa_kb, openid, "上海另一家科技有限公司")
        say(oa_kb, openid, "张三 13800138000")
        assert "企业：上海另一家科技有限公司\n" in say(oa_kb, openid, "跳过")


def test_scanning_or_following_again_during_a_draft_keeps_it_aside(oa_kb):  # noqa: F811
    """A user filling in a draft scans the centre's code at a building (or follows again): the welcome with its
    numbered menu came back, not a word of the draft, and the “3” that answered the menu (白领活动) was taken as the
    draft's contact (“没有认出手机号”). Like the menu, these now keep the draft aside and say so."""
    for event, key in (("SCAN", "qrscene_building"), ("subscribe", None)):
        openid = f"oScanInDraft{event}"
        _draft_to(oa_kb, openid, "contact")
        shown = say(oa_kb, openid, event=event, event_key=key)
        assert "回复数字即可" in shown and "已为您保留" in shown, shown
        assert "白领活动" in say(oa_kb, openid, "3")
        assert "联系人" in say(oa_kb, openid, "继续")


def test_changing_a_field_before_the_summary_is_not_an_answer(oa_kb):  # noqa: F811
    """“改电话” / “修改企业名称” typed before the summary (the user noticed a mistake at once) was taken as the answer
    to the step: the enterprise “改电话”, or “没有认出手机号”. It now says, as a bare “修改” does, that everything can
    be changed at the summary, and the step is asked again."""
    openid = "oEditEarly"
    _draft_to(oa_kb, openid, "place")
    reply = say(oa_kb, openid, "改电话")
    assert "核对时回复“修改”" in reply and "联系人" not in reply, reply
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")
    reply = say(oa_kb, openid, "修改企业名称")
    assert "核对时回复“修改”" in reply and "没有认出手机号" not in reply, reply
    say(oa_kb, openid, "张三 13800138000")
    assert "企业：上海某某科技有限公司\n" in say(oa_kb, openid, "跳过")
