"""Knowledge-base API for the mini-program: search, chat with the bot, entry detail, 有用/没用 feedback."""

from __future__ import annotations

import hashlib
import re

from flask import Blueprint, Flask, current_app, jsonify, request

from ..auth.blocking import refuse_if_blocked
from ..auth.guard import optional_user_id
from ..db import session_scope
from ..errors import NotFound
from ..http import doc, limit_key, parse, query, throttle
from ..validation import Field, text_key
from .bot import forget_choices, respond
from .chat import bot_decision
from .services import entry_from_row, get_runtime, record_feedback, today_shanghai, turn_vote_token

bp = Blueprint("kb_api", __name__, url_prefix="/api/v1")

SEARCH_PARAMS = (Field("q", "str", "问题", required=True, max_len=5000),
                 Field("limit", "int", "条数", min=1, max=20, default=5))
CHAT_FIELDS = (Field("text", "text", "消息", required=True, max_len=5000),
               # A caller without a login names its conversation, so that the choices offered (“您是不是想问”) are
               # remembered for it alone: by address only, everyone behind one office router shared them.
               Field("session", "str", "会话编号", max_len=64,
                     check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_-]{8,64}", v) else
                     "会话编号应为 8-64 位字母、数字、- 或 _"))
FEEDBACK_FIELDS = (Field("entry_id", "str", "条目编号", required=True, max_len=128),
                   Field("useful", "bool", "是否有用", required=True),
                   Field("turn_id", "int", "问答编号", min=1),
                   # Sent with an anonymous chat answer: the vote on that turn needs it (ids are sequential).
                   Field("vote_token", "str", "评价凭证", max_len=64))
ANON_LIMIT_PER_MIN = 30
USER_LIMIT_PER_MIN = 30  # chat of a logged-in user (the `chat_limit` knob)
SEARCH_LIMIT_PER_MIN = 60  # searches per user or client address (`kb_search_limit`)
FEEDBACK_LIMIT_PER_MIN = 30  # 有用/没用 per user or client address (`kb_feedback_limit`)


def _who(user_id: int | None, session: str | None = None) -> str:
    if user_id is not None:
        return f"u{user_id}"
    ip = request.remote_addr or "?"
    # Through throttle: a counter whose expiry was never set (the process stopped between INCR and EXPIRE)
    # refused the whole address for good, and Retry-After said 60 whatever was left of the minute.
    throttle("anon_chat", limit_key(ip), ANON_LIMIT_PER_MIN, 60, "提问太频繁了，请稍等一分钟再试。")
    if session:  # the caller's own conversation (the address is part of it: a session id is not a secret)
        return _session_who(session)
    return "ip" + hashlib.sha1(ip.encode()).hexdigest()[:16]


def _session_who(session: str) -> str:
    ip = request.remote_addr or "?"
    return "s" + hashlib.sha1(f"{ip}\0{session}".encode()).hexdigest()[:16]


def _caller() -> str:
    user_id = optional_user_id()
    return f"u{user_id}" if user_id is not None else f"ip:{limit_key(request.remote_addr or '?')}"


@bp.get("/kb/search")
@doc("检索知识库：返回决定（answer/suggest/fallback）和候选条目", params=SEARCH_PARAMS, auth="optional",
     tags=["知识库"])
def search():
    q = query(SEARCH_PARAMS)
    throttle("kb_search", _caller(), SEARCH_LIMIT_PER_MIN, 60, "查询太频繁了，请稍等一分钟再试。")
    kb = get_runtime().get()
    decision, hits = bot_decision(kb, q["q"], q["limit"])
    return jsonify({
        "decision": decision.kind,
        "results": [{"id": h.entry.id, "question": h.entry.question, "answer": h.entry.answer,
                     "category": h.entry.category, "score": round(h.confidence, 4)} for h in hits],
    })


@bp.post("/chat")
@doc("和数字店小二对话（与公众号里的机器人同一套说法；诉求登记、评价等在小程序页面中完成）；登录可选，未登录时"
     "可带 session（8-64 位，客户端自取的会话编号）让“您是不是想问”的选项只对本会话有效；登录后继续带同一个 session，"
     "登录前列出的选项接着有效。对列出的选项回复“都不是”“不是这个”等：decision 为 fallback（原问题记入待答问题，"
     "选项作废）；回复“换一批”：decision 为 suggest，给出下一批选项（没有更多时同“都不是”）。"
     "decision：answer / suggest / fallback / smalltalk / handoff / guide（指向小程序页面）", body=CHAT_FIELDS,
     auth="optional", tags=["知识库"], responses={200: "{reply, decision, suggestions, turn_id, vote_token}", 403: "账号受限，不能进行这项操作（account_restricted）"})
