"""Message parsing: every message/event type, the List quirk, hostile XML/JSON, dedup keys and replies."""

from __future__ import annotations

import json

import pytest
from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES

from wxapp_backend.wechat.crypto import BadPayload, Crypto, PayloadTooLarge, WeChatEnvelopeError
from wxapp_backend.wechat.messages import (
    REPLY_TEXT_MAX_BYTES,
    Location,
    Message,
    dedup_key,
    encrypted_field,
    normalise,
    parse_body,
    parse_json,
    parse_xml,
    render_image_reply,
    render_news_reply,
    render_text_reply,
    truncate_utf8,
)

HEAD = (
    "<ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"
    "<FromUserName><![CDATA[oUser123]]></FromUserName>"
    "<CreateTime>1714112445</CreateTime>"
)


def xml(msg_type: str, body: str = "") -> str:
    return f"<xml>{HEAD}<MsgType><![CDATA[{msg_type}]]></MsgType>{body}</xml>"


def event_xml(event: str, body: str = "") -> str:
    return xml("event", f"<Event><![CDATA[{event}]]></Event>{body}")


def oa(body: str) -> Message:
    return normalise(parse_xml(body), "oa")


# ------------------------------------------------------------------------------------------- messages


def test_text() -> None:
    m = oa(xml("text", "<Content><![CDATA[你好 😀]]></Content><MsgId>1234567890123456</MsgId>"))
    assert (m.account, m.msg_type, m.event) == ("oa", "text", None)
    assert (m.source, m.target, m.create_time) == ("oUser123", "gh_97417a04a28d", 1714112445)
    assert m.content == "你好 😀"
    assert m.msg_id == "1234567890123456" and isinstance(m.msg_id, str)
    assert not m.is_event
    assert m.raw["Content"] == "你好 😀"


def test_image() -> None:
    m = oa(
        xml(
            "image",
            "<PicUrl><![CDATA[http://p/1.jpg]]></PicUrl><MediaId><![CDATA[m1]]></MediaId><MsgId>1</MsgId>",
        )
    )
    assert (m.msg_type, m.pic_url, m.media_id, m.msg_id) == ("image", "http://p/1.jpg", "m1", "1")


def test_voice_with_recognition() -> None:
    m = oa(
        xml(
            "voice",
            "<MediaId><![CDATA[v1]]></MediaId><Format><![CDATA[amr]]></Format>"
            "<Recognition><![CDATA[我要办营业执照]]></Recognition><MsgId>2</MsgId>",
        )
    )
    assert (m.msg_type, m.media_id, m.format, m.recognition) == ("voice", "v1", "amr", "我要办营业执照")


@pytest.mark.parametrize("kind", ["video", "shortvideo"])
def test_video(kind: str) -> None:
    m = oa(
        xml(
            kind, "<MediaId><![CDATA[v]]></MediaId><ThumbMediaId><![CDATA[t]]></ThumbMediaId><MsgId>3</MsgId>"
        )
    )
    assert (m.msg_type, m.media_id, m.thumb_media_id) == (kind, "v", "t")


def test_location_message() -> None:
    m = oa(
        xml(
            "location",
            "<Location_X>31.2304</Location_X><Location_Y>121.4737</Location_Y><Scale>15</Scale>"
            "<Label><![CDATA[上海市黄浦区]]></Label><MsgId>4</MsgId>",
        )
    )
    assert m.location == Location(lat=31.2304, lng=121.4737, scale=15, label="上海市黄浦区")


def test_link() -> None:
    m = oa(
        xml(
            "link",
            "<Title><![CDATA[政策]]></Title><Description><![CDATA[说明]]></Description>"
            "<Url><![CDATA[https://example.org/p]]></Url><MsgId>5</MsgId>",
        )
    )
    assert (m.title, m.description, m.url) == ("政策", "说明", "https://example.org/p")


def test_file() -> None:
    m = oa(
        xml(
            "file",
            "<Title><![CDATA[申请表.docx]]></Title><Description><![CDATA[]]></Description>"
            "<FileKey>k</FileKey><FileMd5>abc</FileMd5><FileTotalLen>1024</FileTotalLen><MsgId>6</MsgId>",
        )
    )
    assert (m.msg_type, m.title, m.description, m.raw["FileTotalLen"]) == (
        "file",
        "申请表.docx",
        None,
        "1024",
    )


