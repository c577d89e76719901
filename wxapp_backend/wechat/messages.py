"""WeChat pushes (XML or JSON) parsed safely into one normalised Message, plus passive reply rendering."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import XMLParser

import xmltodict

from wxapp_backend.validation import LINK_RE
from wxapp_backend.wechat.crypto import BadPayload, PayloadTooLarge

__all__ = [
    "MAX_BODY_BYTES",
    "REPLY_TEXT_MAX_BYTES",
    "Location",
    "Message",
    "dedup_key",
    "encrypted_field",
    "normalise",
    "parse_body",
    "parse_json",
    "parse_xml",
    "render_image_reply",
    "render_news_reply",
    "render_text_reply",
    "truncate_utf8",
]

# Real pushes are a few KB; anything this big is not from WeChat.
MAX_BODY_BYTES = 256 * 1024
# WeChat cuts passive text replies at about 2048 bytes (WECHAT.md).
REPLY_TEXT_MAX_BYTES = 2048
# Passive news replies: one article. The reply-format page still says up to 8 after an event, but since WeChat's
# announcement of 2018-10-12 passive and customer-service news carry one article only.
NEWS_MAX_ARTICLES = 1

ACCOUNTS = ("oa", "wxa")
# The largest CreateTime taken (seconds; 2**32 - 1 is the year 2106): beyond it no datetime or database column holds it.
MAX_CREATE_TIME = 2**32 - 1

_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# What may come before the root element besides a DTD: blanks, comments, processing instructions (an XML
# declaration). A DTD can stand only there; once the root element has begun the parser refuses "<!DOCTYPE" as a
# syntax error without reading it, and inside a CDATA section it is the user's text (a pasted web page).
_PROLOG = re.compile(r"(?:\s+|<!--.*?-->|<\?.*?\?>)*", re.DOTALL)
_ELEMENT_START = re.compile(r"<[A-Za-z_]")
# Characters XML 1.0 forbids; WeChat rejects a reply that contains them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# What WeChat pushes as a text message for something it cannot pass on (a sticker, a chat record ...). It is no
# text the user typed: such a message gets the type below, which the bot answers as any type it cannot read.
UNSUPPORTED_PLACEHOLDER = "【收到不支持的消息类型，暂无法显示】"
UNSUPPORTED_TYPE = "unsupported"

_SUBSCRIBE_MSG_WRAPPERS = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}


# ---------------------------------------------------------------------------------------------- parsing


def _as_bytes(body: bytes | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise BadPayload(message_zh="微信消息内容为空或类型有误。")


def _as_text(body: bytes | str, max_bytes: int) -> str:
    data = _as_bytes(body)
    if len(data) > max_bytes:
        raise PayloadTooLarge()
    try:
        # Decoding ourselves (UTF-8 only) means a UTF-16 body cannot hide a DOCTYPE from the check below.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload(message_zh="微信消息不是合法的 UTF-8 文本。") from None
    text = text.lstrip("\ufeff").strip()
    if not text:
        raise BadPayload(message_zh="微信消息内容为空。")
    return text


def parse_xml(body: bytes | str, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Parse a WeChat XML document (`<xml>...</xml>`) into a dict; DTDs and entities are refused."""
    text = _as_text(body, max_bytes)
    # Refuse outright rather than rely on the parser: billion laughs and XXE both need a DTD. When the prolog is
    # not followed by the root element's start tag (a DTD, or anything this scan does not read as the parser
    # does, such as a BOM after a blank), the whole document is searched, as before.
    root = _PROLOG.match(text).end()  # (the pattern matches at least the empty string)
    if _ELEMENT_START.match(text, root) is None and _DTD.search(text):
        raise BadPayload(message_zh="微信消息不能包含 DOCTYPE 或 ENTITY。")
    doc = _parse_plain_xml(text)
    if doc is None:
        try:
            doc = xmltodict.parse(text, disable_entities=True)
        except Exception:
            # expat raises ExpatError, but odd input can surface ValueError/TypeError too; all mean "not XML".
            raise BadPayload(message_zh="微信消息不是合法的 XML。") from None
    root = doc.get("xml") if isinstance(doc, dict) and len(doc) == 1 else None
    if not isinstance(root, dict):
        raise BadPayload(message_zh="微信消息缺少 <xml> 根节点。")
    return root


