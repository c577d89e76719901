"""Small-talk detection: greetings, thanks and requests for a human, answered without the knowledge base."""

from __future__ import annotations

import re
from typing import Literal

from .analysis import get_analyzer

SmallTalk = Literal["handoff", "thanks", "greeting", "bye", "ack"]

# Whole-message small talk is short; anything longer is a real question that merely starts politely.
MAX_SMALLTALK_CHARS = 20

# WeChat's built-in faces reach an account as text: the older ones as codes (“/::)”, “/:strong” for 👍, “/:rose”),
# the newer ones by name (“[捂脸]”, or “[Facepalm]” from an English-language phone). They say no more than an emoji.
_FACE_RE = re.compile(r"/:(?:[A-Za-z]+|[^\sA-Za-z/\u3400-\u9fff][^\s/\u3400-\u9fff]{0,5})"
                      r"|\[[\u4e00-\u9fff]{1,4}\]|\[[A-Za-z][A-Za-z' -]{0,15}\]")


def without_faces(text: str) -> str:
    """`text` without WeChat's faces written as text (“/:strong”, “[微笑]”, “[Smile]”)."""
    return _FACE_RE.sub(" ", text) if ("/:" in text or "[" in text) else text

# A hand-off request can sit inside a longer sentence ("这个问题我要转人工"); "人工智能" must not match.
_HANDOFF_RE = re.compile(
    r"转人工|人工客服|人工服务|找人工|要人工|接人工|转接人工|人工(?!智能)|真人|活人|找客服|联系客服|客服在|"
    r"客服电话|找工作人员|^客服$|\bhuman\b|\bagent\b"
)
_THANKS_WORDS = (
    "非常感谢",
    "十分感谢",
    "谢谢你们",
    "谢谢您",
    "谢谢你",
    "谢谢啦",
    "谢谢了",
    "谢谢",
    "多谢",
    "感谢",
    "谢了",
    "辛苦了",
    "辛苦",
    "thank you",
    "thanks",
    "thank",
    "thx",
    "3q",
    "ty",
)
_GREETING_WORDS = (
    "你好呀",
    "你好啊",
    "你好",
    "您好",
    "在吗",
    "在不在",
    "有人吗",
    "有人在吗",
    # As impatient users open (“喂”, “有人没”: they got “这个问题我还没学会”).
    "有人在没",
    "有人没有",
    "有人没",
    "在不",
    "喂喂",
    "喂",
    "哈喽",
    "哈啰",
    "嗨",
    "早上好",
    "上午好",
    "中午好",
    "下午好",
    "晚上好",
    "早安",
    "早",
    "hello",
    "hey",
    "hi",
    "小助手",
    "店小二",  # the bot's own name: “谢谢小二”, “小二你好”
    "小二",
    # An opener before the question itself (“你好，我想问一下”): not a question the knowledge base lacks.
    "我想咨询一下",
    "想咨询一下",
    "咨询一下",
    "我想咨询",
    "我想问一下",
    "想问一下",
    "请问一下",
    "问一下",
    "我想问个问题",
    "我有个问题",
    # The same without 一 (“你好，我想问下”: it was a question the knowledge base lacked, “没学会”).
    "我想问下",
    "想问下",
    "麻烦问下",
    "请问下",
    "咨询下",
    "打扰一下",
    "打扰了",
    "问下",
    "请问",
)
# What the thanks is for (“谢谢你的帮助”, “感谢您的耐心解答”, “thank you very much”): they got a “您是不是想问” list
# (企业经营遇到困难…帮助) or “我还没学会”, a row in staff's unanswered queue.
_THANKS_FOR_RE = re.compile(r"(?:你们|您|你|小二)?的?(?:耐心|详细|细心|及时|热情)?的?"
                            r"(?:解答|回答|回复|答复|帮助|帮忙|指导|解释|服务)|very much|so much|a lot")
_BYE_WORDS = ("再见", "拜拜", "回头见", "bye")
# Filler that may surround small talk without changing what it is.
# “不用了”, “不需要了”, “没事了” close a topic as “好的” does (“不需要了” got an answer about company names).
_FILLER_RE = re.compile(r"[^\w]+|不需要了|不用了|没事了|没事儿|没事|没有了|没了|[啊呀哈嘿哦噢嗯呢吧啦了的好呀]|ok|okay|好的|"
                        r"知道了|收到|明白了")