def test_miniprogrampage_xml_and_json() -> None:
    body = (
        "<Title><![CDATA[活动报名]]></Title><AppId><![CDATA[wxa123]]></AppId>"
        "<PagePath><![CDATA[pages/activity/detail?id=7]]></PagePath><ThumbUrl><![CDATA[http://t]]></ThumbUrl>"
        "<ThumbMediaId><![CDATA[tm]]></ThumbMediaId><MsgId>7</MsgId>"
    )
    for m in [
        normalise(parse_xml(xml("miniprogrampage", body)), "wxa"),
        normalise(
            parse_json(
                json.dumps(
                    {
                        "ToUserName": "gh_1",
                        "FromUserName": "oUser123",
                        "CreateTime": 1714112445,
                        "MsgType": "miniprogrampage",
                        "MsgId": 7,
                        "Title": "活动报名",
                        "AppId": "wxa123",
                        "PagePath": "pages/activity/detail?id=7",
                        "ThumbUrl": "http://t",
                        "ThumbMediaId": "tm",
                    }
                )
            ),
            "wxa",
        ),
    ]:
        assert (m.account, m.msg_type, m.title, m.app_id, m.page_path, m.thumb_media_id, m.msg_id) == (
            "wxa",
            "miniprogrampage",
            "活动报名",
            "wxa123",
            "pages/activity/detail?id=7",
            "tm",
            "7",
        )


@pytest.mark.parametrize("msg_id", [23900000000000001, "23900000000000001", " 23900000000000001 "])
def test_json_msgid_int_or_string_is_text(msg_id: int | str) -> None:
    doc = {
        "ToUserName": "gh",
        "FromUserName": "o1",
        "CreateTime": "1714112445",
        "MsgType": "text",
        "Content": "hi",
        "MsgId": msg_id,
    }
    m = normalise(parse_json(json.dumps(doc)), "wxa")
    assert m.msg_id == "23900000000000001"
    assert m.create_time == 1714112445


def test_empty_text_content() -> None:
    m = oa(xml("text", "<Content><![CDATA[]]></Content><MsgId>8</MsgId>"))
    assert m.msg_type == "text" and m.content is None


def test_emoji_and_4_byte_characters() -> None:
    text = "𠀀𪚥 👨‍👩‍👧 \U0001f600"
    m = oa(xml("text", f"<Content><![CDATA[{text}]]></Content><MsgId>9</MsgId>"))
    assert m.content == text
    m = normalise(parse_json(json.dumps({"MsgType": "text", "Content": text})), "wxa")
    assert m.content == text


# ------------------------------------------------------------------------------------------- events


def test_subscribe_plain() -> None:
    m = oa(event_xml("subscribe", "<EventKey><![CDATA[]]></EventKey>"))
    assert (m.msg_type, m.event, m.event_key, m.scene, m.msg_id) == ("event", "subscribe", None, None, None)
    assert m.is_event


def test_subscribe_from_qr_scene() -> None:
    m = oa(event_xml("subscribe", "<EventKey><![CDATA[qrscene_building_12]]></EventKey><Ticket>TK</Ticket>"))
    assert (m.event, m.event_key, m.scene, m.ticket) == (
        "subscribe",
        "qrscene_building_12",
        "building_12",
        "TK",
    )


def test_scan() -> None:
    m = oa(event_xml("SCAN", "<EventKey><![CDATA[123123]]></EventKey><Ticket><![CDATA[TK]]></Ticket>"))
    assert (m.event, m.scene, m.ticket) == ("scan", "123123", "TK")


def test_unsubscribe() -> None:
    assert oa(event_xml("unsubscribe")).event == "unsubscribe"


def test_location_event() -> None:
    m = oa(
        event_xml(
            "LOCATION",
            "<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude>"
            "<Precision>119.385040</Precision>",
        )
    )
    assert m.event == "location"
    assert m.location == Location(lat=23.137466, lng=113.352425, precision=119.38504)


