"""The C ElementTree fast path of parse_xml gives exactly what xmltodict gives, or steps aside."""

from __future__ import annotations

import random

import pytest
import xmltodict

from wxapp_backend.wechat.crypto import BadPayload
from wxapp_backend.wechat.messages import _parse_flat_xml, _parse_plain_xml, parse_xml

PLAIN = [
    # text, image, voice with recognition, location, link, events (WeChat's documented shapes)
    "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName>"
    "<CreateTime>1714036504</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content>"
    "<MsgId>1234567890123456</MsgId></xml>",
    "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>",
    "<xml>\n  <ToUserName><![CDATA[gh_1]]></ToUserName>\n  <MsgType><![CDATA[image]]></MsgType>\n"
    "  <PicUrl><![CDATA[http://x/y.jpg]]></PicUrl>\n  <MediaId><![CDATA[m1]]></MediaId>\n</xml>",
    "<xml><MsgType><![CDATA[voice]]></MsgType><Recognition><![CDATA[ 办理营业执照 ]]></Recognition>"
    "<Format><![CDATA[amr]]></Format></xml>",
    "<xml><MsgType>location</MsgType><Location_X>31.2</Location_X><Location_Y>121.4</Location_Y>"
    "<Scale>15</Scale><Label><![CDATA[上海 &amp; 浦东]]></Label></xml>",
    "<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>"
    "<EventKey><![CDATA[qrscene_42]]></EventKey><Ticket><![CDATA[t]]></Ticket></xml>",
    "<xml><MsgType>event</MsgType><Event>location_select</Event><EventKey>k</EventKey>"
    "<SendLocationInfo><Location_X>23</Location_X><Location_Y>113</Location_Y><Scale>15</Scale>"
    "<Label><![CDATA[ 广州 ]]></Label><Poiname><![CDATA[]]></Poiname></SendLocationInfo></xml>",
    "<xml><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>"
    "<List><TemplateId>A</TemplateId><SubscribeStatusString>accept</SubscribeStatusString>"
    "<PopupScene>2</PopupScene></List><List><TemplateId>B</TemplateId>"
    "<SubscribeStatusString>reject</SubscribeStatusString><PopupScene>2</PopupScene></List>"
    "</SubscribeMsgPopupEvent></xml>",
    "<xml><MsgType>event</MsgType><Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List>"
    "<TemplateId>A</TemplateId><MsgID>1</MsgID><ErrorCode>0</ErrorCode><ErrorStatus>success</ErrorStatus>"
    "</List></SubscribeMsgSentEvent><SubscribeMsgSentEvent><List><TemplateId>B</TemplateId></List>"
    "</SubscribeMsgSentEvent></xml>",
    # the odd corners: repeated tags, empty and blank elements, text around children, character references
    "<xml><A>1</A><A>2</A><B/><A>3</A><C>   </C><D><![CDATA[  ]]></D></xml>",
    "<xml>before<A>1</A>between<B><C>x</C>tail</B>after</xml>",
    "<xml><A>&lt;b&gt; &amp; &#x4E2D;&#25991; &quot;q&quot;</A><B>line1\r\nline2</B></xml>",
    "<xml><A><![CDATA[]]]]><![CDATA[>]]></A><B>x<![CDATA[y]]>z</B></xml>",
    "<xml><A><B><C><D>deep</D></C></B></A></xml>",
]

FALLBACK = [
    '<xml><A attr="1">x</A></xml>',  # attributes
    '<xml xmlns="urn:x"><A>x</A></xml>',  # namespaces
    "<xml><a:b>x</a:b></xml>",  # a prefix without a declaration: xmltodict keeps it as a name
    "<xml><A>x<!-- note -->y</A></xml>",  # comments
    '<?xml version="1.0" encoding="utf-8"?><xml><A>x</A></xml>',  # declaration / processing instructions
    "<xml></xml>",
    "<xml>only text</xml>",
    "<xml><A>x</A>",  # malformed
    "<xml><A>&nbsp;</A></xml>",  # undefined entity
    "<xml>" + "<A>" * 40 + "x" + "</A>" * 40 + "</xml>",  # deeper than the fast path goes
]


def _xmltodict(text: str):
    try:
        return xmltodict.parse(text, disable_entities=True)
    except Exception:
        return "error"


@pytest.mark.parametrize("text", PLAIN)
def test_plain_documents_take_the_fast_path_and_match_xmltodict(text):
    fast = _parse_plain_xml(text)
    assert fast is not None
    assert fast == _xmltodict(text)
    assert list(fast["xml"]) == list(_xmltodict(text)["xml"])  # same key order too


@pytest.mark.parametrize("text", FALLBACK)
def test_anything_else_is_left_to_xmltodict(text):
    assert _parse_plain_xml(text) is None


