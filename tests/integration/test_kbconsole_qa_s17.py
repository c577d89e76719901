"""Knowledge base as a demanding staff editor uses it (session 17, kbconsole): what the console says after saving an
entry the bot does not answer with, links that are no links, a colleague's 下线 met while editing, the
side-by-side view under the console's CSP, and phrasings typed twice."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from knowledge.schema import Entry, validate_entry
from wxapp_backend.audit import SYSTEM, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.models import KBEntry


@pytest.fixture
def kb(app_ctx):
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def _entry(db, entry_id: str, question: str, **kw) -> KBEntry:
    row = KBEntry(id=entry_id, question=question, answer=kw.pop("answer", "请到一网通办办理。"),
                  similar=kw.pop("similar", []), tags=[], category="政策", **kw)
    db.add(row)
    db.commit()
    return row


def _flashes(page: str) -> list[str]:
    return re.findall(r'<div class="flash[^"]*" role="[a-z]+">([^<]*)</div>', page)


def _audits(db, action: str) -> int:
    return db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == action))


@pytest.mark.parametrize("kind", ["retired", "expired", "not_yet"])
def test_saving_an_entry_the_bot_does_not_answer_with_does_not_say_the_bot_will_use_it(
    client, kb, make_staff, console_login, db, kind
):
    """After 保存 the console said 已保存，机器人几秒内就会用上新内容 for an entry that is offline, past its 截止日期 or
    not yet in force: the editor believed users now got the new text, and they got nothing."""
    token = console_login(make_staff(role="staff"))
    today = services.today_shanghai()
    kw = {"retired": {"retired": True}, "expired": {"valid_until": today - timedelta(days=3)},
          "not_yet": {"valid_from": today + timedelta(days=10)}}[kind]
    row = _entry(db, "rent-subsidy", "房租补贴怎么申请", **kw)
    form = {"csrf_token": token, "question": "房租补贴怎么申请", "answer": "新的申请办法：一网通办在线申请。",
            "revision": str(row.revision)}
    for key in ("valid_from", "valid_until"):
        if kw.get(key):
            form[key] = kw[key].isoformat()
    r = client.post("/console/kb/rent-subsidy/edit", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)
    said = " ".join(_flashes(client.get(r.headers["Location"]).get_data(as_text=True)))
    assert "已保存" in said and "几秒内就会用上" not in said
    assert {"retired": "已下线", "expired": "截止", "not_yet": "起施行"}[kind] in said
    db.expire_all()
    assert db.get(KBEntry, "rent-subsidy").answer == "新的申请办法：一网通办在线申请。"
    assert _audits(db, "kb.entry_updated") == 1
    # a current entry still reads as before
    _entry(db, "live", "开业指导")
    r = client.post("/console/kb/live/edit", data={"csrf_token": token, "question": "开业指导", "answer": "预约开业指导。",
                                                  "revision": "1"})
    assert "已保存，机器人几秒内就会用上新内容。" in _flashes(client.get(r.headers["Location"]).get_data(as_text=True))


@pytest.mark.parametrize("url", ["https://", "http://", "https:///zhengce", "http://www.sh gov.cn/a",
                                 "https://www.gov.cn/a b", "https://.", "http://[zwdt"])
def test_a_link_without_a_site_or_with_spaces_is_refused_with_the_field_named(
    client, kb, make_staff, console_login, db, url
):
    """Only the scheme was checked: “https://” alone or a link with a space in it was saved, and the bot's reply
    ended with 【原文】https:// (a link that opens nothing)."""
    token = console_login(make_staff(role="staff"))
    r = client.post("/console/kb/new", data={"csrf_token": token, "id": "bad-link", "question": "首违不罚清单",
                                             "answer": "见清单。", "url": url})
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    assert "原文链接" in page and "网址" in page
    db.expire_all()
    assert db.get(KBEntry, "bad-link") is None
    # the same rule for files imported (one check for both)
    problems = validate_entry(Entry(id="x", question="q", answer="a", url=url))
    assert problems and "网址" in problems[0]


def test_real_links_are_still_taken(client, kb, make_staff, console_login, db):
    token = console_login(make_staff(role="staff"))
    for i, url in enumerate(["https://zwdt.sh.gov.cn", "http://www.shanghai.gov.cn/nw12344/20210101/abc.html?id=1#p2",
                             "https://1.2.3.4:8080/x", "https://政务.中国/办事"]):
        r = client.post("/console/kb/new", data={"csrf_token": token, "id": f"link-{i}", "question": f"问题{i}",
                                                 "answer": "见原文。", "url": url})
        assert r.status_code == 302, (url, r.get_data(as_text=True))


def test_a_colleagues_retire_met_while_editing_is_said_on_the_conflict_page(
    app, client, kb, make_staff, console_login, db
):
    """Editor A opened the form; colleague B took the entry offline; A's save was refused as changed meanwhile, but
    the side-by-side table only shows the form's fields, all 相同 but A's own edits: nothing said what B did."""
    token = console_login(make_staff(role="staff"))
    _entry(db, "night-parking", "夜间停车优惠")
    page = client.get("/console/kb/night-parking/edit").get_data(as_text=True)
    revision = re.search(r'name="revision" value="(\d+)"', page).group(1)
    with session_scope() as s:  # colleague B
        services.set_retired(s, app.extensions["wxapp"].redis, SYSTEM, "night-parking", True)
    r = client.post("/console/kb/night-parking/edit", data={"csrf_token": token, "question": "夜间停车优惠",
                                                           "answer": "晚 8 点后半价。", "revision": revision})
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "已下线" in page and "恢复" in page