def _residue(text: str, words: tuple[str, ...]) -> str:
    for w in words:
        text = text.replace(w, " ")
    return _FILLER_RE.sub("", text).strip()


def detect_smalltalk(text: str | None) -> SmallTalk | None:
    """Return "handoff", "thanks", "greeting", "bye" or "ack" (an acknowledgement only: 好的 / 嗯 / ok / 收到)
    when the whole message is that, else None (a real question)."""
    if not text or not isinstance(text, str):
        return None
    norm = get_analyzer().normalize(without_faces(text), max_chars=200)
    if not norm:
        return None
    if _HANDOFF_RE.search(norm) and len(norm) <= 40:
        return "handoff"
    if len(norm) > MAX_SMALLTALK_CHARS:
        return None
    if any(w in norm for w in _THANKS_WORDS) and not _residue(_THANKS_FOR_RE.sub(" ", norm),
                                                              _THANKS_WORDS + _GREETING_WORDS):
        return "thanks"
    if not _residue(norm, _BYE_WORDS + _THANKS_WORDS + _GREETING_WORDS) and any(w in norm for w in _BYE_WORDS):
        return "bye"
    if not _residue(norm, ()) and any(ch.isalnum() for ch in norm):  # filler words alone: “好的” is no hello
        return "ack"
    if not _residue(norm, _GREETING_WORDS) and any(ch.isalnum() for ch in norm):
        return "greeting"  # (“！！！”, “……” alone were greeted as a hello: they say nothing, see without_faces's callers)
    return None


# “什么意思”, “啥意思？”, “没看懂”, “能解释一下吗”: about what the bot just said, with nothing of its own to look up (the
# knowledge base answered an entry about the meaning of some other words, with confidence). Whole messages only: “照后
# 减证是什么意思” is a question.
_CLARIFY_RE = re.compile(
    r"(?:请问|那|那么|所以|可是|但是)?"
    r"(?:(?:(?:这|那)(?:个|句|句话|段|段话|条)?|上面的?|刚才的?|刚刚的?|你|您|你们)?"
    r"(?:说的|讲的|写的|回的|回复的|回答的|发的)?(?:是|都是)?(?:什么|啥|甚么|神马)意思"
    r"|我?(?:还是|有点|有些|完全|真的?|实在|都)?(?:没有?看|没有?听|没有?读|看不|听不|读不|搞不|没有?|不太|不大|不是很|不)"
    r"(?:太|大|是很)?(?:懂|明白|清楚)"
    r"|(?:能|可以|麻烦|请)?(?:再)?(?:解释|说明)(?:一下|下)?)"
    r"(?:了|呀|啊|呢|诶|哦|嘛|吗|哈)*")


# “？？”, “???”: puzzled by the reply (one “？” alone is the chat's menu word).
_PUZZLED_RE = re.compile(r"[?？]{2,}[!！。.…]*")


def _whole_message(text: str | None) -> str:
    """The message as the whole-message patterns read it: normalised, faces and punctuation dropped; '' for no text,
    or one too long to be small talk."""
    if not text or not isinstance(text, str) or len(text) > MAX_SMALLTALK_CHARS:
        return ""
    return re.sub(r"[^\w]+", "", get_analyzer().normalize(without_faces(text), max_chars=MAX_SMALLTALK_CHARS))


def is_clarification(text: str | None) -> bool:
    """True when the whole message asks what the bot's last reply meant (“什么意思”, “啥意思？”, “没看懂”)."""
    if isinstance(text, str) and len(text) <= MAX_SMALLTALK_CHARS and _PUZZLED_RE.fullmatch(text.strip()):
        return True
    norm = _whole_message(text)
    return bool(norm) and bool(_CLARIFY_RE.fullmatch(norm))


# “你好笨”, “垃圾”, “没用”, “滚”: annoyance at a reply that did not help, whole messages only (“垃圾分类怎么做” is a
# question). They got “这个问题我还没学会，已经记下来” and a row in staff's queue of unanswered questions.
_VENT_RE = re.compile(
    r"(?:你|你们|小二|机器人|这)?(?:也|真|好|太|很|真是|就是)?(?:个)?"
    r"(?:笨|蠢|傻|笨蛋|蠢货|傻瓜|傻子|弱智|智障|垃圾|废物|没用|无语|差劲|太差|好差|真差|差评|坑人|骗人|烦人|烦死了?)"
    r"(?:死了|透了|极了|至极)?(?:吧|啊|呀|了|的)*"
    r"|(?:什么|啥)破?(?:机器人|玩意儿?|东西|回答|系统)(?:啊|呀)?|滚(?:开|蛋)?|去死|有病(?:吧|啊)?")


