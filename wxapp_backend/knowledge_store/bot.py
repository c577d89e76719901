"""The bot as every channel calls it: remembers the last choices, logs the turn, returns the reply."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

import redis
from sqlalchemy.exc import SQLAlchemyError

from knowledge.smalltalk import (
    feedback_of,
    is_clarification,
    is_none_of_these,
    is_wrong_answer,
    wants_more_choices,
)

from ..db import DB_AWAY, Database
from .chat import (
    NO_MORE_CHOICES,
    NONE_LOGGED,
    NONE_OF_THEM,
    NONE_WAYS,
    SUGGEST_COUNT,
    ChatResult,
    _bare_number,
    ask,
    choice_index,
    choice_number,
)
from .services import CHOICE, REJECTED, KBRuntime, log_turn, mask_personal, queue_unanswered

log = logging.getLogger(__name__)

MEMORY_TTL = 15 * 60
# The console's 对话测试 talks to the bot through the real webhook as this follower: staff trying the bot out are
# logged on the console channel, outside the answer rates and the unanswered queue.
SIMULATOR_OPENID_PREFIX = "console-sim-"
CONSOLE_CHANNEL = "console"


def _memory_key(channel: str, who: str) -> str:
    return f"kb:last:{channel}:{who}"


# That choices were offered (and not since answered past, nor replaced by the menu): kept longer than the choices
# themselves, so that a digit sent for them after they expired is not taken for a menu item (“2” started the appeal
# intake, “4” handed over to a person).
OFFERED_TTL = 2 * 60 * 60
CHOICES_EXPIRED = ("刚才列出的问题已经过期了（超过 15 分钟），小二不确定您选的是哪一个～请把您的问题再发一次；"
                   "回复“菜单”看看我能做什么。")


def _offered_key(channel: str, who: str) -> str:
    return f"kb:offered:{channel}:{who}"


# Lists of other things than knowledge-base entries that the bot numbers (“活动”, “我的报名”): remembered in the same
# place as the “您是不是想问” choices, as {"kind": ..., "ids": [...]}, so that a number means whichever list was shown
# last (it was main-menu item 1 after the activity list), and the menu, an answer or new choices replace them alike.
ITEM_KINDS = {"activity": "活动", "appeal": "诉求", "withdraw": "诉求"}  # withdraw: “撤回诉求”'s list (a pick asks)
ITEM_AGAIN = {"activity": "活动", "appeal": "我的诉求", "withdraw": "撤回诉求"}  # the words that list them again (“诉求” starts the intake)
ITEMS_EXPIRED = ("刚才列出的{what}已经过期了（超过 15 分钟），小二不确定您选的是哪一个～请回复“{again}”重新查看；"
                 "回复“菜单”看看我能做什么。")
ITEM_PICK_AGAIN = "请回复 {choices}查看对应的{what}，或者直接输入您的问题。"
# (kind, the picked item's id, the caller's user id, the other numbers of the list) -> (reply, decision)
PickItem = Callable[[str, "int | str", "int | None", "list[int]"], "tuple[str, str]"]


def _answered_key(channel: str, who: str) -> str:
    return f"kb:answered:{channel}:{who}"


def _asked_key(channel: str, who: str) -> str:
    """The question the pending “您是不是想问” choices (or the last answer, and the guesses a “不对” offers for it) were
    for: what a “都不是” puts into staff's unanswered queue, instead of the “都不是” itself."""
    return f"kb:asked:{channel}:{who}"


def _more_key(channel: str, who: str) -> str:
    """The search's further guesses for that question, beyond the choices shown (a JSON list of entry ids): what a
    “换一批” offers."""
    return f"kb:more:{channel}:{who}"


def _queued_key(channel: str, who: str) -> str:
    """The question a “都不是” last put into staff's unanswered queue: the same asker is counted once (REPEAT_WINDOW)."""
    return f"kb:queued:{channel}:{who}"


def _voted_turn_key(channel: str, who: str) -> str:
    """The turn that gave the last answer (“turn_id entry_id”): what a “有用” / “没用” typed next is a vote on."""
    return f"kb:answered_turn:{channel}:{who}"