class _NotPlain(Exception):
    """The document uses something the fast path leaves to xmltodict."""


# Flat documents (what WeChat sends for almost every push, and the safe-mode envelope): <xml> holding only
# leaf elements, each either one CDATA section or plain text without markup, entities or "]" (so no "]]>").
# Carriage returns (a parser normalises line ends) and the characters XML forbids are not matched either,
# so such documents go to the parser, which decides as before.
_FLAT_CHARS = "\\]\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff"
_FLAT_STEP = re.compile(
    r"[ \t\n]*(?:<([A-Za-z_][A-Za-z0-9_.-]*)>"
    r"(?:<!\[CDATA\[([^" + _FLAT_CHARS + r"]*(?:\](?!\]>)[^" + _FLAT_CHARS + r"]*)*)\]\]>"
    r"|([^<&" + _FLAT_CHARS + r"]*))</\1>|(</xml>\Z))")


def _parse_flat_xml(text: str) -> dict[str, Any] | None:
    """xmltodict's answer for a flat document, read field by field in one pass; None when it is not one."""
    if not text.startswith("<xml>"):
        return None
    out: dict[str, Any] = {}
    pos, step = 5, _FLAT_STEP.match
    while True:
        match = step(text, pos)
        if match is None:
            return None
        key, cdata, plain, end = match.groups()
        if end is not None:
            return {"xml": out} if out else None
        _put(out, key, (cdata if cdata is not None else plain).strip() or None)
        pos = match.end()


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """Add a child's value as xmltodict does: a repeated tag becomes a list, in document order."""
    current = out.get(key, _put)
    if current is _put:
        out[key] = value
    elif isinstance(current, list):
        current.append(value)
    else:
        out[key] = [current, value]


_FAST_MAX_DEPTH = 16


def _parse_plain_xml(text: str) -> dict[str, Any] | None:
    """What xmltodict.parse(text) gives, for the plain documents WeChat sends (elements and text only),
    through the C ElementTree parser; None for anything else (attributes, namespaces, comments, processing
    instructions, deep nesting, or any parse error), which then goes through xmltodict as before."""
    if "<!--" in text or "<?" in text or "xmlns" in text:
        return None
    flat = _parse_flat_xml(text)
    if flat is not None:
        return flat
    try:
        parser = XMLParser()
        parser.feed(text)
        root = parser.close()
        if not len(root):
            return None  # <xml/> or <xml>text</xml>: rare, and xmltodict's answer is not a dict anyway
        return {_tag(root): _element(root, 0)}
    except Exception:  # ParseError, _NotPlain, anything odd: let xmltodict decide
        return None


def _tag(el: Any) -> str:
    tag = el.tag
    if el.attrib or not isinstance(tag, str) or ":" in tag or "{" in tag:
        raise _NotPlain
    return tag