def test_location_event_garbage_numbers_do_not_crash() -> None:
    m = oa(
        event_xml("LOCATION", "<Latitude>abc</Latitude><Longitude>nan</Longitude><Precision>inf</Precision>")
    )
    assert m.location == Location(lat=None, lng=None, precision=None)


def test_click_and_view() -> None:
    m = oa(event_xml("CLICK", "<EventKey><![CDATA[MENU_POLICY]]></EventKey>"))
    assert (m.event, m.event_key) == ("click", "MENU_POLICY")
    m = oa(event_xml("VIEW", "<EventKey><![CDATA[https://example.org]]></EventKey><MenuId>1</MenuId>"))
    assert (m.event, m.url) == ("view", "https://example.org")


def test_view_miniprogram() -> None:
    m = oa(event_xml("view_miniprogram", "<EventKey><![CDATA[pages/index/index]]></EventKey>"))
    assert m.page_path == "pages/index/index"


def test_location_select() -> None:
    m = oa(
        event_xml(
            "location_select",
            "<EventKey><![CDATA[loc]]></EventKey><SendLocationInfo><Location_X><![CDATA[31.2]]></Location_X>"
            "<Location_Y><![CDATA[121.4]]></Location_Y><Scale><![CDATA[15]]></Scale><Label><![CDATA[外滩]]></Label>"
            "<Poiname><![CDATA[]]></Poiname></SendLocationInfo>",
        )
    )
    assert m.location == Location(lat=31.2, lng=121.4, scale=15, label="外滩")


def test_user_enter_tempsession_xml_and_json() -> None:
    m = normalise(
        parse_xml(event_xml("user_enter_tempsession", "<SessionFrom><![CDATA[sf]]></SessionFrom>")), "wxa"
    )
    assert (m.event, m.session_from) == ("user_enter_tempsession", "sf")
    doc = {
        "ToUserName": "gh",
        "FromUserName": "o1",
        "CreateTime": 1,
        "MsgType": "event",
        "Event": "user_enter_tempsession",
        "SessionFrom": "sf",
    }
    m = normalise(parse_json(json.dumps(doc)), "wxa")
    assert (m.event, m.session_from) == ("user_enter_tempsession", "sf")


def test_templatesendjobfinish() -> None:
    m = oa(event_xml("TEMPLATESENDJOBFINISH", "<MsgID>200163836</MsgID><Status><![CDATA[success]]></Status>"))
    assert (m.event, m.msg_id, m.status) == ("templatesendjobfinish", "200163836", "success")


def test_masssendjobfinish() -> None:
    m = oa(
        event_xml(
            "MASSSENDJOBFINISH",
            "<MsgID>1988</MsgID><Status><![CDATA[sendsuccess]]></Status><TotalCount>100</TotalCount>",
        )
    )
    assert (m.event, m.msg_id, m.raw["TotalCount"]) == ("masssendjobfinish", "1988", "100")


def test_debug_demo_json_vector() -> None:
    plain = (
        '{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,'
        '"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}'
    )
    m = normalise(parse_json(plain), "wxa")
    assert (m.event, m.source, m.create_time, m.raw["debug_str"]) == (
        "debug_demo",
        "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
        1714112445,
        "hello world",
    )


def test_unknown_types_are_kept() -> None:
    m = oa(xml("brand_new_type", "<Foo>bar</Foo>"))
    assert (m.msg_type, m.event) == ("brand_new_type", None)
    m = oa(event_xml("Some_Future_Event"))
    assert (m.msg_type, m.event) == ("event", "some_future_event")
    m = oa("<xml><Foo>1</Foo></xml>")  # no MsgType at all
    assert (m.msg_type, m.source, m.create_time) == ("", "", 0)


def test_repeated_and_nested_scalars_do_not_crash() -> None:
    m = oa(
        "<xml><MsgType>text</MsgType><Content>a</Content><Content>b</Content>"
        '<FromUserName><x>1</x></FromUserName><CreateTime attr="1">12</CreateTime><MsgId>notanumber</MsgId></xml>'
    )
    assert (m.content, m.source, m.create_time, m.msg_id) == ("a", "", 12, "notanumber")


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_TYPES))
def test_every_wechatpy_message_type(msg_type: str) -> None:
    m = oa(xml(msg_type, "<MsgId>42</MsgId>"))
    assert (m.msg_type, m.msg_id) == (msg_type, "42")