def _alternatives_key(channel: str, who: str) -> str:
    """The next-best guesses for the question the last answer answered (a JSON list of entry ids): what a “不对” next
    offers instead."""
    return f"kb:alternatives:{channel}:{who}"


def _plain_key(channel: str, who: str) -> str:
    """That the bot's last reply on the knowledge base was an answer with no numbered list under it: a bare digit next
    has no list of the bot's to pick from (it was the menu's, and “2” started the appeal intake by accident)."""
    return f"kb:plain:{channel}:{who}"


def plain_answer_last(r: redis.Redis, channel: str, who: str) -> bool:
    """Whether the last numbers-free reply `plain_answer` noted is still the bot's latest (no menu, list or choices
    shown since, within MEMORY_TTL)."""
    try:
        return bool(r.exists(_plain_key(channel, who)))
    except redis.RedisError:
        return False  # unknown: a digit keeps its usual meaning


def _typed_vote(db: Database, r: redis.Redis, channel: str, who: str, user_id: int | None, useful: bool) -> bool:
    """“有用” / “没用” typed after an answer: the user's vote on that answer's turn, as the app's buttons give it (it was
    answered kindly and thrown away: the entry's votes and the 有用 share never heard of it). Best effort: with the
    database away the vote is logged (what it was, to be re-entered) and the reply goes on; it failed the message.
    True when the vote was recorded (so a reply may say it counted)."""
    if user_id is None:  # an anonymous caller votes with the turn's token (the app's buttons)
        return False
    try:
        raw = r.get(_voted_turn_key(channel, who))
    except redis.RedisError:
        return False
    if not raw:
        return False
    turn_id, _, entry_id = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
    if not turn_id:  # the answer's turn was not logged (the database away): there is no turn to vote on yet
        log.warning("typed vote not recorded: its turn was not logged",
                    extra={"channel": channel, "entry_id": entry_id, "user_id": user_id, "useful": useful})
        return False
    from ..errors import AppError
    from .services import record_feedback

    try:
        with db.session_scope() as s:
            record_feedback(s, turn_id=int(turn_id), entry_id=entry_id, user_id=user_id, useful=useful)
        return True
    except (AppError, ValueError):  # the entry or the turn gone meanwhile: nothing to vote on
        log.info("typed vote not recorded", extra={"channel": channel})
    except SQLAlchemyError:  # the database away (a restart, a lock timeout): the user still gets the reply
        log.warning("typed vote not recorded: database error", exc_info=True,
                    extra={"channel": channel, "turn_id": turn_id, "entry_id": entry_id, "user_id": user_id,
                           "useful": useful})
    return False


def log_turn_or_defer(db: Database, **turn) -> int | None:
    """`log_turn` in a transaction of its own; returns the turn's id. With the database away (a restart, connection
    refused) the answer must not fail for its log: the turn is queued (RQ, tried again for some minutes) for
    `knowledge_store.jobs.log_turn_later` to log it, with its fallback's place in staff's unanswered queue, once the
    database is back; None is returned (no turn to vote on yet). Were Redis away too, a warning keeps what it was.
    The time is fixed before the first try: a COMMIT that reached the database but whose reply was lost raises here
    too, and the queued job then finds that turn (same channel, user, question and time) instead of logging it twice."""
    from ..db import utcnow

    at = utcnow()
    try:
        with db.session_scope() as s:
            return log_turn(s, at=at, **turn).id
    except DB_AWAY as exc:
        away = exc
    from ..queue import enqueue
    from .jobs import RETRIES

    # As the log keeps it: no phone or ID number in the queue (nor in a failed job kept for a month).
    turn = dict(turn, question=mask_personal(turn["question"]), at=at.isoformat())
    what = {k: turn[k] for k in ("channel", "user_id", "decision", "entry_id", "at")}
    try:
        enqueue("wxapp_backend.knowledge_store.jobs.log_turn_later", turn, retries=RETRIES)
    except redis.RedisError:
        log.warning("chat turn not logged: database and queue away (%s)", type(away).__name__, exc_info=True,
                    extra={**what, "question": turn["question"], "unanswered": turn.get("unanswered", True)})
        return None
    log.warning("chat turn not logged: database away, queued for later (%s)", type(away).__name__, extra=what)
    return None