def is_venting(text: str | None) -> bool:
    """True when the whole message vents annoyance (“你好笨”, “垃圾”, “没用！”, “滚”) rather than asks anything."""
    norm = _whole_message(text)
    return bool(norm) and bool(_VENT_RE.fullmatch(norm))


# “有用”, “很有帮助”, “帮到我了”, “没有帮助”, “答非所问”: the user's verdict on the answer just given, whole messages
# only (“这个证书有用吗” is a question). They got “我还没学会，已经记下来” (or a guess) and a row in staff's queue.
_USEFUL_RE = re.compile(r"(?:很|挺|真|非常|太|特别|确实|还是|蛮|超)?(?:有用|有帮助|管用|帮到(?:我|您|你)?了|帮了大忙)"
                        r"(?:的|了|啊|呀|哦|啦|哈|呢)*")
_USELESS_RE = re.compile(r"(?:这|这个|你的?|回答)?(?:也|还是|完全|根本|一点)?(?:没有?(?:什么|啥|任何)?(?:用|帮助)|没帮上(?:忙)?|"
                         r"不管用|不顶用|没解决(?:问题)?|答非所问|文不对题|不是我(?:想|要)(?:要|问|找)?的)"
                         r"(?:的|了|啊|呀|哦|啦|呢|吧)*")


def feedback_of(text: str | None) -> bool | None:
    """True when the whole message says the last answer helped (“有用”, “很有帮助，谢谢”), False when it says it did not
    (“没有帮助”, “答非所问”), None otherwise."""
    if not text or not isinstance(text, str) or len(text) > MAX_SMALLTALK_CHARS:
        return None
    norm = get_analyzer().normalize(without_faces(text), max_chars=MAX_SMALLTALK_CHARS)
    for w in _THANKS_WORDS:  # “有用，谢谢”
        norm = norm.replace(w, " ")
    norm = re.sub(r"[^\w]+", "", norm)
    if not norm:
        return None
    if _USELESS_RE.fullmatch(norm):
        return False
    if _USEFUL_RE.fullmatch(norm):
        return True
    return None


# “不对”, “不是这个”, “答非所问”, “你答错了”: the answer just given was not what the user asked about (whole messages only;
# “不对外开放吗” is a question). Alone they were matched as questions (“对诉求处理结果不满意怎么办？”).
_WRONG_RE = re.compile(
    r"(?:你|您|这|这个|那个|回答|答案|你的回答|这个回答|好像|感觉|完全|根本|都|也|还是|可是|但是|不过|"
    # “以上都不是”, “上面的都不对”: said of a list, and of the answer above alike (they were searched as questions)
    r"以上|上面的?|这些|这几个|全|全都)*"
    r"(?:不对|错了|答错了|说错了|回答错了|搞错了|弄错了|不正确|不准确|"
    r"不是(?:这个|这样|这些|这条|这意思|这个意思|这个问题)?|我(?:问|说|要问|想问)的不是(?:这个|这些)|"
    r"答非所问|文不对题|牛头不对马嘴|驴唇不对马嘴|不是我(?:想|要)(?:要|问|找)?的(?:问题|答案|意思)?|"
    r"没有?(?:我|您)?(?:想|要)(?:要|问|找)?的(?:问题|答案)?|"
    r"(?:不是|没)(?:问|说)(?:这个|这些))"
    r"(?:的|了|啊|呀|哦|啦|呢|吧|哎|诶|嘛|哈)*")


def is_wrong_answer(text: str | None) -> bool:
    """True when the whole message says the bot's last answer was the wrong one (“不对”, “不是这个”, “答非所问”):
    about that answer only when one was just given (the caller knows); otherwise a text like any other."""
    norm = _whole_message(text)
    return bool(norm) and bool(_WRONG_RE.fullmatch(norm))


# “都不是”, “没有”, “不是”, “没有我要问的”: a reply to “您是不是想问” choices that picks none of them. Only while choices
# are pending (“没有” alone says nothing otherwise); whatever says an answer was wrong (“不对”, “不是这个”, “错了”) says it
# of a list as well.
_NONE_OF_THEM_RE = re.compile(r"(?:以上|上面的?|这些|这几个)?(?:都|全都|全|好像都|也都)?(?:不是|不对|没有|没)(?:我)?"
                              r"(?:要问的|想问的|要的|想要的|要找的)?(?:的|呢|啊|哦|啦|吧|哎|诶)*")