def assert_parse_xml_answers_as_before(text: str) -> None:
    """parse_xml gives xmltodict's <xml> dict, or BadPayload where xmltodict has no such dict."""
    expected = _xmltodict(text)
    root = expected.get("xml") if isinstance(expected, dict) and len(expected) == 1 else None
    if isinstance(root, dict):
        assert parse_xml(text) == root, text
    else:
        with pytest.raises(BadPayload):
            parse_xml(text)


def test_parse_xml_answers_are_unchanged():
    for text in PLAIN:
        assert parse_xml(text) == _xmltodict(text)["xml"]
    for text in FALLBACK:
        assert_parse_xml_answers_as_before(text)


def _random_doc(rng: random.Random) -> str:
    words = ["", " ", "\n  ", "x", " y ", "中文", "&amp;", "&#65;", "a<![CDATA[ b ]]>c", "<![CDATA[]]>", "\t"]
    tags = ["A", "B", "C", "MsgType", "List"]

    def element(depth: int) -> str:
        tag = rng.choice(tags)
        if depth > 3 or rng.random() < 0.4:
            inner = rng.choice(words)
        else:
            parts = [rng.choice(words)]
            for _ in range(rng.randint(0, 4)):
                parts.append(element(depth + 1))
                parts.append(rng.choice(words))
            inner = "".join(parts)
        return f"<{tag}/>" if not inner and rng.random() < 0.3 else f"<{tag}>{inner}</{tag}>"

    return "<xml>" + "".join(element(0) + rng.choice(words) for _ in range(rng.randint(1, 5))) + "</xml>"


def test_random_documents_match_xmltodict():
    rng = random.Random(20240611)
    fast_count = 0
    for _ in range(3000):
        text = _random_doc(rng)
        fast = _parse_plain_xml(text)
        if fast is not None:
            fast_count += 1
            assert fast == _xmltodict(text), text
    assert fast_count > 2000


# ------------------------------------------------------------------------- flat documents: the regular-expression path

FLAT = [PLAIN[0], PLAIN[1], PLAIN[2], PLAIN[3], PLAIN[4], PLAIN[5],  # PLAIN[4]: "&amp;" inside CDATA is literal
        "<xml><A>1</A><A>2</A><C>   </C><D><![CDATA[  ]]></D><A><![CDATA[3]]></A></xml>",
        "<xml>\t<A><![CDATA[a]b]]c ]] >]]></A>\n</xml>"]
NOT_FLAT = [
    "<xml><A>a &amp; b</A></xml>",  # an entity in text
    "<xml><A>1</A><B/></xml>",  # self-closing
    "<xml><A>x]]>y</A></xml>",  # "]]>" in text: not XML at all
    "<xml><A><![CDATA[x]]>y</A></xml>",  # CDATA and text mixed
    "<xml><A>line1\r\nline2</A></xml>",  # a parser normalises line ends
    "<xml><A>\x01</A></xml>",  # a character XML forbids
    "<xml>\u3000<A>x</A></xml>",  # not XML whitespace: text of the root
    "<xml><A>x</B></xml>",  # mismatched
    "<xml></xml>",
]


@pytest.mark.parametrize("text", FLAT)
def test_flat_documents_take_the_regex_path_and_match_xmltodict(text):
    flat = _parse_flat_xml(text)
    assert flat is not None and flat == _xmltodict(text)
    assert list(flat["xml"]) == list(_xmltodict(text)["xml"])


@pytest.mark.parametrize("text", NOT_FLAT)
def test_not_flat_documents_step_aside_and_parse_xml_is_unchanged(text):
    assert _parse_flat_xml(text) is None
    assert_parse_xml_answers_as_before(text)


def test_random_flat_documents_match_xmltodict():
    rng = random.Random(20261123)
    pieces = ["", " ", "x", "中文", "]", "]]", "]]>", "]>", "&amp;", "<", ">", "\t", "\n", " y ", "😀",
              "\r", "\x0b", "\u3000", "CDATA[", "a]]b"]
    taken = 0
    for _ in range(3000):
        fields = []
        for _ in range(rng.randint(1, 6)):
            tag = rng.choice(["A", "B", "MsgType", "Content", "x.y-z_1"])
            inner = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
            if rng.random() < 0.5:
                inner = f"<![CDATA[{inner}]]>"
            fields.append(rng.choice(["", " ", "\n  ", "\u3000"]) + f"<{tag}>{inner}</{tag}>")
        text = "<xml>" + "".join(fields) + rng.choice(["", "\n"]) + "</xml>"
        flat = _parse_flat_xml(text)
        if flat is not None:
            taken += 1
            assert flat == _xmltodict(text), text
        assert_parse_xml_answers_as_before(text)
    assert taken > 300  # most documents draw at least one piece that sends them to the parser