# “什么意思”, “没看懂” just after a reply (knowledge.smalltalk.is_clarification): about that reply. They got another
# entry's answer, with confidence (“楼宇经济…税收落地率是什么意思”), or a “您是不是想问” list of meanings.
CLARIFY_ANSWER = ("您是指刚才“{question}”的回答吧？抱歉小二没说清楚～可以把没看懂的词或那一句发给我，我再具体解释；"
                  "也可以回复“人工”，请工作人员为您讲解。")
CLARIFY_CHOICES = ("上面列出的是小二猜您想问的问题：回复对应的数字{choices}就能看到答案；都不是的话，请换个说法再问，"
                   "或回复“人工”联系工作人员。")
CLARIFY_ITEMS = "上面列出的是{what}：回复序号{choices}查看详情；还有不明白的地方，可以回复“人工”联系工作人员。"
CLARIFY_NONE = ("您指的是哪一句呢？可以把没看懂的内容或您的问题直接发给小二；也可以回复“人工”，请工作人员为您解答。")
ITEM_LISTS = {"activity": "近期可以报名的活动", "appeal": "您的诉求", "withdraw": "可以撤回的诉求"}


def _numbers(n: int) -> str:
    return " 1 " if n == 1 else f"（1～{n}）"


def _clarify(runtime: KBRuntime, r: redis.Redis, channel: str, who: str, last) -> str:
    """The answer to “什么意思”: what the last reply was (the answer's question, or the numbered list still pending) and
    how to get it explained; `last` is the pending list as remembered (choices, or {"kind", "ids"})."""
    if isinstance(last, list) and last:
        return CLARIFY_CHOICES.format(choices=_numbers(len(last)))
    if isinstance(last, dict) and last.get("kind") in ITEM_LISTS and isinstance(last.get("ids"), list) and last["ids"]:
        n = len(last["ids"])
        return CLARIFY_ITEMS.format(what=ITEM_LISTS[last["kind"]], choices=_numbers(n))
    try:
        raw = r.get(_answered_key(channel, who))
    except redis.RedisError:
        raw = None
    entry = runtime.get().get(raw.decode() if isinstance(raw, bytes) else raw) if raw else None
    return CLARIFY_ANSWER.format(question=entry.question.rstrip("？?")) if entry is not None else CLARIFY_NONE


def offer_items(r: redis.Redis, channel: str, who: str, kind: str, ids: list) -> None:
    """The bot showed `who` a numbered list of `kind` (ids in their order): a number now picks one of them."""
    if not ids:
        return  # nothing numbered was shown: the numbers offered before keep their meaning
    try:
        r.set(_memory_key(channel, who), json.dumps({"kind": kind, "ids": list(ids)}), ex=MEMORY_TTL)
        r.set(_offered_key(channel, who), kind, ex=OFFERED_TTL)
        # the last reply is this list now: a “不对” or a digit next is about it, not about an answer before it
        r.delete(*_answer_keys(channel, who))
    except redis.RedisError:
        log.warning("could not store the list memory")


def offered_list(r: redis.Redis, channel: str, who: str, *kinds: str) -> list | None:
    """The ids of the numbered list of one of `kinds` the bot showed `who` last (`offer_items`), while a number still
    picks from it; None when the last numbers offered were something else, or have expired."""
    try:
        raw = r.get(_memory_key(channel, who))
        last = json.loads(raw) if raw else None
    except (redis.RedisError, ValueError):
        return None
    if isinstance(last, dict) and last.get("kind") in kinds and isinstance(last.get("ids"), list) and last["ids"]:
        return last["ids"]
    return None


def _pick_item(r: redis.Redis, channel: str, who: str, text: str, items: dict, user_id: int | None,
               pick_item: PickItem | None) -> ChatResult | None:
    """A reply to a numbered list of items (`offer_items`): the picked item, or which numbers to pick; None when the
    text is no number (a question: the list stays until something else is answered)."""
    kind, ids = items.get("kind"), items.get("ids")
    if kind not in ITEM_KINDS or not isinstance(ids, list) or not ids or pick_item is None:
        return None
    index = choice_index(text, len(ids))
    if index is None:
        if not _bare_number(text):
            return None
        n = len(ids)
        return ChatResult(ITEM_PICK_AGAIN.format(choices="1 " if n == 1 else f"1～{n} 之间的数字",
                                                 what=ITEM_KINDS[kind]), "smalltalk")
    reply, decision = pick_item(kind, ids[index], user_id, [i + 1 for i in range(len(ids)) if i != index])
    try:  # another of the same list may be wanted next: kept, for as long again
        r.expire(_memory_key(channel, who), MEMORY_TTL)
        r.expire(_offered_key(channel, who), OFFERED_TTL)
    except redis.RedisError:
        pass
    return ChatResult(reply, decision)