def is_none_of_these(text: str | None) -> bool:
    """True when the whole message, said to numbered choices, picks none of them (“都不是”, “不是这个”, “错了”, “不对”,
    “没有我要的”, “以上都不是”); a text with a question after it (“不对，我想问社保”) is no such reply. (“没用”, “没帮上”
    are a verdict, on the answer before the list as well: the caller's.)"""
    if is_wrong_answer(text):
        return True
    norm = _whole_message(text)
    return bool(norm) and bool(_NONE_OF_THEM_RE.fullmatch(norm))


# “换一批”, “换一个”, “还有别的吗”, “其他的呢”: more choices wanted for the same question, whole messages only (they were
# searched as questions: “我还没学会” and a row in staff's queue, or an unrelated “您是不是想问”).
_MORE_RE = re.compile(
    r"(?:请|麻烦|能|可以|能不能|可不可以)?(?:再|重新)?(?:给我|帮我)?"
    r"(?:换(?:一|几|一下|个)?(?:批|组|些|个|下|页)(?:问题|选项|别的)?|下一(?:批|组|页)|"
    r"(?:还有|有没有|还有没有)(?:别的|其他|其它|更多)?(?:的)?(?:问题|选项)?|"
    r"(?:别的|其他|其它|更多)(?:的)?(?:问题|选项)?)"
    r"(?:吗|呢|吧|啊|呀|了|嘛|么)*")


def wants_more_choices(text: str | None) -> bool:
    """True when the whole message, said to numbered choices, asks for other ones (“换一批”, “还有别的吗”)."""
    norm = _whole_message(text)
    return bool(norm) and norm not in {"还有", "有没有", "还有没有"} and bool(_MORE_RE.fullmatch(norm))


# Sounds that carry no request (“啊”, “嗯”, “呃”, “哈”): a message of them alone, however long, asks nothing.
_FILLER_CHARS = frozenset("啊阿呀哦噢喔嗯恩额呃哈嘿嘻呵哎唉诶欸哇喂啦嘛呢吧吗么哼嗷呜咦噫哟唔咯喽耶哒")
# The same typed in Latin letters: “emmm”, “hhhh”, “hahaha”.
_LATIN_FILLER_RE = re.compile(r"(?:e*m+|h+|(?:ha|he|hi|ho|xi)+h*|a+|o+|e+)")
# Longer than this, a message is not checked word by word (its characters still are): no 请问-only text runs so long.
_STOPWORD_CHECK_CHARS = 60


def has_no_content(text: str | None) -> bool:
    """True when the message says nothing to act on: after normalisation, fillers alone (“啊啊啊”, 3,000 × “啊”,
    “嗯嗯”, “emmm”), one character said over and over (“税税税税”), or only words with no topic (“我想问一下”,
    “请问”: the stop words the search drops). A single character said once (“税”) is left to the search."""
    if not text or not isinstance(text, str):
        return False
    analyzer = get_analyzer()
    norm = analyzer.normalize(without_faces(text))
    chars = [ch for ch in norm if ch.isalnum()]
    if not chars:
        return False  # no letters at all (👍, “。。。”): the caller's own case
    content = {ch for ch in chars if ch not in _FILLER_CHARS}
    if not content:
        return True
    if len(content) == 1 and len(chars) > 1 and chars.count(next(iter(content))) > 1:
        return True
    bare = "".join(ch for ch in chars if ch not in _FILLER_CHARS)
    if bare.isascii() and _LATIN_FILLER_RE.fullmatch(bare):
        return True
    if len(norm) > _STOPWORD_CHECK_CHARS:
        return False
    words = analyzer.segment(norm)
    return bool(words) and all(w in analyzer.stopwords or all(ch in _FILLER_CHARS for ch in w) for w in words)


def is_greeting(text: str | None) -> bool:
    """True for a bare greeting such as 你好 / 在吗 / hello."""
    return detect_smalltalk(text) == "greeting"


def is_thanks(text: str | None) -> bool:
    """True for a bare thank-you such as 谢谢 / 多谢 / thx."""
    return detect_smalltalk(text) == "thanks"


def wants_human(text: str | None) -> bool:
    """True when the user asks for a person: 人工 / 转人工 / 找客服 / 真人."""
    return detect_smalltalk(text) == "handoff"