def _element(el: Any, depth: int) -> Any:
    """xmltodict's value for an element: stripped text (or None) for a leaf, else a dict of the children
    (a list for a repeated tag, in document order) plus "#text" for non-blank text around them."""
    if not len(el):
        return (el.text or "").strip() or None
    if depth >= _FAST_MAX_DEPTH:
        raise _NotPlain
    out: dict[str, Any] = {}
    text = el.text or ""
    for child in el:
        _put(out, _tag(child), _element(child, depth + 1))
        if child.tail:
            text += child.tail
    text = text.strip()
    if text:
        out["#text"] = text
    return out


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def parse_json(body: bytes | str, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Parse a WeChat JSON push into a dict; anything but a JSON object is BadPayload."""
    text = _as_text(body, max_bytes)
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise BadPayload(message_zh="微信消息不是合法的 JSON。") from None
    if not isinstance(doc, dict):
        raise BadPayload(message_zh="微信消息必须是 JSON 对象。")
    # JSON can say what XML cannot: a lone surrogate ("\ud800", no UTF-8 text: the dedup key, the database and our
    # answer would fail on it) and NUL (PostgreSQL refuses it in text). Both are dropped, as if the push were XML.
    # (Checked here, on JSON pushes only: the Official Account's XML path pays nothing for it.)
    flat = json.dumps(doc, ensure_ascii=False)
    try:
        flat.encode("utf-8")
        clean = "\\u0000" not in flat
    except UnicodeEncodeError:
        clean = False
    return doc if clean else _without_unwritable(doc)


_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")


def _without_unwritable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNWRITABLE.sub("", value)
    if isinstance(value, dict):
        return {_without_unwritable(k): _without_unwritable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_unwritable(v) for v in value]
    return value


def parse_body(body: bytes | str, fmt: str | None = None, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Parse as `fmt` ("xml"/"json"), or sniff it from the first character when fmt is None."""
    if fmt is None:
        head = _as_bytes(body)[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
        fmt = "json" if head.startswith(b"{") else "xml"
    if fmt == "json":
        return parse_json(body, max_bytes)
    if fmt == "xml":
        return parse_xml(body, max_bytes)
    raise ValueError(f"unknown message format {fmt!r}")


def encrypted_field(doc: Mapping[str, Any]) -> str | None:
    """The Encrypt value of a safe/compatible-mode document, or None for plain mode.

    Compatible mode carries plaintext fields and Encrypt together; the caller must use the ciphertext
    then, because only it is covered by msg_signature.
    """
    if "Encrypt" not in doc:
        return None
    value = doc["Encrypt"]
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(message_zh="微信加密消息字段无效。")
    return value.strip()


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Location:
    """A position from a location message, a location event or a location_select menu event."""

    lat: float | None
    lng: float | None
    scale: int | None = None
    label: str | None = None
    precision: float | None = None


@dataclass(frozen=True)
class Message:
    """One message or event from either account, whatever the wire format was."""

    account: str
    msg_type: str
    source: str
    target: str
    create_time: int
    event: str | None = None
    event_key: str | None = None
    msg_id: str | None = None
    content: str | None = None
    media_id: str | None = None
    pic_url: str | None = None
    format: str | None = None
    recognition: str | None = None
    thumb_media_id: str | None = None
    location: Location | None = None
    scene: str | None = None
    ticket: str | None = None
    title: str | None = None
    description: str | None = None
    url: str | None = None
    app_id: str | None = None
    page_path: str | None = None
    session_from: str | None = None
    status: str | None = None
    subscribe_results: list[dict[str, Any]] = field(default_factory=list, hash=False, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def is_event(self) -> bool:
        """True for events (follow, scan, menu, subscribe-message results...)."""
        return self.msg_type == "event"


def _s(value: Any) -> str | None:
    """Text of a scalar field; xmltodict gives None for empty elements and lists for repeated ones."""
    if value is None:
        return None
    if value.__class__ is str:  # the usual case, first
        return value or None
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("#text")
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    return text if text != "" else None


def _int(value: Any) -> int | None:
    text = _s(value)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        try:
            return int(float(text))
        except (ValueError, OverflowError):
            return None


def _float(value: Any) -> float | None:
    text = _s(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def _location(raw: Mapping[str, Any], msg_type: str, event: str | None) -> Location | None:
    if msg_type == "location":
        return Location(
            lat=_float(raw.get("Location_X")),
            lng=_float(raw.get("Location_Y")),
            scale=_int(raw.get("Scale")),
            label=_s(raw.get("Label")),
        )
    if event == "location":
        return Location(
            lat=_float(raw.get("Latitude")),
            lng=_float(raw.get("Longitude")),
            precision=_float(raw.get("Precision")),
        )
    if event == "location_select":
        info = raw.get("SendLocationInfo")
        if isinstance(info, dict):
            return Location(
                lat=_float(info.get("Location_X")),
                lng=_float(info.get("Location_Y")),
                scale=_int(info.get("Scale")),
                label=_s(info.get("Label")) or _s(info.get("Poiname")),
            )
    return None


def _subscribe_results(raw: Mapping[str, Any], event: str) -> list[dict[str, Any]]:
    """Normalise `List` (object for one template, array or repeated <List> for several) to a list."""
    items: Any = None
    wrapper = raw.get(_SUBSCRIBE_MSG_WRAPPERS[event])
    if isinstance(wrapper, list):  # a repeated wrapper element: gather every List inside
        items = []
        for part in wrapper:
            inner = part.get("List") if isinstance(part, dict) else None
            items.extend(inner if isinstance(inner, list) else [inner])
    elif isinstance(wrapper, dict):
        items = wrapper.get("List")
    if items is None:
        items = raw.get("List")  # JSON pushes put List at the top level
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return []
    results = []
    for item in items:
        if not isinstance(item, dict):
            continue
        error_status = _s(item.get("ErrorStatus"))
        results.append(
            {
                "template_id": _s(item.get("TemplateId")),
                # accept|reject|ban|filter for popup/change; success|failed:... for sent.
                "status": _s(item.get("SubscribeStatusString")) or error_status,
                "popup_scene": _int(item.get("PopupScene")),
                "msg_id": _s(item.get("MsgID")) or _s(item.get("MsgId")),
                "error_code": _int(item.get("ErrorCode")),
                "error_status": error_status,
            }
        )
    return results


def normalise(raw: Mapping[str, Any], account: str) -> Message:
    """Build a Message from a parsed push; unknown message and event types are kept as strings."""
    if account not in ACCOUNTS:
        raise ValueError(f"account must be one of {ACCOUNTS}, not {account!r}")
    if not isinstance(raw, Mapping):
        raise BadPayload()
    raw = dict(raw)
    msg_type = (_s(raw.get("MsgType")) or "").strip().lower()
    event = _s(raw.get("Event"))
    event = event.strip().lower() if event else None
    event_key = _s(raw.get("EventKey"))

    scene = None
    if event == "subscribe" and event_key and event_key.startswith("qrscene_"):
        scene = event_key[len("qrscene_") :]
    elif event == "scan" and event_key:
        scene = event_key

    url = _s(raw.get("Url"))
    page_path = _s(raw.get("PagePath"))
    if event == "view":
        url = event_key
    elif event == "view_miniprogram":
        page_path = event_key

    # MsgId for messages; template/mass-send job events carry MsgID, which is just as unique.
    msg_id = _s(raw.get("MsgId")) or _s(raw.get("MsgID"))
    create_time = _int(raw.get("CreateTime")) or 0
    if not 0 <= create_time <= MAX_CREATE_TIME:
        # No clock holds it (the user upsert turned it into a datetime and crashed in the handler): not from WeChat.
        raise BadPayload(message_zh="微信消息的 CreateTime 无效。")
    content = _s(raw.get("Content")) if msg_type == "text" else None
    if content is not None and content.strip() == UNSUPPORTED_PLACEHOLDER:
        msg_type, content = UNSUPPORTED_TYPE, None

    return Message(
        account=account,
        msg_type=msg_type,
        source=_s(raw.get("FromUserName")) or "",
        target=_s(raw.get("ToUserName")) or "",
        create_time=create_time,
        event=event,
        event_key=event_key,
        msg_id=msg_id.strip() if msg_id else None,
        content=content,
        media_id=_s(raw.get("MediaId")),
        pic_url=_s(raw.get("PicUrl")),
        format=_s(raw.get("Format")),
        recognition=_s(raw.get("Recognition")),
        thumb_media_id=_s(raw.get("ThumbMediaId")),
        location=_location(raw, msg_type, event),
        scene=scene,
        ticket=_s(raw.get("Ticket")),
        title=_s(raw.get("Title")),
        description=_s(raw.get("Description")),
        url=url,
        app_id=_s(raw.get("AppId")),
        page_path=page_path,
        session_from=_s(raw.get("SessionFrom")),
        status=_s(raw.get("Status")),
        subscribe_results=_subscribe_results(raw, event) if event in _SUBSCRIBE_MSG_WRAPPERS else [],
        raw=raw,
    )


def dedup_key(msg: Message, appid: str) -> str:
    """Key under which a push and its retries are recognised: MsgId, else sender+time+event+key."""
    prefix = f"wx:{appid}:{msg.account}"
    if msg.msg_id:
        return f"{prefix}:id:{msg.msg_id}"
    key = f"{prefix}:ev:{msg.source}:{msg.create_time}:{msg.event or msg.msg_type}:{msg.event_key or ''}"
    if msg.subscribe_results:
        # Subscribe-message events have no EventKey: two of them for one user in one second (two sends, two
        # popups) differ only in their List, which WeChat's retry repeats as it was.
        digest = hashlib.sha1(json.dumps(msg.subscribe_results, sort_keys=True, ensure_ascii=False).encode())
        key += ":" + digest.hexdigest()[:16]
    return key


# ---------------------------------------------------------------------------------------------- replies


def truncate_utf8(text: str, max_bytes: int = REPLY_TEXT_MAX_BYTES, suffix: str = "…") -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes at a character boundary, marking the cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(suffix.encode("utf-8"))
    if room <= 0:
        return data[:max_bytes].decode("utf-8", "ignore")
    # "ignore" drops only the trailing partial character left by the byte slice.
    cut = data[:room].decode("utf-8", "ignore")
    anchor = cut.rfind("<a ")
    if anchor >= 0 and cut.find("</a>", anchor) < 0:  # inside a mini-program link: the user saw its raw markup
        cut = cut[:anchor].rstrip()
    link = _TRAILING_LINK.search(cut)
    whole = LINK_RE.match(text, link.start()) if link is not None else None
    if whole is not None and whole.end() > len(cut):  # the cut fell inside a link
        cut = cut[:whole.start()].rstrip()
    return cut + suffix


_TRAILING_LINK = re.compile(r"https?://\S*$", re.IGNORECASE)


def _cdata(value: str) -> str:
    if value.isascii() and value.isprintable() and "]]>" not in value:  # ids and keywords: nothing to clean
        return "<![CDATA[" + value + "]]>"
    value = _XML_ILLEGAL.sub("", value)
    # A literal "]]>" would close the section early; split it across two sections.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


_TEXT_BODIES: dict[str, str] = {}  # reply text -> its <Content> element (fixed answers repeat the same text)
_TEXT_BODIES_MAX = 512


def _reply_text(text: str) -> str:
    """A reply text as WeChat takes it: no characters XML forbids, within the byte limit."""
    return truncate_utf8(_XML_ILLEGAL.sub("", text))


def _text_body(text: str) -> str:
    body = _TEXT_BODIES.get(text)
    if body is None:
        body = f"<Content>{_cdata(_reply_text(text))}</Content>"
        if len(_TEXT_BODIES) >= _TEXT_BODIES_MAX:
            _TEXT_BODIES.clear()
        _TEXT_BODIES[text] = body
    return body


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def _xml_reply(msg: Message, now: float | None, msg_type: str, body: str) -> str:
    return (
        "<xml>"
        f"<ToUserName>{_cdata(msg.source)}</ToUserName>"
        f"<FromUserName>{_cdata(msg.target)}</FromUserName>"
        f"<CreateTime>{_now(now)}</CreateTime>"
        f"<MsgType>{_cdata(msg_type)}</MsgType>"
        f"{body}"
        "</xml>"
    )


def render_text_reply(msg: Message, text: str, now: float | None = None, fmt: str = "xml") -> str:
    """Passive text reply to `msg`, cut to WeChat's byte limit; fmt "json" for a JSON mini-program.

    An empty reply is a caller bug: answer "success" instead of an empty text.
    """
    if not text or not text.strip():
        raise ValueError("empty reply text; answer 'success' instead")
    if fmt == "xml":
        return _xml_reply(msg, now, "text", _text_body(text))
    if fmt != "json":
        raise ValueError(f"unknown reply format {fmt!r}")
    return json.dumps(
        {
            "ToUserName": msg.source,
            "FromUserName": msg.target,
            "CreateTime": _now(now),
            "MsgType": "text",
            "Content": _reply_text(text),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def render_image_reply(msg: Message, media_id: str, now: float | None = None) -> str:
    """Passive image reply (Official Account) with an uploaded media_id."""
    if not media_id:
        raise ValueError("media_id is required")
    return _xml_reply(msg, now, "image", f"<Image><MediaId>{_cdata(media_id)}</MediaId></Image>")


def render_news_reply(msg: Message, articles: Sequence[Mapping[str, str]], now: float | None = None) -> str:
    """Passive news reply (Official Account); articles are dicts of title, description, pic_url, url."""
    if not articles:
        raise ValueError("at least one article is required")
    limit = NEWS_MAX_ARTICLES
    items = "".join(
        "<item>"
        f"<Title>{_cdata(a.get('title') or '')}</Title>"
        f"<Description>{_cdata(a.get('description') or '')}</Description>"
        f"<PicUrl>{_cdata(a.get('pic_url') or '')}</PicUrl>"
        f"<Url>{_cdata(a.get('url') or '')}</Url>"
        "</item>"
        for a in list(articles)[:limit]
    )
    count = min(len(articles), limit)
    return _xml_reply(msg, now, "news", f"<ArticleCount>{count}</ArticleCount><Articles>{items}</Articles>")