@pytest.mark.parametrize("event", sorted(EVENT_TYPES))
def test_every_wechatpy_event_type(event: str) -> None:
    m = oa(event_xml(event.upper(), "<EventKey><![CDATA[k]]></EventKey>"))
    assert (m.msg_type, m.event, m.event_key) == ("event", event, "k")
    assert dedup_key(m, "wx1")


def test_device_events_do_not_crash() -> None:
    m = oa(xml("device_event", "<Event><![CDATA[bind]]></Event><DeviceID>d</DeviceID>"))
    assert (m.msg_type, m.event) == ("device_event", "bind")


# ------------------------------------------------------------------------------------------- List quirk

SUBSCRIBE_EVENTS = {
    "subscribe_msg_popup_event": ("SubscribeMsgPopupEvent", "SubscribeStatusString", ["accept", "reject"]),
    "subscribe_msg_change_event": ("SubscribeMsgChangeEvent", "SubscribeStatusString", ["reject", "accept"]),
    "subscribe_msg_sent_event": ("SubscribeMsgSentEvent", "ErrorStatus", ["success", "failed:user block"]),
}


def _item(event: str, i: int) -> dict[str, str]:
    _, status_key, statuses = SUBSCRIBE_EVENTS[event]
    item = {"TemplateId": f"TPL{i}", status_key: statuses[i]}
    if event == "subscribe_msg_popup_event":
        item["PopupScene"] = "2"
    if event == "subscribe_msg_sent_event":
        item.update({"MsgID": f"17008271328195543{i}", "ErrorCode": "0" if i == 0 else "20001"})
    return item


def _check(event: str, results: list[dict], n: int) -> None:
    assert len(results) == n
    _, _, statuses = SUBSCRIBE_EVENTS[event]
    for i, r in enumerate(results):
        assert r["template_id"] == f"TPL{i}"
        assert r["status"] == statuses[i]
        if event == "subscribe_msg_popup_event":
            assert r["popup_scene"] == 2
        if event == "subscribe_msg_sent_event":
            assert r["msg_id"] == f"17008271328195543{i}"
            assert r["error_code"] == (0 if i == 0 else 20001)
            assert r["error_status"] == statuses[i]


@pytest.mark.parametrize("event", sorted(SUBSCRIBE_EVENTS))
@pytest.mark.parametrize("n", [1, 2])
def test_subscribe_list_xml(event: str, n: int) -> None:
    wrapper = SUBSCRIBE_EVENTS[event][0]
    lists = "".join(
        "<List>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in _item(event, i).items()) + "</List>"
        for i in range(n)
    )
    m = normalise(parse_xml(event_xml(event, f"<{wrapper}>{lists}</{wrapper}>")), "wxa")
    assert m.event == event
    _check(event, m.subscribe_results, n)


@pytest.mark.parametrize("event", sorted(SUBSCRIBE_EVENTS))
@pytest.mark.parametrize("shape", ["object", "array-1", "array-2"])
def test_subscribe_list_json(event: str, shape: str) -> None:
    items: object
    if shape == "object":
        items, n = _item(event, 0), 1
    else:
        n = 1 if shape == "array-1" else 2
        items = [_item(event, i) for i in range(n)]
    doc = {
        "ToUserName": "gh",
        "FromUserName": "o1",
        "CreateTime": "1620973045",
        "MsgType": "event",
        "Event": event,
        "List": items,
    }
    _check(event, normalise(parse_json(json.dumps(doc)), "wxa").subscribe_results, n)
    # Some pushes nest List inside the wrapper object in JSON too.
    doc = {**{k: v for k, v in doc.items() if k != "List"}, SUBSCRIBE_EVENTS[event][0]: {"List": items}}
    _check(event, normalise(parse_json(json.dumps(doc)), "wxa").subscribe_results, n)