# A channel's own answers that come before the knowledge base: (text, whether numbered choices are pending)
# -> (reply, decision) or None. The app's chat passes handlers.bot.app_reply (the WeChat chat's fixed words).
Fixed = Callable[[str, bool], "tuple[str, str] | None"]
_DIGITS = frozenset("1234")  # the only texts for which pending choices matter to a Fixed


def respond(runtime: KBRuntime, db: Database, r: redis.Redis, text: str, *, channel: str,
            user_id: int | None, who: str, detail_hint: str = "", fixed: Fixed | None = None,
            pick_item: PickItem | None = None, unanswered: bool = True) -> tuple[ChatResult, int | None]:
    """One turn of the bot for `who` (a stable per-user key); returns the result and the logged turn id.
    `pick_item` answers a number picking from a list other than “您是不是想问” choices (`offer_items`).
    `unanswered=False`: a fallback is no question for staff's unanswered queue (the caller knows what the text is)."""
    key = _memory_key(channel, who)
    log_channel = CONSOLE_CHANNEL if who.startswith(SIMULATOR_OPENID_PREFIX) else channel
    if fixed is not None:
        stripped = text.strip()
        # “２” from a phone's keyboard is 2, a choice too; so are “二” and “第二个”
        digit = str(choice_number(stripped)) if len(stripped) <= 8 else ""
        answer = fixed(stripped, digit in _DIGITS and choices_last(r, channel, who))
        if answer is not None:
            reply, decision = answer
            result = ChatResult(reply, decision, handoff=decision == "handoff")
            turn_id = None
            if result.handoff:  # counted with the bot's turns, as the knowledge base's hand-overs are
                turn_id = log_turn_or_defer(db, channel=log_channel, user_id=user_id, question=text,
                                            decision=decision, entry_id=None, confidence=0.0)
            return result, turn_id
    try:
        raw = r.get(key)
        last = json.loads(raw) if raw else None
    except (redis.RedisError, ValueError):
        last = None  # losing the memory only means a number reply is read as a question
    # “不对” right after an answer, and “没用” / “没有帮助” alike (they only apologised, with nothing more to try): about
    # that answer.
    if not isinstance(last, dict) and (is_wrong_answer(text) or feedback_of(text) is False):
        wrong = _wrong_answer(runtime, db, r, channel, who, user_id, useless=not is_wrong_answer(text))
        if wrong is not None:
            return wrong, None
    if is_clarification(text):  # “什么意思”: about the reply just given, no entry of its own
        return ChatResult(_clarify(runtime, r, channel, who, last), "smalltalk"), None
    if isinstance(last, dict):  # a list of activities (or other items), not knowledge-base choices
        picked = _pick_item(r, channel, who, text, last, user_id, pick_item)
        if picked is not None:
            return picked, None
        last = None
    elif not isinstance(last, list):
        last = None
    if isinstance(last, list) and last:  # “您是不是想问” choices pending
        if is_none_of_these(text):  # “都不是”, “不是这个”, “错了”: none of them (“不是这个” was searched as a question)
            return _none_of_these(db, r, channel, who, log_channel, user_id), None
        if wants_more_choices(text):  # “换一批”, “还有别的吗”: the next guesses for the same question
            return _more_choices(runtime, db, r, channel, who, log_channel, user_id), None
    if last is None and _bare_number(text):
        kind = _offered_kind(r, channel, who)
        if kind in ITEM_KINDS:  # a pick from a list of activities (or appeals) that has expired
            return ChatResult(ITEMS_EXPIRED.format(what=ITEM_KINDS[kind], again=ITEM_AGAIN[kind]), "smalltalk"), None
        if kind:
            return ChatResult(CHOICES_EXPIRED, "smalltalk"), None  # a pick from a list that has expired
    if last is None and is_wrong_answer(text):  # “不对” with no answer (nor choices) left to be about: no question
        return ChatResult(NOTHING_TO_CORRECT, "smalltalk"), None
    if last is None and wants_more_choices(text):  # “换一批” with no choices to swap: no question either
        return ChatResult(NOTHING_TO_SWAP, "smalltalk"), None
    kb = runtime.get()
    result = ask(kb, text, last_suggestions=last, detail_hint=detail_hint)
    offered = _offered_key(channel, who)
    try:
        if result.suggestions:
            r.set(key, json.dumps([s["id"] for s in result.suggestions]), ex=MEMORY_TTL)
            r.set(offered, "1", ex=OFFERED_TTL)
            shown = {s["id"] for s in result.suggestions}
            more = [h.entry.id for h in result.candidates
                    if h.entry.id not in shown and h.confidence >= kb.suggest_threshold]
            r.set(_more_key(channel, who), json.dumps(more), ex=MEMORY_TTL)
            _remember_asked(r, channel, who, text if unanswered else "")
        elif result.picked or (result.decision == "answer" and isinstance(last, list) and result.entry_id in last):
            # “第二个” next wants another of the same list: kept, for as long again. So when one of the choices was
            # typed out in full instead of its number (the list was dropped: “3” next opened menu item 3, 白领活动).
            r.expire(key, MEMORY_TTL)
            r.expire(offered, OFFERED_TTL)
            r.expire(_asked_key(channel, who), MEMORY_TTL)
            r.expire(_more_key(channel, who), MEMORY_TTL)
        elif result.decision in {"answer", "fallback"}:
            r.delete(key, offered, _more_key(channel, who))
            # the question a “不对” and then a “都不是” to its guesses leave unanswered
            _remember_asked(r, channel, who, text if result.decision == "answer" and unanswered else "")
        if result.decision == "answer" and result.entry_id:  # what a “什么意思” next is about
            r.set(_answered_key(channel, who), result.entry_id, ex=MEMORY_TTL)
            # What a “不对” next offers instead: the rest of the list it was picked from, else the search's next
            # guesses for the question.
            if isinstance(last, list) and result.entry_id in last:
                others = [c for c in last if c != result.entry_id]
            else:
                others = [h.entry.id for h in result.candidates[1:] if h.confidence >= kb.suggest_threshold]
            r.set(_alternatives_key(channel, who), json.dumps(others[:SUGGEST_COUNT]), ex=MEMORY_TTL)
            if isinstance(last, list) and result.picked and len(last) > 1:
                r.delete(_plain_key(channel, who))  # the list stays under it (“回复 1、3”): a digit picks from it
            else:
                r.set(_plain_key(channel, who), "1", ex=MEMORY_TTL)
        elif result.decision in {"suggest", "fallback"}:
            r.delete(_answered_key(channel, who), *_answer_keys(channel, who))
    except redis.RedisError:
        log.warning("could not store the suggestion memory")
    if result.feedback is not None:
        _typed_vote(db, r, channel, who, user_id, result.feedback)
    turn_id = None
    if result.decision != "smalltalk":
        # A picked choice is logged as "choice": the question was the turn that offered it (counted as suggested),
        # and a "1" is no question for the answer rates nor the unanswered queue.
        turn_id = log_turn_or_defer(db, channel=log_channel, user_id=user_id, question=text,
                                    decision=CHOICE if result.picked else result.decision,
                                    entry_id=result.entry_id, confidence=result.confidence,
                                    offered=[s["id"] for s in result.suggestions], unanswered=unanswered)
        try:  # a “有用” / “没用” next is about this answer (and about none after anything else)
            if result.decision == "answer" and result.entry_id:
                # no turn id (not logged yet: the database away): a “不对” next still gets the next guesses
                r.set(_voted_turn_key(channel, who), f"{turn_id or ''} {result.entry_id}", ex=MEMORY_TTL)
            else:
                r.delete(_voted_turn_key(channel, who))
        except redis.RedisError:
            pass
    return result, turn_id


