"""Envelope crypto: official vectors, wechatpy's vectors, key rotation and every malformed input."""

from __future__ import annotations

import base64
import json
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxapp_backend.wechat.crypto import (
    BadAppId,
    BadCiphertext,
    BadPayload,
    BadSignature,
    Crypto,
    Envelope,
    PayloadTooLarge,
    StaleTimestamp,
    WeChatEnvelopeError,
    check_signature,
    check_timestamp,
    envelope_json,
    envelope_xml,
    msg_signature,
    sign,
)

# WECHAT.md: mini-program JSON safe-mode vector.
WXA_TOKEN = "AAAAA"
WXA_KEY = "A" * 43
WXA_APPID = "wxba5fad812f8e6fb9"
WXA_TS, WXA_NONCE = "1714112445", "415670741"
WXA_SIG = "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
WXA_MSG_SIG = "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
WXA_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVza"
    "zhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwK"
    "SqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
WXA_PLAIN = (
    '{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,'
    '"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}'
)

# Tencent's sample key for the Official Account.
OA_TOKEN, OA_KEY, OA_APPID = "pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6"

# wechatpy tests/test_crypto.py (WeCom, same envelope with the corp id as trailing id).
WP_TOKEN, WP_KEY, WP_ID = "123456", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wx49f0ab532d5d035a"
WP_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283d"
    "Gymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBi"
    "T+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SN"
    "dshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBd"
    "CRxthuL0="
)
WP_REPLY = """<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""
WP_EXPECTED_ENVELOPE = """<xml>
<Encrypt><![CDATA[9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3]]></Encrypt>
<MsgSignature><![CDATA[407518b7649e86ef23978113f92d27afa9296533]]></MsgSignature>
<TimeStamp>1411525903</TimeStamp>
<Nonce><![CDATA[461056294]]></Nonce>
</xml>"""  # noqa: E501

OLD_KEY = base64.b64encode(bytes(range(32))).decode()[:43]


def seal_raw(encoding_aes_key: str, data: bytes) -> str:
    """AES-CBC over arbitrary bytes (already block-aligned), to forge malformed plaintexts."""
    key = base64.b64decode(encoding_aes_key + "=")
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


def frame(msg: bytes, appid: bytes, length: int | None = None) -> bytes:
    return os.urandom(16) + struct.pack(">I", len(msg) if length is None else length) + msg + appid


def pad32(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


def decrypt_signed(
    crypto: Crypto, encrypt: str, ts: str = "1700000000", nonce: str = "42"
) -> tuple[str, int]:
    return crypto.decrypt(encrypt, msg_signature(crypto.token, ts, nonce, encrypt), ts, nonce)


# ------------------------------------------------------------------------------------------- signatures


def test_url_check_signature_official_vector() -> None:
    assert check_signature("AAAAA", "f464b24fc39322e44b38aa78f5edd27bd1441696", "1714036504", "1514711492")


def test_url_check_signature_wxa_vector() -> None:
    assert check_signature(WXA_TOKEN, WXA_SIG, WXA_TS, WXA_NONCE)


def test_wechatpy_signature_vectors() -> None:
    assert check_signature("test", "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff", "1410685589", "test")
    assert not check_signature("test", "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe", "1410685589", "test")
    assert sign("789", "456", "123") == "f7c3bc1d808e04732adf679965ccc34ca7ae3441"


@pytest.mark.parametrize(
    ("signature", "timestamp", "nonce"),
    [
        ("f464b24fc39322e44b38aa78f5edd27bd1441697", "1714036504", "1514711492"),  # one digit off
        ("f464b24fc39322e44b38aa78f5edd27bd1441696", "1714036505", "1514711492"),  # other timestamp
        ("f464b24fc39322e44b38aa78f5edd27bd1441696", "1714036504", "1514711493"),  # other nonce
        ("", "1714036504", "1514711492"),
        (None, "1714036504", "1514711492"),
        ("f464b24fc39322e44b38aa78f5edd27bd1441696", None, "1514711492"),
        ("签名签名", "1714036504", "1514711492"),  # non-ASCII must not raise TypeError in compare_digest
    ],
)
def test_wrong_url_signature_is_false(signature: str | None, timestamp: str | None, nonce: str) -> None:
    assert check_signature("AAAAA", signature, timestamp, nonce) is False


def test_signature_accepts_upper_case_hex() -> None:
    assert check_signature("AAAAA", "F464B24FC39322E44B38AA78F5EDD27BD1441696", "1714036504", "1514711492")


def test_msg_signature_vector() -> None:
    assert msg_signature(WXA_TOKEN, WXA_TS, WXA_NONCE, WXA_ENCRYPT) == WXA_MSG_SIG


# ------------------------------------------------------------------------------------------- decrypt vectors


def test_wxa_json_safe_mode_vector_decrypts() -> None:
    crypto = Crypto(WXA_TOKEN, [WXA_KEY], WXA_APPID)
    plain, index = crypto.decrypt(WXA_ENCRYPT, WXA_MSG_SIG, WXA_TS, WXA_NONCE)
    assert index == 0
    assert plain == WXA_PLAIN
    assert json.loads(plain)["debug_str"] == "hello world"


def test_wechatpy_decrypt_vector() -> None:
    crypto = Crypto(WP_TOKEN, [WP_KEY], WP_ID)
    plain, _ = crypto.decrypt(
        WP_ENCRYPT, "74d92dfeb87ba7c714f89d98870ae5eb62dff26d", "1411525903", "461056294"
    )
    assert "<Content><![CDATA[test]]></Content>" in plain
    assert "<FromUserName><![CDATA[messense]]></FromUserName>" in plain


def test_wechatpy_echostr_vector() -> None:
    crypto = Crypto(WP_TOKEN, [WP_KEY], WP_ID)
    echo = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
    plain, _ = crypto.decrypt(echo, "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374425")
    assert plain.isdigit()
    with pytest.raises(BadSignature):
        crypto.decrypt(echo, "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374424")


def test_wechatpy_encrypt_vector_byte_for_byte() -> None:
    crypto = Crypto(WP_TOKEN, [WP_KEY], WP_ID)
    sealed = crypto.encrypt(
        WP_REPLY, nonce="461056294", timestamp="1411525903", random_prefix=b"1234567890123456"
    )
    assert sealed["MsgSignature"] == "407518b7649e86ef23978113f92d27afa9296533"
    assert envelope_xml(sealed) == WP_EXPECTED_ENVELOPE


def test_tencent_sample_key_round_trips() -> None:
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    reply = "<xml><ToUserName><![CDATA[oia2Tj]]></ToUserName><Content><![CDATA[你好]]></Content></xml>"
    sealed = crypto.encrypt(reply, nonce="1320562132", timestamp="1409304348")
    assert set(sealed) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert sealed["MsgSignature"] == msg_signature(OA_TOKEN, "1409304348", "1320562132", sealed["Encrypt"])
    assert crypto.decrypt(sealed["Encrypt"], sealed["MsgSignature"], "1409304348", "1320562132") == (reply, 0)


def test_interoperates_with_wechatpy_both_ways() -> None:
    from wechatpy.crypto import WeChatCrypto

    ours = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    theirs = WeChatCrypto(OA_TOKEN, OA_KEY, OA_APPID)
    text = "<xml><Content><![CDATA[营商服务 😀]]></Content></xml>"
    envelope = theirs.encrypt_message(text, "123456", "1700000000")
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    signature = envelope.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    assert ours.decrypt(encrypt, signature, "1700000000", "123456") == (text, 0)

    mine = ours.encrypt(text, nonce="654321", timestamp="1700000001")
    doc = {"Encrypt": mine["Encrypt"]}
    assert theirs.decrypt_message(doc, mine["MsgSignature"], "1700000001", "654321") == text


@pytest.mark.parametrize(
    "text", ["", "a", "😀", "𠀀𪚥 中文 ✓ emoji 👨‍👩‍👧‍👦", "x" * 31, "x" * 32, "长" * 5000]
)
def test_round_trip_texts(text: str) -> None:
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    sealed = crypto.encrypt(text)
    assert crypto.decrypt(
        sealed["Encrypt"], sealed["MsgSignature"], sealed["TimeStamp"], sealed["Nonce"]
    ) == (
        text,
        0,
    )
    assert len(base64.b64decode(sealed["Encrypt"])) % 32 == 0


def test_success_is_never_encrypted() -> None:
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    for text in ["success", " success\n"]:
        with pytest.raises(ValueError):
            crypto.encrypt(text)


def test_envelope_is_also_the_class_name() -> None:
    assert Envelope is Crypto


def test_envelope_renderers() -> None:
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    sealed = crypto.encrypt("hi", nonce="n1", timestamp="1700000000")
    doc = json.loads(envelope_json(sealed))
    assert doc == {**sealed, "TimeStamp": 1700000000}
    assert crypto.encrypt_xml("hi").startswith("<xml>\n<Encrypt><![CDATA[")
    assert set(json.loads(crypto.encrypt_json("hi"))) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}


# ------------------------------------------------------------------------------------------- key rotation


def test_previous_key_fallback_reports_index_1() -> None:
    old = Crypto(OA_TOKEN, [OLD_KEY], OA_APPID)
    rotated = Crypto(OA_TOKEN, [OA_KEY, OLD_KEY], OA_APPID)
    sealed = old.encrypt("<xml>old</xml>")
    plain, index = rotated.decrypt(
        sealed["Encrypt"], sealed["MsgSignature"], sealed["TimeStamp"], sealed["Nonce"]
    )
    assert (plain, index) == ("<xml>old</xml>", 1)
    # Answer with the key that worked: the reply made with index 1 opens with the old key alone.
    reply = rotated.encrypt("<xml>reply</xml>", key_index=1)
    assert decrypt_signed(old, reply["Encrypt"], reply["TimeStamp"], reply["Nonce"])[0] == "<xml>reply</xml>"


def test_current_key_wins_when_both_configured() -> None:
    rotated = Crypto(OA_TOKEN, [OA_KEY, OLD_KEY], OA_APPID)
    sealed = Crypto(OA_TOKEN, [OA_KEY], OA_APPID).encrypt("now")
    assert decrypt_signed(rotated, sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"]) == ("now", 0)


def test_empty_previous_slot_is_skipped() -> None:
    for slots in ([OA_KEY, None], [OA_KEY, ""]):
        crypto = Crypto(OA_TOKEN, slots, OA_APPID)
        sealed = crypto.encrypt("x")
        assert decrypt_signed(crypto, sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"]) == ("x", 0)
        with pytest.raises(ValueError):
            crypto.encrypt("x", key_index=1)


def test_neither_key_works() -> None:
    stranger = Crypto(OA_TOKEN, [WXA_KEY], OA_APPID)
    rotated = Crypto(OA_TOKEN, [OA_KEY, OLD_KEY], OA_APPID)
    sealed = stranger.encrypt("<xml/>")
    with pytest.raises(BadCiphertext):
        decrypt_signed(rotated, sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"])


@pytest.mark.parametrize("key", ["", "short", "A" * 44, "!" * 43, None])
def test_constructor_rejects_bad_keys(key: str | None) -> None:
    with pytest.raises(ValueError):
        Crypto(OA_TOKEN, [key], OA_APPID)  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------- bad input


def test_wrong_msg_signature() -> None:
    crypto = Crypto(WXA_TOKEN, [WXA_KEY], WXA_APPID)
    for sig in [WXA_SIG, "0" * 40, "", "签名"]:
        with pytest.raises(BadSignature):
            crypto.decrypt(WXA_ENCRYPT, sig, WXA_TS, WXA_NONCE)
    with pytest.raises(BadSignature):  # signature covers the nonce and timestamp too
        crypto.decrypt(WXA_ENCRYPT, WXA_MSG_SIG, WXA_TS, "1")
    with pytest.raises(BadSignature):  # wrong token
        Crypto("BBBBB", [WXA_KEY], WXA_APPID).decrypt(WXA_ENCRYPT, WXA_MSG_SIG, WXA_TS, WXA_NONCE)


def test_wrong_key_is_our_exception_not_unicode_error() -> None:
    crypto = Crypto(WXA_TOKEN, [OA_KEY], WXA_APPID)
    with pytest.raises(BadCiphertext) as info:
        crypto.decrypt(WXA_ENCRYPT, WXA_MSG_SIG, WXA_TS, WXA_NONCE)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_many_random_wrong_keys_always_raise_envelope_errors() -> None:
    sealed = Crypto(OA_TOKEN, [OA_KEY], OA_APPID).encrypt("<xml><Content>hello</Content></xml>" * 3)
    for _ in range(300):
        key = base64.b64encode(os.urandom(32)).decode()[:43]
        try:
            decrypt_signed(
                Crypto(OA_TOKEN, [key], OA_APPID), sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"]
            )
        except WeChatEnvelopeError:
            continue
        pytest.fail("a random key decrypted the message")


def test_wrong_appid_inside_ciphertext() -> None:
    sealed = Crypto(OA_TOKEN, [OA_KEY], "wxaaaaaaaaaaaaaaaa").encrypt("<xml/>")
    with pytest.raises(BadAppId):
        decrypt_signed(
            Crypto(OA_TOKEN, [OA_KEY], OA_APPID), sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"]
        )
    # A prefix of the right appid is not the right appid.
    sealed = Crypto(OA_TOKEN, [OA_KEY], OA_APPID[:-1]).encrypt("<xml/>")
    with pytest.raises(BadAppId):
        decrypt_signed(
            Crypto(OA_TOKEN, [OA_KEY], OA_APPID), sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"]
        )


def test_previous_key_bad_appid_is_reported_as_bad_appid() -> None:
    sealed = Crypto(OA_TOKEN, [OLD_KEY], "wxaaaaaaaaaaaaaaaa").encrypt("<xml/>")
    rotated = Crypto(OA_TOKEN, [OA_KEY, OLD_KEY], OA_APPID)
    with pytest.raises(BadAppId):
        decrypt_signed(rotated, sealed["Encrypt"], sealed["TimeStamp"], sealed["Nonce"])


def _valid_encrypt() -> str:
    return Crypto(OA_TOKEN, [OA_KEY], OA_APPID).encrypt("<xml><Content>hello world</Content></xml>")[
        "Encrypt"
    ]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda e: e[:-1], id="truncated-one-char"),
        pytest.param(lambda e: e[:-4], id="truncated-4-chars"),
        pytest.param(lambda e: e[: len(e) // 2], id="truncated-half"),
        pytest.param(lambda e: base64.b64encode(base64.b64decode(e)[:-16]).decode(), id="truncated-block"),
        pytest.param(lambda e: base64.b64encode(base64.b64decode(e)[16:]).decode(), id="dropped-first-block"),
        pytest.param(lambda e: base64.b64encode(base64.b64decode(e)[:16]).decode(), id="one-block"),
        pytest.param(lambda e: base64.b64encode(base64.b64decode(e) + b"x").decode(), id="trailing-byte"),
        pytest.param(lambda e: "!!!!" + e[4:], id="non-base64-chars"),
        pytest.param(lambda e: e[:10] + "\n" + e[10:], id="embedded-newline"),
        pytest.param(lambda e: "中文" + e, id="non-ascii"),
        pytest.param(lambda e: "hello world", id="plain-text"),
        pytest.param(lambda e: "====", id="only-padding"),
    ],
)
def test_malformed_ciphertext(mangle) -> None:  # type: ignore[no-untyped-def]
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    with pytest.raises(BadCiphertext):
        decrypt_signed(crypto, mangle(_valid_encrypt()))


def test_empty_ciphertext() -> None:
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    for value in ["", None, 123]:
        with pytest.raises(BadCiphertext):
            crypto.decrypt(value, "x", "1", "1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00", id="pad-0"),
        pytest.param(b"\x21", id="pad-33"),
        pytest.param(b"\xff", id="pad-255"),
        pytest.param(b"\x03\x03\x02", id="inconsistent"),
    ],
)
def test_bad_padding(tail: bytes) -> None:
    body = frame(b"<xml/>", OA_APPID.encode())
    fill = (32 - (len(body) + len(tail)) % 32) % 32
    data = body + b"\x07" * fill + tail
    assert len(data) % 32 == 0
    with pytest.raises(BadCiphertext):
        decrypt_signed(Crypto(OA_TOKEN, [OA_KEY], OA_APPID), seal_raw(OA_KEY, data))


@pytest.mark.parametrize("length", [10_000, 2**32 - 1, 7])
def test_bad_length_field(length: int) -> None:
    data = pad32(frame(b"<xml>hello</xml>", OA_APPID.encode(), length=length))
    with pytest.raises((BadCiphertext, BadAppId)):
        decrypt_signed(Crypto(OA_TOKEN, [OA_KEY], OA_APPID), seal_raw(OA_KEY, data))


def test_too_short_for_length_field() -> None:
    data = pad32(os.urandom(16) + b"\x00\x00")
    with pytest.raises(BadCiphertext):
        decrypt_signed(Crypto(OA_TOKEN, [OA_KEY], OA_APPID), seal_raw(OA_KEY, data))


def test_bad_utf8_with_right_appid_is_bad_payload() -> None:
    data = pad32(frame(b"\xff\xfe<xml>\xc3</xml>", OA_APPID.encode()))
    with pytest.raises(BadPayload):
        decrypt_signed(Crypto(OA_TOKEN, [OA_KEY], OA_APPID), seal_raw(OA_KEY, data))


def test_well_formed_forgery_decrypts() -> None:
    # Control for the forgeries above: the same helper with a correct frame decrypts.
    data = pad32(frame("<xml>好</xml>".encode(), OA_APPID.encode()))
    assert decrypt_signed(Crypto(OA_TOKEN, [OA_KEY], OA_APPID), seal_raw(OA_KEY, data)) == (
        "<xml>好</xml>",
        0,
    )


# ------------------------------------------------------------------------------------------- timestamps


def test_check_timestamp_window() -> None:
    assert check_timestamp("1000", now=1200, window_seconds=300) == 1000
    assert check_timestamp(1000, now=700, window_seconds=300) == 1000
    with pytest.raises(StaleTimestamp):
        check_timestamp("1000", now=1301, window_seconds=300)
    with pytest.raises(StaleTimestamp):  # far future is refused too
        check_timestamp("2000", now=1000, window_seconds=300)
    assert check_timestamp("1", now=10**10, window_seconds=None) == 1
    assert check_timestamp("1", now=10**10, window_seconds=0) == 1


@pytest.mark.parametrize("ts", [None, "", "abc", "1e9", "12.5", "-5", "1_000", "١٢"])
def test_check_timestamp_malformed(ts: str | None) -> None:
    with pytest.raises(StaleTimestamp):
        check_timestamp(ts, now=1000, window_seconds=None)


# ------------------------------------------------------------------------------------------- error hierarchy


def test_error_hierarchy() -> None:
    for cls, status in [
        (BadSignature, 403),
        (BadCiphertext, 400),
        (BadAppId, 403),
        (StaleTimestamp, 403),
        (BadPayload, 400),
        (PayloadTooLarge, 413),
    ]:
        err = cls()
        assert isinstance(err, WeChatEnvelopeError)
        assert err.status == status
        assert err.code and err.code.isascii()
        assert any("\u4e00" <= ch <= "\u9fff" for ch in err.message_zh)
    custom = WeChatEnvelopeError("x_code", "出错了")
    assert (custom.code, custom.message_zh) == ("x_code", "出错了")
    assert issubclass(PayloadTooLarge, BadPayload)


def _fresh_cbc(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def test_reused_aes_contexts_give_what_a_fresh_context_gives_message_after_message() -> None:
    # The engine keeps one OpenSSL context per thread (docs/bench/webhook.md): every message, however many
    # came before it and however long, must be sealed and opened exactly as by a context made for it alone.
    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    key = base64.b64decode(OA_KEY + "=")
    for n, text in enumerate(["a", "你好" * 40, "x" * 15, "😀" * 300, "<xml/>", "b" * 1000]):
        prefix = bytes([n]) * 16
        sealed = crypto.encrypt(text, nonce="1", timestamp="2", random_prefix=prefix)
        raw = base64.b64decode(sealed["Encrypt"])
        body = text.encode()
        expected = _fresh_cbc(key, _pad(prefix + struct.pack(">I", len(body)) + body + OA_APPID.encode()))
        assert raw == expected, n
        assert crypto.decrypt(sealed["Encrypt"], sealed["MsgSignature"], "2", "1") == (text, 0)
        assert _fresh_cbc(key, raw, decrypt=True)[20:20 + len(body)] == body


def test_reused_aes_contexts_stay_correct_with_many_threads() -> None:
    import threading

    crypto = Crypto(OA_TOKEN, [OA_KEY], OA_APPID)
    key = base64.b64decode(OA_KEY + "=")
    errors: list[str] = []

    def work(i: int) -> None:
        for j in range(300):
            text = f"线程{i}消息{j}" * (1 + j % 7)
            prefix = struct.pack(">QQ", i, j)
            sealed = crypto.encrypt(text, nonce="1", timestamp="2", random_prefix=prefix)
            body = text.encode()
            expected = _fresh_cbc(key, _pad(prefix + struct.pack(">I", len(body)) + body + OA_APPID.encode()))
            if base64.b64decode(sealed["Encrypt"]) != expected:
                errors.append(f"encrypt {i}/{j}")
            if crypto.decrypt(sealed["Encrypt"], sealed["MsgSignature"], "2", "1") != (text, 0):
                errors.append(f"decrypt {i}/{j}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _pad(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


def test_the_reused_decryptor_gives_every_block_of_every_message() -> None:
    # The first 16 bytes are WeChat's random prefix, which decrypt() throws away: check the engine itself,
    # so that a wrong first block cannot hide there.
    from wxapp_backend.wechat.crypto import _Engine

    key = base64.b64decode(OA_KEY + "=")
    engine = _Engine(key)
    for n in (2, 7, 1, 40, 3):
        plain = bytes((n * 31 + i) % 256 for i in range(32 * n))
        raw = _fresh_cbc(key, plain)
        assert engine.decrypt(raw) == _fresh_cbc(key, raw, decrypt=True) == plain
        assert engine.encrypt(plain) == raw