def test_subscribe_list_missing_or_garbage() -> None:
    m = normalise(parse_xml(event_xml("subscribe_msg_popup_event")), "wxa")
    assert m.subscribe_results == []
    doc = {"MsgType": "event", "Event": "subscribe_msg_change_event", "List": ["x", 3, None]}
    assert normalise(parse_json(json.dumps(doc)), "wxa").subscribe_results == []
    doc = {"MsgType": "event", "Event": "subscribe_msg_sent_event", "List": "oops"}
    assert normalise(parse_json(json.dumps(doc)), "wxa").subscribe_results == []


def test_other_events_have_no_subscribe_results() -> None:
    assert oa(event_xml("subscribe")).subscribe_results == []


# ------------------------------------------------------------------------------------------- hostile input

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<xml><Content>&lol3;</Content></xml>"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><MsgType>text</MsgType><Content>&xxe;</Content></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(XXE, id="xxe"),
        pytest.param("<!doctype xml><xml><A>1</A></xml>", id="lowercase-doctype"),
        pytest.param('<!DOCTYPE xml SYSTEM "http://evil/x.dtd"><xml/>', id="external-dtd"),
        pytest.param('<xml><!ENTITY x "y"></xml>', id="bare-entity"),
        pytest.param('<!   DOCTYPE x [<!ENTITY % p SYSTEM "http://e/">%p;]><xml/>', id="parameter-entity"),
        pytest.param(XXE.encode("utf-16"), id="utf16-hides-doctype"),
        pytest.param(b"<xml><Content>\xff\xfe</Content></xml>", id="not-utf8"),
        pytest.param("hello world", id="not-xml"),
        pytest.param("<xml><Content>unclosed</xml>", id="malformed"),
        pytest.param("<other><A>1</A></other>", id="wrong-root"),
        pytest.param("<xml/>", id="empty-root"),
        pytest.param("<xml>text only</xml>", id="text-root"),
        pytest.param("<xml><A>1</A></xml><xml/>", id="two-roots"),
        pytest.param("", id="empty"),
        pytest.param(b"   \n", id="blank"),
        pytest.param('{"MsgType":"text"}', id="json-as-xml"),
    ],
)
def test_parse_xml_refuses(body: str | bytes) -> None:
    with pytest.raises(BadPayload):
        parse_xml(body)


def test_parse_xml_refuses_non_bytes() -> None:
    with pytest.raises(BadPayload):
        parse_xml(None)  # type: ignore[arg-type]


def test_parse_xml_size_limit() -> None:
    big = xml("text", "<Content>" + "a" * 300_000 + "</Content>")
    with pytest.raises(PayloadTooLarge):
        parse_xml(big)
    assert parse_xml(big, max_bytes=400_000)["Content"].startswith("aaa")


def test_parse_xml_accepts_declaration_bom_and_bytes() -> None:
    body = '\ufeff<?xml version="1.0" encoding="utf-8"?>\n' + xml("text", "<Content>中</Content>")
    assert parse_xml(body.encode("utf-8"))["Content"] == "中"
    assert parse_xml(body)["Content"] == "中"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '"string"',
        "123",
        "null",
        '{"a": NaN}',
        '{"a": Infinity}',
        "[" * 100_000,
        "",
        b"\xff\xfe{}",
        "{'single': 1}",
    ],
)
def test_parse_json_refuses(body: str | bytes) -> None:
    with pytest.raises(BadPayload):
        parse_json(body)


def test_parse_json_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_json(json.dumps({"Content": "a" * 300_000}))


def test_parse_body_sniffs_format() -> None:
    assert parse_body(' {"MsgType":"text"}')["MsgType"] == "text"
    assert parse_body("<xml><MsgType>text</MsgType></xml>")["MsgType"] == "text"
    assert parse_body(b'{"a":1}', "json") == {"a": 1}
    with pytest.raises(BadPayload):
        parse_body("<xml/>", "json")
    with pytest.raises(ValueError):
        parse_body("x", "yaml")


def test_normalise_rejects_unknown_account() -> None:
    with pytest.raises(ValueError):
        normalise({}, "corp")


# ------------------------------------------------------------------------------------------- safe mode