def _remember_asked(r: redis.Redis, channel: str, who: str, question: str) -> None:
    """Keep `question` as what the choices shown now (or a “不对”'s guesses next) are for; '' forgets it (the text was
    no question for staff's queue)."""
    if question.strip():
        r.set(_asked_key(channel, who), question, ex=MEMORY_TTL)
    else:
        r.delete(_asked_key(channel, who))


def _none_of_these(db: Database, r: redis.Redis, channel: str, who: str, log_channel: str, user_id: int | None, *,
                   no_more: bool = False) -> ChatResult:
    """“都不是” (or “不是这个”, “错了”, “没有我要的”) to pending “您是不是想问” choices; `no_more`: a “换一批” with no
    further guesses. The fallback's honest way out (say it otherwise, 人工, 我要反映); the question the choices were
    for goes to staff's unanswered queue, once (taken from the memory as it is logged); the choices are dropped."""
    try:
        raw = r.getdel(_asked_key(channel, who))
        r.delete(_memory_key(channel, who), _offered_key(channel, who), _more_key(channel, who),
                 _answered_key(channel, who), *_answer_keys(channel, who))
        r.set(_plain_key(channel, who), "1", ex=MEMORY_TTL)  # no numbers shown: a digit next is asked about
    except redis.RedisError:
        log.warning("could not drop the suggestion memory")
        raw = None
    asked = (raw.decode() if isinstance(raw, bytes) else raw or "").strip()
    logged = bool(asked) and _queue_once(db, r, channel, who, log_channel, asked)
    if asked:  # the answer rates count the choices turned down (their “suggest” covered nothing)
        log_turn_or_defer(db, channel=log_channel, user_id=user_id, question=asked, decision=REJECTED, entry_id=None,
                          confidence=0.0, unanswered=False)
    reply = (NO_MORE_CHOICES if no_more else NONE_OF_THEM) + (NONE_LOGGED if logged else "\n") + NONE_WAYS
    return ChatResult(reply, "fallback", asked=asked)  # "" when not known: the “都不是” itself describes nothing


