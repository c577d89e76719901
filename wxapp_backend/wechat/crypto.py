"""WeChat callback envelope: URL signatures, msg_signature and the AES-256-CBC "safe mode" envelope."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
import threading
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "BadAppId",
    "BadCiphertext",
    "BadPayload",
    "BadSignature",
    "Crypto",
    "Envelope",
    "PayloadTooLarge",
    "StaleTimestamp",
    "WeChatEnvelopeError",
    "check_signature",
    "check_timestamp",
    "envelope_json",
    "envelope_xml",
    "msg_signature",
    "random_bytes",
    "sign",
]

# WeChat pads to 32-byte blocks (not AES's 16), see WECHAT.md.
PAD_BLOCK = 32
_RANDOM_LEN = 16
_LEN_FIELD = 4


_RANDOM_CHUNK = 4096
_random = threading.local()


def _forget_random() -> None:
    global _random
    _random = threading.local()  # a child process must never reuse its parent's buffered bytes


os.register_at_fork(after_in_child=_forget_random)


def random_bytes(n: int) -> bytes:
    """`n` bytes from os.urandom, read 4 KiB at a time per thread (each byte is handed out once).

    The hot path needs a few random bytes per message (dedup token, the envelope's random prefix); one
    getrandom call per 4 KiB instead of per use saves system calls (each of which releases the GIL).
    """
    local = _random
    buf = getattr(local, "buf", b"")
    pos = getattr(local, "pos", 0)
    if pos + n > len(buf):
        buf, pos = os.urandom(max(_RANDOM_CHUNK, n)), 0
        local.buf = buf
    local.pos = pos + n
    return buf[pos:pos + n]


class WeChatEnvelopeError(Exception):
    """Any failure to authenticate, decrypt or parse a callback; the webhook maps it to a 4xx."""

    status = 400
    default_code = "bad_envelope"
    default_message = "微信消息无法识别。"

    def __init__(self, code: str | None = None, message_zh: str | None = None) -> None:
        self.code = code or self.default_code
        self.message_zh = message_zh or self.default_message
        super().__init__(f"{self.code}: {self.message_zh}")


class BadSignature(WeChatEnvelopeError):
    """signature or msg_signature did not match."""

    status = 403
    default_code = "bad_signature"
    default_message = "微信签名校验失败。"


class BadCiphertext(WeChatEnvelopeError):
    """The Encrypt field is not valid ciphertext for any configured key."""

    status = 400
    default_code = "bad_ciphertext"
    default_message = "微信加密消息无法解密。"


class BadAppId(WeChatEnvelopeError):
    """The ciphertext decrypted but was sealed for another appid."""

    status = 403
    default_code = "bad_appid"
    default_message = "微信消息的 AppID 不符。"


class StaleTimestamp(WeChatEnvelopeError):
    """The timestamp is missing, malformed or outside the accepted window."""

    status = 403
    default_code = "stale_timestamp"
    default_message = "微信消息时间戳已过期或无效。"


class BadPayload(WeChatEnvelopeError):
    """The (decrypted) body is not a well-formed WeChat XML/JSON document."""

    status = 400
    default_code = "bad_payload"
    default_message = "微信消息格式有误。"


class PayloadTooLarge(BadPayload):
    """The body is larger than any real WeChat push."""

    status = 413
    default_code = "payload_too_large"
    default_message = "微信消息太大。"


def sign(*parts: str | int) -> str:
    """SHA-1 hex digest of the parts sorted as strings and joined, WeChat's signature scheme."""
    return hashlib.sha1("".join(sorted(str(p) for p in parts)).encode("utf-8")).hexdigest()


def _same(a: str, b: str) -> bool:
    # compare_digest on str raises TypeError for non-ASCII input; attacker-controlled text can be anything.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def check_signature(
    token: str, signature: str | None, timestamp: str | int | None, nonce: str | None
) -> bool:
    """True if `signature` is sha1(sorted(token, timestamp, nonce)); constant-time compare."""
    if not signature or timestamp is None or nonce is None:
        return False
    return _same(sign(token, timestamp, nonce), str(signature).lower())


def msg_signature(token: str, timestamp: str | int, nonce: str, encrypt: str) -> str:
    """The msg_signature that covers a safe-mode ciphertext."""
    return sign(token, timestamp, nonce, encrypt)


def check_timestamp(ts: str | int | None, now: float | None = None, window_seconds: int | None = 300) -> int:
    """Return `ts` as int, raising StaleTimestamp if it is malformed or further than the window from now.

    `window_seconds=None` (or <= 0) disables the window but still requires a well-formed number.
    """
    text = "" if ts is None else str(ts).strip()
    # int() would accept "١٢" or "1_000"; WeChat sends plain ASCII digits. And a few thousand of them make int()
    # raise ValueError (Python's limit on digits), which is no envelope error: a 500 instead of a 403.
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise StaleTimestamp(message_zh="微信消息时间戳无效。")
    value = int(text)
    if window_seconds is not None and window_seconds > 0:
        current = time.time() if now is None else now
        # Both directions: a clock far in the future is as suspicious as a replay from the past.
        if abs(current - value) > window_seconds:
            raise StaleTimestamp()
    return value


