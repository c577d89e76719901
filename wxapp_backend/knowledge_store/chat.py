"""The bot's answer to one text: answer, "您是不是想问" choices, or an honest fallback — one path for every channel."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date

from knowledge.analysis import has_han
from knowledge.schema import Entry
from knowledge.search import Decision, KnowledgeBase
from knowledge.smalltalk import detect_smalltalk, feedback_of, has_no_content, is_venting, without_faces

from ..validation import LINK_RE

# A passive WeChat reply is cut at about 2048 bytes; Chinese is 3 bytes a character.
MAX_REPLY_CHARS = 600
SUGGEST_COUNT = 3

# Also the WeChat router's and the app chat's fixed words (handlers.bot): “你好” and “你好小二”, “小二你好”, “hi 小二” read
# the same, whichever path answers (a bare greeting got a shorter reply than one addressed to 小二).
GREETING = ("您好！我是营商服务中心的数字店小二 🙂 惠企政策、企业开办、人才落户、融资、涉税、楼宇和白领活动，"
            "都可以直接问我，比如：“外籍人才工作许可怎么办”；回复“菜单”看看我能做什么。")
# Also the WeChat router's fixed words (handlers.bot): “谢谢” and “谢谢小二” read the same, whichever path answers.
THANKS = "不客气！还有问题随时找小二～"
BYE = "好的，祝您工作顺利，再见！有需要随时找小二～"
ACK = "好的～还有什么想了解的，直接问我就行。"
# “你好笨”, “垃圾”, “没用”: the bot did not help (they got “我还没学会，已经记下来” and a row in staff's queue).
VENT = ("抱歉没能帮上您，小二还在学习中～您可以：\n· 换个说法再问问我\n· 回复“人工”请工作人员帮您\n"
        "· 对服务有意见建议，回复“我要反映”，我们会认真处理")
# “有用”, “很有帮助”: the answer helped (it got “我还没学会，已经记下来”).
HELPED = "很高兴能帮到您！还有其他问题，随时问小二～"
HANDOFF = "好的，正在为您转接人工客服，请稍候。工作时间以外，您也可以回复“我要反映”留下诉求，我们会尽快联系您。"
FALLBACK = ("抱歉，这个问题我还没学会。我已经把它记下来，工作人员会尽快补充。\n"
            # Bullets, not numbers: a digit reply means the menu (2 我要反映, 3 白领活动 ...), not this list.
            "您可以：\n· 换个说法再问问我\n· 回复“人工”联系工作人员\n· 回复“我要反映”提交诉求，我们会在承诺时限内答复")
# A question in English (or another Latin-script language) the knowledge base could not place: it got the Chinese
# “我还没学会” alone, which the foreign staff of a company (外籍人才 are among our users) may not read.
NOT_CHINESE = ("您好！小二目前只能看懂中文问题，请用中文再问一次；也可以回复“人工”联系工作人员。\n"
               "Hello! I can only read questions in Chinese for now. Please ask again in Chinese, "
               "or reply 人工 to reach our staff.")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
NO_WORDS = "小二收到啦～想了解政策或办事，请直接用文字问我；回复“菜单”看看我能做什么。"
# “啊” × 3,000, “嗯嗯嗯”, “我想问一下”: nothing asked yet (they got “我还没学会，已经记下来” and a row in staff's queue).
NO_CONTENT = ("小二在呢～您想了解什么、需要办什么事，直接说具体些就好（例如“营业执照丢了怎么办”）；"
              "回复“菜单”看看我能做什么。")
# “都不是”, “不是这个”, “错了” to “您是不是想问” (knowledge_store.bot): the fallback's way out, said of the question the
# choices were for (“不是这个” got “这个问题我还没学会”, and was itself a row in staff's queue of questions to answer).
NONE_OF_THEM = "抱歉，看来小二没猜对～"
NO_MORE_CHOICES = "抱歉，小二暂时没有更多相关的问题了～"
NONE_LOGGED = "您刚才的问题我已经记下来，工作人员会尽快补充。\n"
NONE_WAYS = ("您可以：\n· 换个说法再问问我，说得具体些更好（例如“小微企业贷款有贴息吗”）\n· 回复“人工”联系工作人员\n"
             "· 回复“我要反映”提交诉求，我们会在承诺时限内答复")
CHOICE_GONE = "您选的这条内容刚刚下线或已过有效期，目前不再提供。"
# A bare number that picks nothing: not a question for the knowledge base (it found "similar" entries for "2").
PICK_AGAIN = "请回复 {choices}查看对应的答案；都不是的话，回复“都不是”，或者直接输入您的问题。"
OTHER_CHOICES = "\n\n（想看刚才列出的其他问题，回复 {numbers}）"
NUMBER_ONLY = "小二没看明白这个数字～想了解政策或办事，请直接用文字问我；回复“菜单”看看我能做什么。"
# A phone, account or ID-card number alone (“1111111111111”, “021-12345678”): no question for the knowledge base (it
# got “我还没学会，已经记下来” and a row in staff's unanswered queue). Often meant for staff: say how to reach them.
NUMBER_LONG = ("小二没看明白这串数字～如果是想把联系方式或证件号留给工作人员，请回复“我要反映”登记诉求，或回复“人工”联系"
               "工作人员；想了解政策或办事，请直接用文字问我。")
LONG_NUMBER_DIGITS = 7
EXPIRED_NOTE = "您问的“{q}”已经过了有效期（截至 {until}），目前不再受理。有新政策时我们会第一时间更新。"
NOT_YET_NOTE = "您问的“{q}”自 {since} 起施行，目前还不能办理。到时候再来问我，就能看到办理方式。"



# The bot judges a question on this many candidates; the search API and `flask kb search` report the same
# judgement whatever page size they show (the confidence depends on the candidate pool, so a larger page could
# turn a "fallback" into a "suggest").
CHAT_LIMIT = 5


def bot_decision(kb: KnowledgeBase, query: str, limit: int) -> tuple[Decision, list]:
    """The decision the bot would take on `query`, and `limit` hits to show with it."""
    decision = kb.decide(query, limit=CHAT_LIMIT)
    if decision.kind != "fallback" and limit <= CHAT_LIMIT:
        return decision, list(decision.hits[:limit])
    return decision, kb.search(query, limit)


@dataclass
class ChatResult:
    """What to say, why, and what to remember for the next turn."""

    reply: str
    decision: str  # answer | suggest | fallback | smalltalk | handoff
    entry_id: str | None = None
    confidence: float = 0.0
    suggestions: list[dict] = field(default_factory=list)  # [{"id", "question"}], numbered 1..n in the reply
    handoff: bool = False
    truncated: bool = False
    # A reply picking one of the last turn's numbered choices (which stay for another pick): not a question of its
    # own, so it is logged as a pick, outside 提问 and the unanswered queue.
    picked: bool = False
    # The current entries the search weighed for a question (best first, any decision; empty when no search was
    # made): the console's "possibly related" entries, from the same search as the decision.
    candidates: list = field(default_factory=list, repr=False)
    # “有用” (True) / “没用” (False) said of the answer just given: the caller records it as a vote on that answer.
    feedback: bool | None = None
    # The question a “都不是” to its choices left unanswered (logged to staff's queue): what the WeChat chat offers as
    # an appeal's description, instead of “都不是”; "" when that question is not known (nothing to offer). None: no
    # “都不是”.
    asked: str | None = None

    def to_dict(self) -> dict:
        return {"reply": self.reply, "decision": self.decision, "entry_id": self.entry_id,
                "suggestions": self.suggestions, "handoff": self.handoff}


def format_answer(entry: Entry, *, max_chars: int = MAX_REPLY_CHARS, detail_hint: str = "") -> tuple[str, bool]:
    """The answer text with the policy facts users act on; long answers are shortened with a pointer."""
    parts = [entry.answer.strip()]
    if entry.has_policy:
        facts = [("适用对象", entry.eligibility), ("支持内容", entry.benefit), ("申报时间", entry.window),
                 ("办理渠道", entry.where_to_apply)]
        lines = [f"【{label}】{value.strip()}" for label, value in facts if value and value.strip()
                 and value.strip() not in entry.answer]
        if entry.valid_until:
            lines.append(f"【有效期至】{entry.valid_until.isoformat()}")
        if entry.url:
            lines.append(f"【原文】{entry.url}")
        if lines:
            parts.append("\n".join(lines))
    text = "\n\n".join(parts)
    if len(text) <= max_chars:
        return text, False
    hint = detail_hint or "（内容较长，完整内容请在小程序“政策问答”中查看）"
    # The facts under a long answer (【有效期至】, 【原文】) were cut off, or their link cut mid-way: the body gives way
    # to them, when they leave it room.
    facts = parts[1] if len(parts) > 1 else ""
    room = max_chars - len(hint) - 1 - len(facts) - 2
    if facts and room >= max_chars // 3:
        return _cut(parts[0], room) + "…" + hint + "\n\n" + facts, True
    return _cut(text, max_chars - len(hint) - 1) + "…" + hint, True


def _cut(text: str, room: int) -> str:
    """`text` to at most `room` characters, never ending inside a link: WeChat still makes a cut link clickable, and it
    opens a wrong page."""
    for m in LINK_RE.finditer(text):
        if m.start() < room < m.end():
            room = m.start()
            break
    return text[:room].rstrip()


def _suggest_reply(hits) -> tuple[str, list[dict]]:
    items = [{"id": h.entry.id, "question": h.entry.question} for h in hits[:SUGGEST_COUNT]]
    lines = [f"{i}. {item['question']}" for i, item in enumerate(items, 1)]
    return "您是不是想问：\n" + "\n".join(lines) + "\n回复数字即可查看答案。", items


def ask(kb: KnowledgeBase, text: str, *, last_suggestions: list[str] | None = None,
        detail_hint: str = "") -> ChatResult:
    """Decide what the bot says to `text`; `last_suggestions` are the ids offered in the previous turn."""
    text = (text or "").strip()
    if not text:
        return ChatResult("您好像没有输入内容，想了解什么可以直接问我～", "smalltalk")
    choice = _numbered_choice(text, last_suggestions)
    if choice is None and last_suggestions:
        several = _several_choices(text, len(last_suggestions))  # “2和3”: the first now, the others are offered after it
        choice = last_suggestions[several[0]] if several else None
    if choice is not None:
        entry = kb.get(choice)
        if entry is not None and entry.is_current(kb.today or date.today()):
            reply, cut = format_answer(entry, detail_hint=detail_hint)
            others = [str(i) for i, c in enumerate(last_suggestions or [], 1) if c != choice]
            if others:  # the list stays: say so, or a digit after this would surprise (it is no menu digit)
                reply += OTHER_CHOICES.format(numbers="、".join(others))
            return ChatResult(reply, "answer", entry.id, 1.0, truncated=cut, picked=True)
        # Retired or lapsed since the choices were offered: never give it as current.
        return ChatResult(CHOICE_GONE + "\n\n" + FALLBACK.split("\n", 1)[1], "fallback", picked=True)
    bare = _bare_number(text)
    if bare or number_noise(text):
        if bare and last_suggestions:  # a number outside the choices: the choices stay, the number says which to pick
            n = len(last_suggestions)
            return ChatResult(PICK_AGAIN.format(choices="1 " if n == 1 else f"1～{n} 之间的数字"), "smalltalk")
        long = sum(ch.isdigit() for ch in unicodedata.normalize("NFKC", text)) >= LONG_NUMBER_DIGITS
        return ChatResult(NUMBER_LONG if long else NUMBER_ONLY, "smalltalk")
    small = detect_smalltalk(text)
    if small == "handoff":
        return ChatResult(HANDOFF, "handoff", handoff=True)
    if small == "greeting":
        return ChatResult(GREETING, "smalltalk")
    if small == "thanks":
        return ChatResult(THANKS, "smalltalk")
    if small == "bye":
        return ChatResult(BYE, "smalltalk")
    if small == "ack":
        return ChatResult(ACK, "smalltalk")
    helped = feedback_of(text)  # (“没用” vents too: a vote all the same)
    if is_venting(text):
        return ChatResult(VENT, "smalltalk", feedback=helped)
    if helped is not None:
        return ChatResult(HELPED if helped else VENT, "smalltalk", feedback=helped)
    if not any(ch.isalnum() for ch in without_faces(text)):
        # 👍 alone (or WeChat's “/:strong”) is no question: not “我还没学会” nor a row in the staff's unanswered queue.
        return ChatResult(NO_WORDS, "smalltalk")
    if has_no_content(text):  # fillers, one character over and over, 请问-words alone: no question for staff
        return ChatResult(NO_CONTENT, "smalltalk")
    decision: Decision = kb.decide(text, limit=CHAT_LIMIT)
    if decision.kind == "answer" and decision.best is not None:
        best = decision.best
        reply, cut = format_answer(best.entry, detail_hint=detail_hint)
        return ChatResult(reply, "answer", best.entry.id, best.confidence, truncated=cut,
                          candidates=decision.candidates)
    if decision.kind == "suggest" and decision.hits:
        reply, items = _suggest_reply(decision.hits)
        return ChatResult(reply, "suggest", None, decision.hits[0].confidence, suggestions=items,
                          candidates=decision.candidates)
    day = kb.today or date.today()
    # Say honestly that the policy has ended (or has not started yet: "expired" hits are all the entries not
    # current, and one entered ahead of time was called ended) rather than pretending not to know it.
    for hit in decision.expired:
        e = hit.entry
        if e.retired:
            continue
        if e.valid_from is not None and day < e.valid_from:
            note = NOT_YET_NOTE.format(q=e.question, since=e.valid_from)
        elif e.valid_until is not None and day > e.valid_until:
            note = EXPIRED_NOTE.format(q=e.question, until=e.valid_until)
        else:
            continue
        return ChatResult(note + "\n\n" + FALLBACK.split("\n", 1)[1], "fallback", None, hit.confidence,
                          candidates=decision.candidates)
    latin = not has_han(text) and len(_LATIN_WORD.findall(text)) >= 2
    return ChatResult(NOT_CHINESE if latin else FALLBACK, "fallback", None,
                      decision.best.confidence if decision.best else 0.0, candidates=decision.candidates)


_NUMERALS = frozenset("一二三四五六七八九十零〇两")


def _bare_number(text: str) -> bool:
    """A reply that is only a number ("5", "０", "-1", "二", "第4个"), as people answer numbered choices."""
    t = unicodedata.normalize("NFKC", text).strip().strip(_CHOICE_PUNCT)
    t = (_CHOICE_WORDS.sub("", t) or t).strip(_CHOICE_PUNCT)
    return bool(t) and (bool(_BARE_NUMBER.fullmatch(t)) or (len(t) <= 2 and all(ch in _NUMERALS for ch in t)))


_BARE_NUMBER = re.compile(r"[-+]?\d{1,12}")
# Digits with what people type between them (spaces, dashes, brackets, dots), and nothing else.
_NUMBER_NOISE = re.compile(r"\+?[\d\s\-–—().,/]*\d[\d\s\-–—().,/]*")


def number_noise(text: str) -> bool:
    """A text of digits alone, however long, grouped as people type phone numbers (“138 0013 8000”, “021-1234…”)."""
    return bool(_NUMBER_NOISE.fullmatch(unicodedata.normalize("NFKC", text).strip()))


# “第二个”, “选3”, and as people ask on (“那第二个呢”: it got “这个问题我还没学会”); “我选2”, “选项2”, “No.2” too (they
# were questions for the knowledge base: “没学会”, a row in staff's queue, the choices dropped).
_CHOICE_WORDS = re.compile(r"^(?:那就?|那)?我?(?:[选選](?:[择擇]|项|項)?|要|看)?(?:第|no\.?\s*|№)?|"
                           r"(?:[个個条條项項号號])?(?:吧|的|呢)?$", re.IGNORECASE)
_CHOICE_JOINS = re.compile(r"\s*(?:和|跟|与|及|还有|、|,|，|/|\s)\s*")


def _several_choices(text: str, count: int) -> list[int] | None:
    """The 0-based positions a reply picks when it names several of `count` numbered lines (“2和3”, “1、3”), or None."""
    parts = [p for p in _CHOICE_JOINS.split(unicodedata.normalize("NFKC", text).strip().strip(_CHOICE_PUNCT)) if p]
    if not 2 <= len(parts) <= count:
        return None
    picked = [choice_index(p, count) for p in parts]
    return picked if all(i is not None for i in picked) else None  # type: ignore[return-value]


def _numbered_choice(text: str, last: list[str] | None) -> str | None:
    if not last:
        return None
    index = choice_index(text, len(last))
    return last[index] if index is not None else None


_CHOICE_NUMERALS = {"一": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5", "六": "6", "七": "7", "八": "8",
                    "九": "9"}
# (brackets too: “(2)”, “【2】” as the number was written; it got “小二没看明白这个数字”)
_CHOICE_PUNCT = " 。.、，,！!？?～~…()[]【】"


def choice_number(text: str) -> int | None:
    """The number a reply to numbered lines says (“2”, “２”, “二”, “第二个”, “第2条”, “3号”, “选3”, “1。”), or None.
    Every numbered choice the chat offers reads its answer with this (the menu, “您是不是想问”, lists, the rating's
    1～5, the intake's 1～4): “二” and “第三个” picked in some places and got “没看明白这个数字” in others."""
    t = unicodedata.normalize("NFKC", text).strip().strip(_CHOICE_PUNCT)
    t = (_CHOICE_WORDS.sub("", t) or t).strip(_CHOICE_PUNCT)
    t = _CHOICE_NUMERALS.get(t, t)
    # ASCII and short: "²".isdigit() is True but int("²") fails, and int() refuses 4,300 digits or more.
    if t.isascii() and t.isdigit() and len(t) <= 3:
        return int(t)
    return None


def choice_index(text: str, count: int) -> int | None:
    """The 0-based position a reply picks among `count` numbered lines (`choice_number`), or None."""
    n = choice_number(text)
    return n - 1 if n is not None and 1 <= n <= count else None
