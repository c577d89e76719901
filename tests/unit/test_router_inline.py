"""Router.plan: which messages may be dispatched in the request thread, and the state snapshot they use."""

from __future__ import annotations

from handlers import Router, Text
from handlers.bot import GREETING, install_defaults
from handlers.middleware import DEFAULT_MIDDLEWARE
from handlers.router import Context
from handlers.state import ConversationState
from wxapp_backend.wechat.messages import normalise


def ctx(msg_type="text", content=None, event=None, prefetched=None) -> Context:
    raw = {"ToUserName": "gh_x", "FromUserName": "oU", "CreateTime": "1700000000", "MsgType": msg_type}
    if content is not None:
        raw["Content"] = content
    if event:
        raw["Event"] = event
    c = Context(msg=normalise(raw, "oa"), redis=None)  # type: ignore[arg-type]
    if prefetched is not None:
        c.extra["prefetched"] = prefetched
    return c


def quick(c, call_next):
    return call_next(c)


quick.inline = True  # type: ignore[attr-defined]


def test_fast_rule_with_quick_middleware_is_planned_and_resolved_once():
    r = Router()
    r.use(quick)
    tested: list[str] = []

    @r.match(lambda c: tested.append("first") or False, cheap=True)
    def never(c):
        return "no"

    @r.text("你好", fast=True)
    def hello(c):
        return "您好"

    c = ctx(content=" 你好 ")
    assert r.plan(c) is True
    assert c.extra["rule"] == "text:你好"
    assert r.dispatch(c) == Text("您好")
    assert tested == ["first"]  # dispatch did not test the rules again


def test_what_keeps_a_message_in_the_pool():
    r = Router()

    @r.match(lambda c: False)  # not declared cheap: it may do anything
    def unknown(c):
        return None

    @r.text("你好", fast=True)
    def hello(c):
        return "您好"

    assert r.plan(ctx(content="你好")) is False

    r = Router()

    @r.text("你好")  # not declared fast
    def slow(c):
        return "您好"

    assert r.plan(ctx(content="你好")) is False

    r = Router()
    r.use(lambda c, n: n(c))  # middleware without `inline`

    @r.text("你好", fast=True)
    def hello2(c):
        return "您好"

    assert r.plan(ctx(content="你好")) is False

    r = Router()

    @r.default
    def fallback(c):
        return None

    assert r.plan(ctx(content="什么")) is False
    r.default(fast=True)(fallback)
    assert r.plan(ctx(content="什么")) is True


def test_default_bot_plans_greetings_only_when_the_users_data_came_with_the_claim():
    r = install_defaults(Router())
    hit = {"user": b"7:0", "state": None, "rate_count": 1}
    assert r.plan(ctx(content="你好", prefetched=hit)) is True
    assert r.plan(ctx(content="你好", prefetched={**hit, "user": None})) is False  # cache miss: database
    assert r.plan(ctx(content="你好", prefetched={**hit, "rate_count": None})) is False  # count not read
    assert r.plan(ctx(content="你好")) is False  # nothing prefetched (jobs, tests)
    assert r.plan(ctx("event", event="subscribe", prefetched=hit)) is False  # follow is written
    assert r.plan(ctx(content="开办企业需要什么材料", prefetched=hit)) is False  # knowledge base
    c = ctx(content="你好", prefetched=hit)
    assert r.plan(c) and r.dispatch(c) == Text(GREETING) and c.user_id == 7
    assert all(getattr(m, "inline", None) is not None for m in DEFAULT_MIDDLEWARE)


def test_state_snapshot_is_used_until_the_state_changes():
    class FakeRedis:
        def __init__(self):
            self.reads = 0
            self.data = {}

        def get(self, key):
            self.reads += 1
            return self.data.get(key)

        def set(self, key, value, ex=None):
            self.data[key] = value

    fake = FakeRedis()
    s = ConversationState(fake, "oa", "oU", snapshot=b'{"flow":"appeal"}')  # type: ignore[arg-type]
    first = s.get()
    first["flow"] = "changed"  # the caller's copy only
    assert s.get() == {"flow": "appeal"} and fake.reads == 0
    s.set({"flow": "other"})
    assert s.get() == {"flow": "other"} and fake.reads == 1
    assert ConversationState(fake, "oa", "oX", snapshot=None).get() == {}

    c = ctx(content="x", prefetched={"state": b'{"a":1}'})
    c.redis = fake  # type: ignore[assignment]
    assert c.state.get() == {"a": 1} and fake.reads == 1


def test_context_text_follows_the_message():
    c = ctx(content=" 你好 ")
    assert c.text == "你好"
    c.msg = ctx(content="再见").msg
    assert c.text == "再见"
    assert ctx("image").text == ""


