"""QA leftovers (sixteenth pass, left9): puzzlement (“搞什么”, “怎么回事”, “？？？”) during a rating or a supplement in
the WeChat chat; a queued question added as a phrasing of an entry not yet valid; `kb import` and phrasings another
current entry already holds."""

from __future__ import annotations

from sqlalchemy import select

from tests.integration.test_chat2_qa_s11 import _rating_of, appeal_of  # noqa: F401  (a follower's appeal)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.appeals.states import AppealStatus
from wxapp_backend.db import session_scope

PUZZLED = ("搞什么", "怎么回事", "？？？", "搞什么啊？")


def _status(app, number: str) -> AppealStatus:
    with app.app_context(), session_scope() as s:
        return s.scalar(select(Appeal.status).where(Appeal.number == number))


def test_puzzlement_during_a_rating_asks_for_the_step_again(oa_kb, appeal_of):  # noqa: F811
    """“搞什么” at “解决了吗” got the bare hint, at the comment it became the comment and the rating was submitted.
    Each step is asked again, kindly (“抱歉”), nothing is recorded, and an answer afterwards still counts."""
    asks = {"resolved": "问题本身解决了吗", "stars": "1～5", "comment": "想对我们说"}
    for i, text in enumerate(PUZZLED):
        openid = f"oLeft9Rate{i}"
        number = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
        assert "解决了吗" in say(oa_kb, openid, f"评价 {number}")
        for step, answer in (("resolved", "1"), ("stars", "5"), ("comment", None)):
            reply = say(oa_kb, openid, text)
            assert "抱歉" in reply and asks[step] in reply and number in reply, (step, text, reply)
            with oa_kb.app_context():
                assert _rating_of(number) is None, (step, text)
            if answer:
                say(oa_kb, openid, answer)
        assert number in say(oa_kb, openid, "跳过")
        with oa_kb.app_context():
            rating = _rating_of(number)
        assert rating is not None and rating.satisfaction == 5 and rating.resolved and not rating.comment, (
            text
        )


def test_puzzlement_during_a_supplement_asks_for_it_again(oa_kb, appeal_of):  # noqa: F811
    """“？？？” or “搞什么” while staff wait for material was sent to them as the material (the appeal back to work).
    The request is said again, kindly; the supplement still goes through afterwards."""
    for i, text in enumerate(PUZZLED):
        openid = f"oLeft9Supp{i}"
        number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
        say(oa_kb, openid, "补充")
        reply = say(oa_kb, openid, text)
        assert "抱歉" in reply and "路灯的具体位置" in reply and number in reply, (text, reply)
        assert _status(oa_kb, number) == AppealStatus.PENDING_ENTERPRISE, text
        assert "已补充" in say(oa_kb, openid, "路灯在园区东门左侧第三根"), text
        assert _status(oa_kb, number) != AppealStatus.PENDING_ENTERPRISE, text