def _queue_once(db: Database, r: redis.Redis, channel: str, who: str, log_channel: str, question: str) -> bool:
    """`question` into staff's unanswered queue, unless this asker's “都不是” put it there in the last REPEAT_WINDOW
    (asked again, rejected again: one asker, as log_turn counts a repeated fallback). True when it is there. Best
    effort: with the database away the reply goes on (and does not say it was recorded)."""
    from .services import REPEAT_WINDOW

    key = _queued_key(channel, who)
    try:
        last = r.get(key)
    except redis.RedisError:
        last = None
    if last is not None and (last.decode() if isinstance(last, bytes) else last) == question:
        return True
    from ..db import utcnow

    # The time fixed before the first try (as log_turn_or_defer does): a COMMIT that reached the database but whose
    # reply was lost raises too, and the queued job then recognises that count by its time instead of adding one.
    at = utcnow()
    try:
        with db.session_scope() as s:
            queued = queue_unanswered(s, channel=log_channel, question=question, at=at)
    except DB_AWAY as exc:
        queued = _queue_later(log_channel, question, exc, at)
    if queued:
        try:
            r.set(key, question, ex=int(REPEAT_WINDOW.total_seconds()))
        except redis.RedisError:
            pass
    return queued


def _queue_later(log_channel: str, question: str, away: Exception, at: datetime) -> bool:
    """The database away: the count queued (RQ, tried again for some minutes) for
    `knowledge_store.jobs.queue_unanswered_later`, as a turn's log is (`log_turn_or_defer`); True when it is. Were
    Redis away too, a warning keeps the question."""
    from ..queue import enqueue
    from .jobs import RETRIES

    masked = mask_personal(question)
    try:
        enqueue("wxapp_backend.knowledge_store.jobs.queue_unanswered_later", log_channel, masked,
                at.isoformat(), retries=RETRIES)
    except redis.RedisError:
        log.warning("unanswered question not queued: database and queue away (%s)", type(away).__name__,
                    exc_info=True, extra={"channel": log_channel, "question": masked})
        return False
    log.warning("unanswered question queued for later: database away (%s)", type(away).__name__,
                extra={"channel": log_channel})
    return True