def test_fixed_answers_are_planned_with_their_reply():
    r = Router()
    r.use(quick)
    assert r.text("你好", answer=Text("您好呀")) is None  # registered at once, nothing to decorate

    @r.text("开办企业")
    def slow(c):
        return "知识库"

    hello = ctx(content="你好")
    assert r.plan(hello) and hello.answer == Text("您好呀")
    assert r.dispatch(hello) == Text("您好呀")  # the usual path gives the same reply
    other = ctx(content="开办企业")
    assert not r.plan(other) and other.answer is None  # not fast: no plan, no fixed answer


def test_default_rules_have_fixed_answers_only_where_the_reply_never_varies():
    r = install_defaults(Router())
    greeting = ctx(content="你好", prefetched={"user": b"1:0", "state": None, "rate_count": 1})
    assert r.plan(greeting) and greeting.answer == Text(GREETING)
    # A question for the knowledge base has no fixed answer.
    question = ctx(content="开办企业要什么材料", prefetched={"user": b"1:0", "state": None, "rate_count": 1})
    r.plan(question)
    assert question.answer is None


# ----------------------------------------------------------------------------- remembered plans

NO_STATE = {"user": b"1:0", "state": None, "rate_count": 1}


def counting_router(pure: bool) -> tuple[Router, list[str]]:
    r = Router()
    r.use(quick)
    tested: list[str] = []

    @r.match(lambda c: tested.append(c.text) or c.text == "stop", cheap=True, pure=pure)
    def stop(c):
        return "stopped"

    r.text("你好", answer=Text("您好"))

    @r.regex(r"^(\d+)号$", fast=True)
    def number(c):
        return f"第{c.match.group(1)}号"

    return r, tested


def test_a_plan_for_a_user_with_no_state_is_remembered_when_every_rule_tried_is_pure():
    r, tested = counting_router(pure=True)
    first, second = ctx(content="你好", prefetched=dict(NO_STATE)), ctx(content="你好", prefetched=dict(NO_STATE))
    assert r.plan(first) and r.plan(second)
    assert tested == ["你好"]  # the second message ran only the winning rule's test
    assert second.answer == Text("您好") and second.extra["rule"] == "text:你好"
    assert r.dispatch(second) == Text("您好")


def test_a_remembered_regex_plan_still_matches_each_message_itself():
    r, _ = counting_router(pure=True)
    a, b = ctx(content="3号", prefetched=dict(NO_STATE)), ctx(content="7号", prefetched=dict(NO_STATE))
    assert r.plan(a) and r.plan(b)
    assert r.dispatch(a) == Text("第3号") and r.dispatch(b) == Text("第7号")


def test_an_impure_matcher_is_asked_every_time():
    r, tested = counting_router(pure=False)  # negative control: the same router with the matcher not declared pure
    for _ in range(3):
        assert r.plan(ctx(content="你好", prefetched=dict(NO_STATE)))
    assert tested == ["你好", "你好", "你好"]


def test_no_remembered_plan_with_conversation_state_or_unknown_state():
    r, tested = counting_router(pure=True)
    with_state = {**NO_STATE, "state": b'{"flow": "x"}'}
    for prefetched in (with_state, with_state, {"user": b"1:0"}, {"user": b"1:0"}):
        c = ctx(content="你好", prefetched=dict(prefetched))
        c._state = ConversationState(None, "oa", "oU", snapshot=prefetched.get("state"))  # type: ignore[arg-type]
        assert r.plan(c)
    assert tested == ["你好"] * 4


def test_remembered_plans_are_forgotten_when_rules_change():
    r, tested = counting_router(pure=True)
    assert r.plan(ctx(content="你好", prefetched=dict(NO_STATE)))
    r.rules.insert(0, r.rules[0].__class__("text:你好", lambda c: c.text == "你好", lambda c: "新的", fast=True))
    c = ctx(content="你好", prefetched=dict(NO_STATE))
    assert r.plan(c) and r.dispatch(c) == Text("新的")


def test_a_matcher_that_would_now_match_is_not_skipped_for_a_different_text():
    r, tested = counting_router(pure=True)
    assert r.plan(ctx(content="你好", prefetched=dict(NO_STATE)))
    c = ctx(content="stop", prefetched=dict(NO_STATE))
    assert not r.plan(c)  # "stop" is its own key: the matcher runs and wins (a rule that is not fast)
    assert tested == ["你好", "stop"]


def test_remembered_plans_are_forgotten_when_a_rule_is_replaced_in_place():
    r, _ = counting_router(pure=True)
    assert r.plan(ctx(content="你好", prefetched=dict(NO_STATE)))
    first = r.rules[0]  # the matcher before the greeting; same length afterwards, same last rule
    r.rules[0] = first.__class__("text:你好", lambda c: c.text == "你好", lambda c: "换了", fast=True, pure=True)
    c = ctx(content="你好", prefetched=dict(NO_STATE))
    assert r.plan(c) and r.dispatch(c) == Text("换了")
    r.rules = list(r.rules)  # a plain list: nothing is remembered, plans still right
    r.rules[0] = first
    c = ctx(content="你好", prefetched=dict(NO_STATE))
    assert r.plan(c) and r.dispatch(c) == Text("您好")