def test_a_queue_question_added_to_an_entry_not_yet_valid_says_when_it_starts_answering(
    app, client, make_staff, console_login, db, monkeypatch
):
    """加到 an entry whose 生效日期 is still ahead marked the question handled with “已把这个问法加到条目 …” as if the bot
    answered it now. It is still added, and the flash says from which date the bot answers with it; put back in the
    queue, the question is not marked 现在能回答 before that date."""
    from datetime import timedelta

    from tests.integration.test_kbc5_qa_s16 import _queue_question, _token
    from wxapp_backend.knowledge_store import services
    from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion

    services.get_runtime().check_interval = 0
    start = services.today_shanghai() + timedelta(days=10)
    db.add(
        KBEntry(
            id="subsidy-2027",
            question="2027年稳岗补贴怎么申请",
            answer="请到一网通办申请。",
            similar=[],
            tags=[],
            category="政策",
            valid_from=start,
        )
    )
    db.commit()
    qid = _queue_question(db, "稳岗补贴2027年怎么领")
    console_login(make_staff(role="staff"))
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    form = {"csrf_token": _token(page), "status": "open", "entry_id": "subsidy-2027"}
    r = client.post(f"/console/kb/unanswered/{qid}/phrasing", data=form, follow_redirects=True)
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and start.isoformat() in said and "起" in said, said
    db.expire_all()
    assert db.get(KBEntry, "subsidy-2027").similar == ["稳岗补贴2027年怎么领"]
    assert db.get(UnansweredQuestion, qid).status == "resolved"
    # put back in the queue (or asked again in other words): not 现在能回答 before the date
    done = client.get("/console/kb/unanswered?status=resolved").get_data(as_text=True)
    client.post(f"/console/kb/unanswered/{qid}/reopen", data={"csrf_token": _token(done)})
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "稳岗补贴2027年怎么领" in page and "现在能回答" not in page, page
    # from the date on, it is
    monkeypatch.setattr(services, "today_shanghai", lambda: start)
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "现在能回答" in page and "2027年稳岗补贴怎么申请" in page, page


def test_kb_import_warns_about_phrasings_another_current_entry_holds(app, app_ctx, tmp_path, db):
    """`kb import` of an entry whose phrasing is word for word another current entry's question (or phrasing) said
    only “导入完成”: the bot answers those words with one of the two only. The import is the same, and then each such
    phrasing is named with both entries, in Chinese, at most a screenful, with how many more there are."""
    from datetime import timedelta

    from wxapp_backend.knowledge_store import services
    from wxapp_backend.knowledge_store.models import KBEntry

    soon = services.today_shanghai() + timedelta(days=5)
    db.add(
        KBEntry(
            id="park-a",
            question="园区停车怎么收费",
            answer="每小时 10 元。",
            similar=["停车费多少"],
            tags=[],
            category="政策",
        )
    )
    db.add(
        KBEntry(
            id="park-later",
            question="明年停车收费标准",
            answer="另行通知。",
            similar=["停车能包月吗"],
            tags=[],
            category="政策",
            valid_from=soon,
        )
    )
    db.commit()
    run = app.test_cli_runner()
    first = tmp_path / "kb.jsonl"
    first.write_text(
        '{"id":"park-b","question":"园区停车位可以包月吗","answer":"可以。","similar":["园区停车怎么收费？","停车能包月吗"]}\n'
        '{"id":"park-c","question":"停车费多少","answer":"10 元。"}\n'
        '{"id":"lease","question":"怎么租办公室","answer":"找招商部。"}\n',
        encoding="utf-8",
    )
    result = run.invoke(args=["kb", "import", str(first)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "导入完成：新增 3 条" in out, out
    assert "园区停车怎么收费？" in out and "park-b" in out and "park-a" in out and "重复" in out, out
    assert "停车费多少" in out and "park-c" in out, out
    assert "停车能包月吗" not in out and "lease" not in out, out  # a not yet valid entry holds nothing today
    db.expire_all()
    assert db.get(KBEntry, "park-b").similar == [
        "园区停车怎么收费？",
        "停车能包月吗",
    ]  # the import is unchanged
    # many: a bounded list and the count of the rest
    many = tmp_path / "many.jsonl"
    many.write_text(
        "".join(
            f'{{"id":"dup-{i}","question":"园区停车怎么收费 {i}","answer":"x","similar":["停车费多少"]}}\n'
            for i in range(30)
        ),
        encoding="utf-8",
    )
    result = run.invoke(args=["kb", "import", str(many)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "重复" in line]
    assert 1 <= len(lines) <= 11 and "还有" in result.output, result.output
    # nothing said when nothing clashes
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"id":"lease","question":"怎么租办公室","answer":"请找招商部。"}\n', encoding="utf-8")
    result = run.invoke(args=["kb", "import", str(lone)])
    assert result.exit_code == 0 and "更新 1 条" in result.output and "重复" not in result.output, (
        result.output
    )