def _decode_aes_key(encoding_aes_key: str) -> bytes:
    if not isinstance(encoding_aes_key, str) or len(encoding_aes_key) != 43:
        raise ValueError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError("EncodingAESKey is not base64") from exc
    if len(key) != 32:
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


def _pkcs7_pad(data: bytes) -> bytes:
    n = PAD_BLOCK - len(data) % PAD_BLOCK
    return data + bytes([n]) * n


def _pkcs7_unpad(data: bytes) -> bytes:
    n = data[-1]
    if not 1 <= n <= PAD_BLOCK or n > len(data) or data[-n:] != bytes([n]) * n:
        raise BadCiphertext(message_zh="微信加密消息填充无效。")
    return data[:-n]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


class _Engine:
    """AES-256-CBC with WeChat's fixed IV (the key's first 16 bytes), without a new OpenSSL context per
    message: creating one cost about as much as the AES work of a whole push (docs/bench/webhook.md).

    Each thread keeps two long-lived contexts (an OpenSSL context must not be shared between threads):
    - decryption: one CBC decryptor that goes on chaining from the last ciphertext block it was given (S):
      for the next message it gives D(C[0]) xor S as the first block, so that block is corrected by
      xor (S xor IV); every later block chains on the message's own blocks as in a fresh decryptor;
    - encryption: one CBC encryptor that goes on chaining from the last block it produced (S). The first
      block of the next message is given as P[0] xor IV xor S, so that the encryptor's E(that xor S) is
      E(P[0] xor IV): the same ciphertext as a fresh encryptor with the IV.
    Input is always whole blocks (WeChat pads to 32 bytes), so no context ever holds a partial block.
    """

    def __init__(self, key: bytes) -> None:
        self.key, self.iv = key, key[:16]
        self._local = threading.local()

    def _contexts(self) -> threading.local:
        local = self._local
        if not hasattr(local, "dec"):
            cipher = Cipher(algorithms.AES(self.key), modes.CBC(self.iv))
            local.dec, local.dec_last = cipher.decryptor(), self.iv
            local.cbc, local.last = cipher.encryptor(), self.iv
        return local

    @staticmethod
    def _forget(local: threading.local) -> None:
        del local.dec, local.cbc  # start afresh: the chaining values are no longer known

    def decrypt(self, raw: bytes) -> bytes:
        if not raw or len(raw) % 16:
            raise ValueError("ciphertext must be whole AES blocks")
        local = self._contexts()
        try:
            out = local.dec.update(raw)
        except BaseException:
            self._forget(local)
            raise
        first = _xor(out[:16], _xor(self.iv, local.dec_last))
        local.dec_last = raw[-16:]
        return first + out[16:]

    def encrypt(self, data: bytes) -> bytes:
        if not data or len(data) % 16:
            raise ValueError("plaintext must be whole AES blocks")
        local = self._contexts()
        first = _xor(data[:16], _xor(self.iv, local.last))
        try:
            out = local.cbc.update(first + data[16:])
        except BaseException:
            self._forget(local)
            raise
        local.last = out[-16:]
        return out