def test_the_conflict_view_keeps_line_breaks_without_an_inline_style(client, kb, make_staff, console_login, db):
    """The side-by-side view kept the answers' line breaks with style="white-space: pre-wrap": the console's CSP
    (style-src 'self') drops inline styles, so a colleague's answer of several lines read as one run-on line."""
    token = console_login(make_staff(role="staff"))
    _entry(db, "hire-subsidy", "吸纳就业补贴", answer="第一步：登录。\n第二步：提交。")
    client.post("/console/kb/hire-subsidy/edit", data={"csrf_token": token, "question": "吸纳就业补贴",
                                                       "answer": "第一步：登录。\n第二步：上传合同。", "revision": "1"})
    r = client.post("/console/kb/hire-subsidy/edit", data={"csrf_token": token, "question": "吸纳就业补贴",
                                                           "answer": "我的版本", "revision": "1"})
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert 'id="kb-conflict"' in page and ' style="' not in page
    assert re.search(r'class="[^"]*\bpre-wrap\b', page)
    css = (Path(__file__).resolve().parents[2] / "static" / "console.css").read_text(encoding="utf-8")
    assert re.search(r"\.pre-wrap\s*\{[^}]*white-space:\s*pre-wrap", css)


def test_a_phrasing_typed_twice_or_repeating_the_question_is_kept_once(client, kb, make_staff, console_login, db):
    """Pasted lists of phrasings kept their repeats (and the standard question again): the list counted 问法 4 for
    an entry asked two ways, and the form showed each repeat back to the editor."""
    token = console_login(make_staff(role="staff"))
    r = client.post("/console/kb/new", data={"csrf_token": token, "id": "startup-loan", "question": "创业担保贷款",
                                             "answer": "最高 50 万元。",
                                             "similar": "创业贷款怎么申请\n创业贷款怎么申请\n创业担保贷款\n 创业贷款怎么申请 |无息贷款"})
    assert r.status_code == 302
    db.expire_all()
    assert db.get(KBEntry, "startup-loan").similar == ["创业贷款怎么申请", "无息贷款"]


def test_adding_a_queue_question_that_another_entry_already_holds_warns_as_the_form_does(
    client, kb, make_staff, console_login, db
):
    """加为问法 from the unanswered queue taught an entry words another current entry already held (added to it
    since the question was asked): the bot goes on answering them with the other one, and nothing said so, while
    the edit form warns of the very same clash."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    token = console_login(make_staff(role="staff"))
    _entry(db, "locker-repair", "快递柜报修", similar=["楼下快递柜坏了找谁修"])
    _entry(db, "property-service", "物业服务电话")
    q = UnansweredQuestion(norm="楼下快递柜坏了找谁修", text="楼下快递柜坏了找谁修？", count=4)
    db.add(q)
    db.commit()
    r = client.post(f"/console/kb/unanswered/{q.id}/phrasing",
                    data={"csrf_token": token, "entry_id": "property-service", "status": "open"})
    assert r.status_code == 302
    said = " ".join(_flashes(client.get(r.headers["Location"]).get_data(as_text=True)))
    assert "已把这个问法加到条目 property-service" in said
    assert "locker-repair" in said and "重复" in said
    assert _audits(db, "kb.phrasing_added") == 1


def test_a_new_entry_made_from_a_queue_question_another_entry_already_holds_warns_of_the_asked_words(
    client, kb, make_staff, console_login, db
):
    """新建条目 from the queue gives the new entry the words as asked; the clash warning looked at the form's fields
    only, so words another current entry already held were added without a word."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    token = console_login(make_staff(role="staff"))
    _entry(db, "locker-repair", "快递柜报修", similar=["楼下快递柜坏了找谁修"])
    q = UnansweredQuestion(norm="楼下快递柜坏了找谁修", text="楼下快递柜坏了找谁修", count=2)
    db.add(q)
    db.commit()
    r = client.post("/console/kb/new", data={"csrf_token": token, "id": "locker-owner", "question": "快递柜归谁管",
                                             "answer": "归物业管理。", "from_unanswered": str(q.id)})
    assert r.status_code == 302, r.get_data(as_text=True)
    said = " ".join(_flashes(client.get(r.headers["Location"]).get_data(as_text=True)))
    assert "楼下快递柜坏了找谁修" in said and "locker-repair" in said
    db.expire_all()
    assert db.get(UnansweredQuestion, q.id).status == "resolved"


def test_a_retire_value_other_than_1_or_0_is_refused_not_taken_as_restore(client, kb, make_staff, console_login, db):
    """下线 takes retire=1, 恢复上线 retire=0; anything else (retire=true from a script or a hand-made form) restored an
    offline entry, the opposite of what was asked. It is refused now and the entry stays as it was."""
    token = console_login(make_staff(role="staff"))
    _entry(db, "old-policy", "老政策怎么申请", retired=True)
    r = client.post("/console/kb/old-policy/retire", data={"csrf_token": token, "retire": "true"})
    assert r.status_code == 422, r.status_code
    assert "只能是 1" in r.get_data(as_text=True)
    db.expire_all()
    assert db.get(KBEntry, "old-policy").retired is True


def test_kb_search_says_the_decision_in_words(app, app_ctx):
    """`kb search` printed the code alone (决定：fallback); staff read 答不上来 / 给出选项 / 直接回答 now, the code beside it."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    load_default_if_empty()
    for q, words in (("外籍人才工作许可怎么办", "直接回答 [answer]"), ("营业执照", "给出选项"),
                     ("今天股票涨不涨", "答不上来")):
        out = app.test_cli_runner().invoke(args=["kb", "search", q]).output
        assert out.splitlines()[0].startswith(f"决定：{words}"), out