def test_encrypted_field_modes() -> None:
    assert encrypted_field(parse_xml(xml("text", "<Content>a</Content>"))) is None
    safe = parse_xml("<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>")
    assert encrypted_field(safe) == "abc="
    compatible = parse_xml(xml("text", "<Content>plain</Content><Encrypt><![CDATA[cipher]]></Encrypt>"))
    assert encrypted_field(compatible) == "cipher"
    assert encrypted_field({"ToUserName": "gh", "Encrypt": "xyz"}) == "xyz"
    for bad in [{"Encrypt": ""}, {"Encrypt": None}, {"Encrypt": 5}, {"Encrypt": ["a", "b"]}]:
        with pytest.raises(BadPayload):
            encrypted_field(bad)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_safe_mode_end_to_end(fmt: str) -> None:
    crypto = Crypto("tok", ["abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"], "wxb11529c136998cb6")
    if fmt == "xml":
        inner = xml("text", "<Content><![CDATA[办事指南 😀]]></Content><MsgId>99</MsgId>")
    else:
        inner = json.dumps(
            {
                "ToUserName": "gh",
                "FromUserName": "oUser123",
                "CreateTime": 1714112445,
                "MsgType": "text",
                "Content": "办事指南 😀",
                "MsgId": "99",
            },
            ensure_ascii=False,
        )
    sealed = crypto.encrypt(inner, nonce="n", timestamp="1714112445")
    if fmt == "xml":
        outer = f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>"
    else:
        outer = json.dumps({"ToUserName": "gh", "Encrypt": sealed["Encrypt"]})
    doc = parse_body(outer, fmt)
    plain, index = crypto.decrypt(encrypted_field(doc), sealed["MsgSignature"], "1714112445", "n")  # type: ignore[arg-type]
    m = normalise(parse_body(plain, fmt), "wxa")
    assert (m.content, m.msg_id, index) == ("办事指南 😀", "99", 0)


def test_decrypted_hostile_xml_is_still_refused() -> None:
    crypto = Crypto("tok", ["abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"], "wxb11529c136998cb6")
    sealed = crypto.encrypt(BILLION_LAUGHS)
    plain, _ = crypto.decrypt(sealed["Encrypt"], sealed["MsgSignature"], sealed["TimeStamp"], sealed["Nonce"])
    with pytest.raises(WeChatEnvelopeError):
        parse_xml(plain)


# ------------------------------------------------------------------------------------------- dedup


def test_dedup_key_uses_msgid() -> None:
    a = oa(xml("text", "<Content>a</Content><MsgId>1001</MsgId>"))
    b = normalise(parse_json(json.dumps({"MsgType": "text", "MsgId": 1001, "FromUserName": "x"})), "oa")
    assert dedup_key(a, "wx1") == dedup_key(b, "wx1")
    assert "1001" in dedup_key(a, "wx1")
    assert dedup_key(a, "wx1").startswith("wx:wx1:oa:")
    assert dedup_key(a, "wx1") != dedup_key(a, "wx2")


def test_dedup_key_for_events() -> None:
    first = oa(event_xml("CLICK", "<EventKey>MENU_A</EventKey>"))
    retry = oa(event_xml("CLICK", "<EventKey>MENU_A</EventKey>"))
    other_key = oa(event_xml("CLICK", "<EventKey>MENU_B</EventKey>"))
    other_event = oa(event_xml("VIEW", "<EventKey>MENU_A</EventKey>"))
    assert dedup_key(first, "wx1") == dedup_key(retry, "wx1")
    assert len({dedup_key(m, "wx1") for m in (first, other_key, other_event)}) == 3
    key = dedup_key(first, "wx1")
    assert "oUser123" in key and "1714112445" in key and "click" in key and "MENU_A" in key
    wxa = normalise(parse_xml(event_xml("CLICK", "<EventKey>MENU_A</EventKey>")), "wxa")
    assert dedup_key(wxa, "wx1") != key


# ------------------------------------------------------------------------------------------- replies


def _incoming() -> Message:
    return oa(xml("text", "<Content>问</Content><MsgId>1</MsgId>"))


def test_text_reply_xml_round_trips() -> None:
    text = "您好！回复 ]]> 也不怕 <b>&amp; 😀𠀀"
    reply = parse_xml(render_text_reply(_incoming(), text, now=1700000000))
    assert reply == {
        "ToUserName": "oUser123",
        "FromUserName": "gh_97417a04a28d",
        "CreateTime": "1700000000",
        "MsgType": "text",
        "Content": text,
    }