class Crypto:
    """Safe-mode envelope for one account; tries the previous EncodingAESKey when the current one fails."""

    def __init__(self, token: str, aes_keys: Sequence[str | None], appid: str) -> None:
        if not aes_keys or not aes_keys[0]:
            raise ValueError("the current EncodingAESKey is required")
        self.token = token
        self.appid = appid
        self._appid_bytes = appid.encode("utf-8")
        # Keep positions so key_index means the same thing as in configuration; empty slots are skipped.
        self._keys: list[bytes | None] = [_decode_aes_key(k) if k else None for k in aes_keys]
        # One AES-CBC engine per key slot; each thread keeps its own OpenSSL contexts in it (_Engine).
        self._ciphers: list[_Engine | None] = [_Engine(k) if k is not None else None for k in self._keys]

    @property
    def key_count(self) -> int:
        """How many key slots are configured (including empty ones)."""
        return len(self._keys)

    def decrypt(
        self, encrypt_b64: str, msg_signature: str, timestamp: str | int, nonce: str
    ) -> tuple[str, int]:
        """Verify msg_signature, decrypt, check the appid; return (plaintext, index of the key that worked)."""
        if not isinstance(encrypt_b64, str) or not encrypt_b64:
            raise BadCiphertext(message_zh="微信加密消息为空。")
        if not msg_signature or not _same(
            sign(self.token, timestamp, nonce, encrypt_b64), str(msg_signature).lower()
        ):
            raise BadSignature()
        raw = self._b64(encrypt_b64)
        first_error: WeChatEnvelopeError | None = None
        for index, cipher in enumerate(self._ciphers):
            if cipher is None:
                continue
            try:
                return self._open(cipher, raw), index
            except BadAppId as exc:
                # The key worked but the sender is another app: that is the more telling error.
                first_error = exc
            except BadCiphertext as exc:
                if first_error is None:
                    first_error = exc
        assert first_error is not None
        raise first_error

    def encrypt(
        self,
        plaintext: str,
        key_index: int = 0,
        nonce: str | None = None,
        timestamp: str | int | None = None,
        *,
        random_prefix: bytes | None = None,
    ) -> dict[str, str]:
        """Seal `plaintext` with the chosen key; return {Encrypt, MsgSignature, TimeStamp, Nonce}.

        `random_prefix` (16 bytes) exists only to reproduce published test vectors.
        """
        if plaintext.strip() == "success":
            # An encrypted "success" shows the user "该公众号/小程序提供的服务出现故障" (WECHAT.md).
            raise ValueError("answer 'success' in plain text; never encrypt it")
        cipher = self._ciphers[key_index] if 0 <= key_index < len(self._ciphers) else None
        if cipher is None:
            raise ValueError(f"no EncodingAESKey at index {key_index}")
        prefix = random_bytes(_RANDOM_LEN) if random_prefix is None else random_prefix
        if len(prefix) != _RANDOM_LEN:
            raise ValueError("random_prefix must be 16 bytes")
        body = plaintext.encode("utf-8")
        data = _pkcs7_pad(prefix + struct.pack(">I", len(body)) + body + self._appid_bytes)
        encrypt = base64.b64encode(cipher.encrypt(data)).decode("ascii")
        ts = str(int(time.time()) if timestamp is None else timestamp)
        # WeChat's own nonces are decimal strings; keep that shape.
        # (From the per-thread random buffer: secrets.randbelow would cost a system call per reply.)
        nc = nonce if nonce is not None else str(int.from_bytes(random_bytes(8)) % 9_000_000_000 + 1_000_000_000)
        return {
            "Encrypt": encrypt,
            "MsgSignature": msg_signature(self.token, ts, nc, encrypt),
            "TimeStamp": ts,
            "Nonce": nc,
        }

    def encrypt_xml(
        self, plaintext: str, key_index: int = 0, nonce: str | None = None, timestamp: str | int | None = None
    ) -> str:
        """Seal and render as the XML reply envelope."""
        return envelope_xml(self.encrypt(plaintext, key_index, nonce, timestamp))

    def encrypt_json(
        self, plaintext: str, key_index: int = 0, nonce: str | None = None, timestamp: str | int | None = None
    ) -> str:
        """Seal and render as the JSON reply envelope (JSON mini-programs)."""
        return envelope_json(self.encrypt(plaintext, key_index, nonce, timestamp))

    @staticmethod
    def _b64(encrypt_b64: str) -> bytes:
        try:
            raw = base64.b64decode(encrypt_b64, validate=True)
        except (binascii.Error, ValueError):
            # ValueError: non-ASCII characters in the input.
            raise BadCiphertext(message_zh="微信加密消息不是合法的 Base64。") from None
        # AES-CBC needs whole 16-byte blocks; the smallest real payload (16+4+appid, padded) is 32 bytes.
        if len(raw) < PAD_BLOCK or len(raw) % 16:
            raise BadCiphertext(message_zh="微信加密消息长度无效。")
        return raw

    def _open(self, cipher: _Engine, raw: bytes) -> str:
        plain = _pkcs7_unpad(cipher.decrypt(raw))
        content = plain[_RANDOM_LEN:]
        if len(content) < _LEN_FIELD:
            raise BadCiphertext(message_zh="微信加密消息长度字段无效。")
        (length,) = struct.unpack(">I", content[:_LEN_FIELD])
        end = _LEN_FIELD + length
        if end > len(content):
            raise BadCiphertext(message_zh="微信加密消息长度字段无效。")
        if not hmac.compare_digest(content[end:], self._appid_bytes):
            raise BadAppId()
        try:
            return content[_LEN_FIELD:end].decode("utf-8")
        except UnicodeDecodeError:
            raise BadPayload(message_zh="微信消息不是合法的 UTF-8 文本。") from None


# The name the architecture notes use for the same thing.
Envelope = Crypto


def envelope_xml(sealed: dict[str, str]) -> str:
    """Render {Encrypt, MsgSignature, TimeStamp, Nonce} as the XML reply envelope (wechatpy's layout)."""
    return (
        "<xml>\n"
        f"<Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt>\n"
        f"<MsgSignature><![CDATA[{sealed['MsgSignature']}]]></MsgSignature>\n"
        f"<TimeStamp>{sealed['TimeStamp']}</TimeStamp>\n"
        f"<Nonce><![CDATA[{sealed['Nonce']}]]></Nonce>\n"
        "</xml>"
    )


def envelope_json(sealed: dict[str, str]) -> str:
    """Render the sealed reply as the JSON envelope; TimeStamp is a number there."""
    ts: str | int = sealed["TimeStamp"]
    if isinstance(ts, str) and ts.isdigit():
        ts = int(ts)
    return json.dumps(
        {
            "Encrypt": sealed["Encrypt"],
            "MsgSignature": sealed["MsgSignature"],
            "TimeStamp": ts,
            "Nonce": sealed["Nonce"],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