MORE_CHOICES = "好的，小二再猜猜，您是不是想问：\n{lines}\n回复数字即可查看答案；都不是的话，回复“都不是”。"


def _more_choices(runtime: KBRuntime, db: Database, r: redis.Redis, channel: str, who: str,
                  log_channel: str, user_id: int | None) -> ChatResult:
    """“换一批” to pending “您是不是想问” choices: the search's next guesses for the same question as new choices, or,
    with none left, the honest fallback of a “都不是”."""
    try:
        raw = r.get(_more_key(channel, who))
        more = json.loads(raw) if raw else []
    except (redis.RedisError, ValueError):
        more = []
    kb = runtime.get()
    from datetime import date

    today = kb.today or date.today()
    entries = [e for e in (kb.get(i) for i in more if isinstance(i, str)) if e is not None and e.is_current(today)]
    items = [{"id": e.id, "question": e.question} for e in entries[:SUGGEST_COUNT]]
    if not items:
        return _none_of_these(db, r, channel, who, log_channel, user_id, no_more=True)
    try:
        r.set(_memory_key(channel, who), json.dumps([i["id"] for i in items]), ex=MEMORY_TTL)
        r.set(_offered_key(channel, who), "1", ex=OFFERED_TTL)
        r.set(_more_key(channel, who), json.dumps([e.id for e in entries[SUGGEST_COUNT:]]), ex=MEMORY_TTL)
        r.expire(_asked_key(channel, who), MEMORY_TTL)
        # the last reply is this list now, as after any “您是不是想问”: a “都不是” / “不对” next is said of it, not of an
        # answer picked from the list before (a 没用 vote on that answer, and its first list offered again)
        r.delete(_answered_key(channel, who), *_answer_keys(channel, who))
    except redis.RedisError:
        log.warning("could not store the suggestion memory")
    lines = "\n".join(f"{n}. {item['question']}" for n, item in enumerate(items, 1))
    return ChatResult(MORE_CHOICES.format(lines=lines), "suggest", suggestions=items)


WRONG_SORRY = "抱歉，刚才的回答没对上您的问题，小二记下了（算作一次“没用”评价），会改进的。"
WRONG_SORRY_ANON = "抱歉，刚才的回答没对上您的问题，小二记下了，会改进的。"
# “没用”, “没有帮助”: the same vote and guesses as “不对”, said of help rather than of the question.
USELESS_SORRY = "抱歉，刚才的回答没能帮到您，小二记下了（算作一次“没用”评价），会改进的。"
USELESS_SORRY_ANON = "抱歉，刚才的回答没能帮到您，小二记下了，会改进的。"
WRONG_GUESSES = ("换个方向猜猜，您是不是想问：\n{lines}\n回复数字即可查看答案；都不是的话，回复“人工”联系工作人员，"
                 "或回复“我要反映”提交诉求。")
# Bullets, not numbers: a digit means the menu's item.
WRONG_HANDOVER = ("您可以：\n· 换个说法再问问我，说得具体些更好\n· 回复“人工”联系工作人员\n"
                  "· 回复“我要反映”提交诉求，我们会在承诺时限内答复")