def chat():
    from handlers.bot import HUMAN_APP, MENU_REPLY, app_picked_item, app_reply
    from handlers.kb import ChatMemory, menu_shown

    data = parse(CHAT_FIELDS)
    user_id = optional_user_id()
    refuse_if_blocked(user_id)  # as in WeChat, no answer for them; the app must be told something, politely
    state = current_app.extensions["wxapp"]
    who = _who(user_id, data.get("session"))
    memory = ChatMemory(state.redis, "api", who)
    if user_id is not None:  # anonymous callers are counted by address in _who
        throttle("chat", who, USER_LIMIT_PER_MIN, 60, "提问太频繁了，请稍等一分钟再试。")
        if data.get("session"):  # logged in part-way: the choices offered before go on (“2” was 我要反映)
            memory.adopt(_session_who(data["session"]))

    def fixed(text: str, pending: bool) -> tuple[str, str] | None:
        found = app_reply(text, user_id=user_id, pending_choices=pending, memory=memory)
        if found is not None and found[0] == MENU_REPLY:  # its digits now mean the menu, as in the WeChat chat
            forget_choices(state.redis, "api", who)
            menu_shown(state.redis, "api", who)
        return found

    # The words the WeChat chat answers without the knowledge base (menu, 人工, 我要反映, 我的诉求 ...) first.
    result, turn_id = respond(get_runtime(), state.db, state.redis, data["text"], channel="api", user_id=user_id,
                              who=who, fixed=fixed, pick_item=app_picked_item)
    body = result.to_dict()
    if result.handoff:  # the knowledge base's “正在为您转接…”: the app cannot hand over, its 联系客服 button does
        body["reply"] = HUMAN_APP
    body["turn_id"] = turn_id
    # Only who got an anonymous answer may vote on it; a logged-in user's turn takes that user's vote.
    body["vote_token"] = (turn_vote_token(state.settings.secret_key, turn_id)
                          if turn_id is not None and user_id is None else None)
    return jsonify(body)


@bp.get("/kb/entries/<entry_id>")
@doc("知识条目详情（小程序详情页）", auth="none", tags=["知识库"])
def entry_detail(entry_id: str):
    from .models import KBEntry

    key = text_key(entry_id, 128)
    with session_scope() as s:
        row = s.get(KBEntry, key) if key else None
        if row is None or row.retired:
            raise NotFound("没有找到这个条目，可能已经下线。")
        entry = entry_from_row(row)
        # Never shown as current out of its validity (Shanghai's day), as the chat and the search never offer it.
        today = today_shanghai()
        if entry.valid_until is not None and today > entry.valid_until:
            raise NotFound(f"这项政策已于 {entry.valid_until.isoformat()} 截止，目前不再受理。"
                           "有新政策时我们会第一时间更新，也可以直接问数字店小二。")
        if entry.valid_from is not None and today < entry.valid_from:
            raise NotFound(f"这项政策自 {entry.valid_from.isoformat()} 起施行，目前还不能办理，请到时再来看看。")
        return jsonify(entry.to_dict())


@bp.post("/kb/feedback")
@doc("对一条回答点“有用/没用”：对话中的回答带 turn_id（未登录时还要带回答里的 vote_token），"
     "不带 turn_id 的评价需要登录", body=FEEDBACK_FIELDS, auth="optional", tags=["知识库"])
def feedback():
    data = parse(FEEDBACK_FIELDS)
    user_id = optional_user_id()
    refuse_if_blocked(user_id)
    throttle("kb_feedback", _caller(), FEEDBACK_LIMIT_PER_MIN, 60, "评价太频繁了，请稍等一分钟再试。")
    with session_scope() as s:
        fb = record_feedback(s, turn_id=data["turn_id"], entry_id=data["entry_id"], user_id=user_id,
                             useful=data["useful"], secret=current_app.extensions["wxapp"].settings.secret_key,
                             vote_token=data.get("vote_token"))
        return jsonify({"id": fb.id, "useful": fb.useful})


def register(app: Flask) -> None:
    from . import cli, console

    app.register_blueprint(bp)
    app.register_blueprint(console.bp)
    cli.register(app)
    app.extensions.setdefault("wxapp_warmups", []).append(lambda: get_runtime().get())