def test_text_reply_json_for_wxa() -> None:
    msg = normalise(
        parse_json(json.dumps({"MsgType": "text", "FromUserName": "o1", "ToUserName": "gh"})), "wxa"
    )
    doc = json.loads(render_text_reply(msg, "你好😀", now=5, fmt="json"))
    assert doc == {
        "ToUserName": "o1",
        "FromUserName": "gh",
        "CreateTime": 5,
        "MsgType": "text",
        "Content": "你好😀",
    }
    with pytest.raises(ValueError):
        render_text_reply(msg, "x", fmt="html")


def test_text_reply_strips_illegal_xml_characters() -> None:
    reply = parse_xml(render_text_reply(_incoming(), "a\x00b\x08c\x1fd\ttab", now=1))
    assert reply["Content"] == "abcd\ttab"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_reply_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        render_text_reply(_incoming(), text)


@pytest.mark.parametrize("unit", ["中", "😀", "a", "é", "👨‍👩‍👧"])
def test_long_reply_cut_at_character_boundary(unit: str) -> None:
    text = unit * 3000
    reply = parse_xml(render_text_reply(_incoming(), text, now=1))
    content = reply["Content"]
    assert len(content.encode("utf-8")) <= REPLY_TEXT_MAX_BYTES
    assert len(content.encode("utf-8")) > REPLY_TEXT_MAX_BYTES - 8
    assert content.endswith("…")
    assert text.startswith(content[:-1])


def test_truncate_utf8() -> None:
    assert truncate_utf8("short") == "short"
    assert truncate_utf8("中" * 10, max_bytes=30) == "中" * 10
    cut = truncate_utf8("中" * 10, max_bytes=10)
    assert cut == "中" * 2 + "…" and len(cut.encode()) <= 10
    assert truncate_utf8("😀😀", max_bytes=5, suffix="") == "😀"
    assert truncate_utf8("😀😀", max_bytes=2) == ""


def test_image_reply() -> None:
    reply = parse_xml(render_image_reply(_incoming(), "MEDIA_1", now=2))
    assert reply["MsgType"] == "image" and reply["Image"] == {"MediaId": "MEDIA_1"}
    with pytest.raises(ValueError):
        render_image_reply(_incoming(), "")


def test_news_reply_limits() -> None:
    articles = [
        {"title": f"标题{i}", "description": "d", "pic_url": "http://p", "url": f"http://u/{i}"}
        for i in range(10)
    ]
    reply = parse_xml(render_news_reply(_incoming(), articles, now=3))
    assert reply["ArticleCount"] == "1"
    assert reply["Articles"]["item"]["Title"] == "标题0"
    # After an event too (the reply-format page's "up to 8" predates WeChat's 2018-10-12 one-article rule).
    follow = oa(event_xml("subscribe"))
    reply = parse_xml(render_news_reply(follow, articles, now=3))
    assert reply["ArticleCount"] == "1" and reply["Articles"]["item"]["Title"] == "标题0"
    with pytest.raises(ValueError):
        render_news_reply(follow, [])


def test_dedup_key_tells_subscribe_message_events_of_one_second_apart() -> None:
    """Two subscribe-message reports for one user in the same second (two sends, two popups) carry no EventKey:
    by sender + time + event alone the second was taken for a retry of the first and dropped."""
    def sent(msgid: str, status: str = "success") -> Message:
        body = {"ToUserName": "gh_1", "FromUserName": "oUser9", "CreateTime": 1714112445, "MsgType": "event",
                "Event": "subscribe_msg_sent_event",
                "List": {"TemplateId": "T1", "MsgID": msgid, "ErrorCode": 0, "ErrorStatus": status}}
        return normalise(parse_json(json.dumps(body)), "wxa")

    first, retry, second = sent("1001"), sent("1001"), sent("1002")
    assert dedup_key(first, "wx1") == dedup_key(retry, "wx1")
    assert dedup_key(first, "wx1") != dedup_key(second, "wx1")
    assert dedup_key(first, "wx1") != dedup_key(sent("1001", "failed:system failed"), "wx1")