def _wrong_answer(runtime: KBRuntime, db: Database, r: redis.Redis, channel: str, who: str,
                  user_id: int | None, *, useless: bool = False) -> ChatResult | None:
    """“不对” / “不是这个” / “答非所问” (`useless`: “没用”, “没有帮助”) right after an answer (within MEMORY_TTL, nothing else shown since): a 没用 vote on
    that answer (as the app's button records it: one per turn), an apology, and the next-best guesses for the question
    first asked as numbered choices, or the two hand-overs (a person, an appeal). None when no answer was just given."""
    try:
        raw_turn, raw_others = r.get(_voted_turn_key(channel, who)), r.get(_alternatives_key(channel, who))
    except redis.RedisError:
        return None
    if not raw_turn:
        return None
    counted = _typed_vote(db, r, channel, who, user_id, False)
    try:
        others = json.loads(raw_others) if raw_others else []
    except ValueError:
        others = []
    kb = runtime.get()
    from datetime import date

    today = kb.today or date.today()
    entries = [e for e in (kb.get(i) for i in others if isinstance(i, str)) if e is not None and e.is_current(today)]
    items = [{"id": e.id, "question": e.question} for e in entries[:SUGGEST_COUNT]]
    if useless:
        sorry = USELESS_SORRY if counted else USELESS_SORRY_ANON
    else:
        sorry = WRONG_SORRY if counted else WRONG_SORRY_ANON  # said only of a vote that was recorded
    try:
        # said once: a second “不对” is not about that answer any more (nor a second vote)
        r.delete(_answered_key(channel, who), *_answer_keys(channel, who))
        if items:
            r.set(_memory_key(channel, who), json.dumps([i["id"] for i in items]), ex=MEMORY_TTL)
            r.set(_offered_key(channel, who), "1", ex=OFFERED_TTL)
        else:
            r.delete(_memory_key(channel, who), _offered_key(channel, who))
            r.set(_plain_key(channel, who), "1", ex=MEMORY_TTL)  # no numbers shown: a digit next is asked about
    except redis.RedisError:
        log.warning("could not store the suggestion memory")
    if not items:
        return ChatResult(sorry + "\n" + WRONG_HANDOVER, "smalltalk")
    lines = "\n".join(f"{n}. {item['question']}" for n, item in enumerate(items, 1))
    return ChatResult(sorry + "\n" + WRONG_GUESSES.format(lines=lines), "suggest", suggestions=items)


# “不对”, “不是这个”, “答非所问” when no answer is left to be about (the conversation ran out after 15 minutes, or nothing
# was asked): they were searched as a question (“您是不是想问：对诉求处理结果不满意怎么办？”, or “我还没学会” and a row in
# staff's unanswered queue). A text with a question in it as well (“不对，我想问社保怎么交”) is asked as usual.
NOTHING_TO_SWAP = ("小二这会儿没有列出可以换的问题哦～您想了解哪方面，直接把问题发给我就好（例如“小微企业贷款有贴息吗”）；"
                   "也可以回复“人工”联系工作人员。")
NOTHING_TO_CORRECT = ("不好意思，小二不确定您指的是哪一条回答～麻烦用几个字把您的问题再说一遍（例如“社保怎么交”），"
                      "我重新帮您找；也可以回复“人工”联系工作人员，或回复“我要反映”提交诉求。")


def has_pending_choices(r: redis.Redis, channel: str, who: str) -> bool:
    try:
        return bool(r.exists(_memory_key(channel, who)))
    except redis.RedisError:
        return False


def _offered_kind(r: redis.Redis, channel: str, who: str) -> str:
    """What the last numbered list offered was: "1" for “您是不是想问” choices, an ITEM_KINDS key, or '' (none)."""
    try:
        raw = r.get(_offered_key(channel, who))
    except redis.RedisError:
        return ""
    return (raw.decode() if isinstance(raw, bytes) else raw) or ""


def choices_last(r: redis.Redis, channel: str, who: str) -> bool:
    """Whether the last numbers the bot offered were “您是不是想问” choices (pending, or expired since): a bare digit
    then means one of them, not a menu item."""
    try:
        return bool(r.exists(_memory_key(channel, who), _offered_key(channel, who)))
    except redis.RedisError:
        return False


def forget_choices(r: redis.Redis, channel: str, who: str) -> None:
    """Drop the pending choices: the bot has since offered other numbers (its menu), which a digit now means."""
    try:
        r.delete(_memory_key(channel, who), _offered_key(channel, who), _answered_key(channel, who),
                 _asked_key(channel, who), _more_key(channel, who), *_answer_keys(channel, who))
    except redis.RedisError:
        log.warning("could not drop the suggestion memory")


def answer_over(r: redis.Redis, channel: str, who: str) -> None:
    """The bot said something else since its last answer (a list, a flow's step): a “不对”, “有用” or digit next is no
    longer about that answer."""
    try:
        r.delete(*_answer_keys(channel, who))
    except redis.RedisError:
        pass  # they expire by themselves (MEMORY_TTL)


def _answer_keys(channel: str, who: str) -> tuple[str, ...]:
    """What the bot keeps of the answer it gave last, for what the user says right after it (“有用”, “不对”, “2”)."""
    return _voted_turn_key(channel, who), _alternatives_key(channel, who), _plain_key(channel, who)
