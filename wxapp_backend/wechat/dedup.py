"""Dedup of WeChat pushes and their retries: processing -> done records in Redis, one round trip to claim.

A push is claimed with SET NX and a short TTL (so a crashed try cannot poison the key); the try that
answers stores the exact response body as `done` for at least a minute, and every retry gets that body
byte for byte. A retry that arrives while the first try still runs waits briefly for the stored answer.

Hot path (docs/bench/webhook.md): the claim is one Lua call that also runs the caller's per-user commands,
and the pipeline stores its answer with `finish_nowait`, which writes the command with `CLIENT REPLY SKIP`
and does not wait for Redis's answer. Both go over a connection of the calling thread's own (no pool
checkout, whose readiness probe costs several system calls per command). Commands on one connection run in
order, so the record is in place before this thread's next claim; a retry that finds "processing" waits
for the answer anyway.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .crypto import random_bytes

log = logging.getLogger(__name__)

_PROCESSING = b"P"
_DONE = b"D"

# The claim is a Lua script generated for the *shape* of the caller's commands (which commands, on which of
# the keys, with which literal hash field names; see Commands) and cached per shape, so that each call sends
# only the keys and the values: SET NX of the record (and GET of it when it already exists), then the
# commands unrolled, results in order. Then, optionally, an answer worked out before the claim
# (Dedup.claim's `answer`) with its TTL and the rate limit: it is stored as the record at once when the
# record is new and the results at the shape's positions are what the answer was planned with (a user cache
# entry "<id>:<blocked 0|1>" as pipeline.touch_user writes it, that is not blocked; no state; the counter
# within the limit); the reply's first element is then 2. (A generic interpreter of a command list cost
# Redis ~3x the CPU of these scripts and the client twice the arguments to pack: docs/bench/webhook.md.)
_CLAIM_HEAD = """local created = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local r = {1, false}
if not created then r = {0, redis.call('GET', KEYS[1])} end
"""
_CLAIM_ANSWER = """if created then
  local user, state = r[{user}], r[{state}]
  if user and string.sub(user, -2) ~= ':1' and not state and ({rate}) then
    redis.call('SET', KEYS[1], ARGV[{answer}], 'PX', ARGV[{answer_ttl}])
    r[1] = 2
  end
end
"""
_LITERAL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LITERALS: dict[str, bool] = {}  # hash field name -> may be written into the script
_MAX_SHAPES = 64  # distinct command shapes compiled per process (the webhook has a handful)


def _claim_script(shape: tuple, valid_if: tuple[int, int, int] | None) -> str:
    """Lua source for one shape: `shape` is ((command, key index, parts), ...), each part a literal str or
    None for the next ARGV value; `valid_if` the 1-based result positions of user, state and rate counter
    (0: not counted) when an answer rides along."""
    lines, argv, pos = [_CLAIM_HEAD], 3, 2
    for name, key_index, parts in shape:
        args = [f"KEYS[{key_index}]"]
        for part in parts:
            if part is None:
                args.append(f"ARGV[{argv}]")
                argv += 1
            else:
                args.append(f"'{part}'")
        pos += 1
        if name == "INCR_NEW":  # counts the message once: a repeat of it (WeChat's retries) only reads the count
            lines.append(f"r[{pos}] = created and redis.call('INCR', {args[0]}) or redis.call('GET', {args[0]})\n")
            continue
        lines.append(f"r[{pos}] = redis.call('{name}', {', '.join(args)})\n")
    if valid_if is not None:
        user, state, rate = valid_if
        lines.append(_CLAIM_ANSWER.format(
            user=user + 2, state=state + 2, answer=argv, answer_ttl=argv + 1,
            rate="true" if not rate else f"tonumber(r[{rate + 2}]) <= tonumber(ARGV[{argv + 2}])"))
    lines.append("return r\n")
    return "".join(lines)


# Replace a value only while it is still our processing marker.
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Claim a record anew when it is still a processing marker claimed at least ARGV[3] ms ago (its PTTL is down to
# ARGV[4]): the try that set it died without answering.
_TAKE_OVER = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'P' and redis.call('PTTL', KEYS[1]) <= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """The result of claiming a key: "new" (ours to process), "done" (body is the answer), "processing", or
    "answered" (new, and the answer given to the claim was stored with it: body)."""

    state: str
    key: str
    token: bytes = b""
    body: bytes | None = None


class Commands:
    """The per-user commands that ride on a claim: the subset of a redis-py pipeline's methods the webhook
    uses (each command's first argument is its key). Results come back in order, as Redis gives them.

    Keys are sent once each however often they are used, hash field names that are plain words are written
    into the generated script, and everything else travels as a value."""

    __slots__ = ("keys", "values", "ops", "_index")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.values: list[Any] = []
        self.ops: list[tuple[str, int, tuple]] = []
        self._index: dict[str, int] = {}

    def _add(self, name: str, key: str, parts: tuple, values: tuple) -> None:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys) + 1  # KEYS[1] is the record
        self.ops.append((name, index, parts))
        self.values += values

    @staticmethod
    def _field(name: Any) -> tuple[tuple, tuple]:
        if not isinstance(name, str):
            return (None,), (name,)
        literal = _LITERALS.get(name)
        if literal is None:
            literal = _LITERAL.fullmatch(name) is not None
            if len(_LITERALS) < 1024:  # field names come from code: a handful
                _LITERALS[name] = literal
        return ((name,), ()) if literal else ((None,), (name,))

    def get(self, key: str) -> None:
        self._add("GET", key, (), ())

    def incr(self, key: str) -> None:
        self._add("INCR", key, (), ())

    def incr_new(self, key: str) -> None:
        """INCR when the claim is new; when the record already exists (the same message again) only GET."""
        self._add("INCR_NEW", key, (), ())

    def expire(self, key: str, seconds: int) -> None:
        self._add("EXPIRE", key, (None,), (int(seconds),))

    def hsetnx(self, key: str, field: str, value: Any) -> None:
        parts, values = self._field(field)
        self._add("HSETNX", key, parts + (None,), values + (value,))

    def hset(self, key: str, mapping: dict[str, Any]) -> None:
        parts: tuple = ()
        values: tuple = ()
        for name, value in mapping.items():
            p, v = self._field(name)
            parts += p + (None,)
            values += v + (value,)
        self._add("HSET", key, parts, values)

    def shape(self) -> tuple:
        return tuple(self.ops)


class Dedup:
    """Redis-backed dedup records shared by every worker process."""

    def __init__(self, r: redis.Redis, processing_ttl: float, done_ttl: float = 300.0) -> None:
        self.redis = r
        self.processing_ms = max(1000, int(processing_ttl * 1000))
        self.done_ms = max(60_000, int(done_ttl * 1000))  # WeChat retries for ~15 s; keep it >= 60 s
        self._scripts: dict[tuple, Any] = {}  # (shape, valid_if) -> registered claim script
        self._finish = r.register_script(_FINISH)
        self._release = r.register_script(_RELEASE)
        self._take_over = r.register_script(_TAKE_OVER)
        self._reply_skip: bool | None = None  # does the server take CLIENT REPLY SKIP? (asked once per process)
        self._probe_lock = threading.Lock()
        self._local = threading.local()  # .conn: the thread's own connection (see _call)
        _ALL.add(self)

    def _forget_connections(self) -> None:
        self._local = threading.local()  # in a forked child: never share a socket with the parent

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            pool = self.redis.connection_pool
            conn = self._local.conn = pool.connection_class(**pool.connection_kwargs)
        if conn._sock is None:  # new, or dropped after an error (redis-py keeps the socket there)
            conn.connect()
            _kernel_timeouts(conn._sock, conn.socket_timeout)
        return conn

    def _call(self, exchange: Callable[[Any], Any]) -> Any:
        """Run `exchange(connection)` on the thread's own connection; on a broken connection, once more on
        a fresh one (every exchange here is safe to repeat). Any failure that may leave a reply unread
        drops the connection, so that no later exchange can read another's reply."""
        for attempt in (1, 2):
            conn = self._connection()  # (re)connects and tunes the socket when it was dropped
            try:
                return exchange(conn)
            except redis.ResponseError:
                raise  # an error reply was read: the connection is still in step
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                conn.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def _evalsha(self, conn: Any, script: Any, keys: list, args: list) -> Any:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # Redis restarted or its script cache was flushed
            conn.send_command("EVAL", script.script, len(keys), *keys, *args)
            return conn.read_response()

    def claim(self, key: str, extra: Callable[[Commands], None] | None = None, *, answer: bytes | None = None,
              valid_if: tuple[int, int, int, int] = (0, 0, 0, 0)) -> tuple[Claim, list]:
        """Claim `key` for processing, or learn its stored answer; one round trip.

        `extra` may add commands to the same round trip (the webhook's per-user reads); their results
        are returned beside the claim. `answer`, worked out before the claim, is stored as the record at
        once (Claim "answered") when the claim is new and the results at the 1-based positions `valid_if`
        (user cache, conversation state, rate counter or 0, rate limit) say: a cached user who is not
        blocked, no conversation state, the rate limit not passed. Otherwise the claim is as without it.
        """
        commands = Commands()
        if extra is not None:
            extra(commands)
        token = _PROCESSING + random_bytes(8).hex().encode()
        keys, args = [key, *commands.keys], [token, self.processing_ms, *commands.values]
        if answer is not None:
            args += [_DONE + answer, self.done_ms, valid_if[3]]
        script = self._script(commands.shape(), valid_if[:3] if answer is not None else None)
        created, value, *more = self._call(lambda conn: self._evalsha(conn, script, keys, args))
        if created == 2:
            return Claim("answered", key, token, body=answer), more
        if created or value == token:  # our own marker: an earlier try of this call ran before its reply was lost
            return Claim("new", key, token), more
        # SET NX and GET ran atomically: the record exists (done, or another try's processing marker).
        return self._parse(key, value) or Claim("processing", key), more

    def _script(self, shape: tuple, valid_if: tuple[int, int, int] | None) -> Any:
        found = self._scripts.get((shape, valid_if))
        if found is None:
            found = self.redis.register_script(_claim_script(shape, valid_if))
            if len(self._scripts) < _MAX_SHAPES:
                self._scripts[(shape, valid_if)] = found
        return found

    @staticmethod
    def _parse(key: str, value: bytes | None) -> Claim | None:
        if value is None:
            return None
        if value.startswith(_DONE):
            return Claim("done", key, body=value[1:])
        return Claim("processing", key)

    def finish(self, claim: Claim, body: bytes) -> bool:
        """Store the answer; False when the claim was lost (expired and taken over)."""
        return bool(self._finish(keys=[claim.key], args=[claim.token, _DONE + body, self.done_ms]))

    def finish_nowait(self, claim: Claim, body: bytes) -> None:
        """`finish` without waiting for Redis's answer (one write, no round trip).

        Whether the claim was lost is not learnt (a lost claim is still never overwritten: the script
        checks the token). Falls back to `finish` when the server does not take CLIENT REPLY SKIP.
        """
        if not self._skip_supported():
            self.finish(claim, body)
            return
        # EVAL, not EVALSHA: an unknown script would be an error nobody reads. Repeating the write after a
        # broken connection is harmless: a record already stored is left alone.
        packed = [("CLIENT", "REPLY", "SKIP"), ("EVAL", _FINISH, 1, claim.key, claim.token, _DONE + body, self.done_ms)]
        self._call(lambda conn: conn.send_packed_command(conn.pack_commands(packed)))

    def _skip_supported(self) -> bool:
        if self._reply_skip is None:
            with self._probe_lock:
                if self._reply_skip is None:
                    self._reply_skip = _probe_reply_skip(self.redis)  # None again when Redis was unreachable
        return bool(self._reply_skip)

    def release(self, claim: Claim) -> None:
        """Forget a claim whose processing failed, so WeChat's retry runs the handler again."""
        self._release(keys=[claim.key], args=[claim.token])

    def take_over(self, key: str, older_than: float) -> Claim | None:
        """Claim `key` anew (a "new" Claim) when it is still another try's processing marker, set at least
        `older_than` seconds ago: that try can no longer answer (it died with its process). None otherwise."""
        left_ms = self.processing_ms - int(older_than * 1000)
        if left_ms <= 0:
            return None  # the marker expires before it is that old: a new claim takes the key then
        token = _PROCESSING + random_bytes(8).hex().encode()
        if self._take_over(keys=[key], args=[token, self.processing_ms, left_ms]):
            return Claim("new", key, token)
        return None

    def wait(self, key: str, timeout: float, interval: float = 0.01) -> Claim | None:
        """Wait up to `timeout` s for another try's answer: the done Claim, a processing Claim, or None
        when the record disappeared (the other try failed: the caller may claim it)."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            found = self._parse(key, self.redis.get(key))
            if found is None or found.state == "done":
                return found
            if time.monotonic() >= end:
                return found
            time.sleep(interval)
            interval = min(interval * 1.5, 0.05)


def _kernel_timeouts(sock: socket.socket | None, timeout: float | None) -> None:
    """Let the kernel enforce the connection's timeout (SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket).

    A Python socket with a timeout polls before every send and receive, and each of those system calls
    lets go of the GIL: under load every extra release is another thread switch (docs/bench/webhook.md).
    A timeout now surfaces as EAGAIN, which redis-py reports as a ConnectionError (the exchange is then
    tried once more on a fresh connection, as for any broken connection). TLS sockets are left as they are.
    """
    if sock is None or not timeout or isinstance(sock, ssl.SSLSocket):
        return
    seconds = int(timeout)
    value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.settimeout(None)


_ALL: weakref.WeakSet[Dedup] = weakref.WeakSet()


def _after_fork() -> None:
    for dedup in list(_ALL):
        dedup._forget_connections()


os.register_at_fork(after_in_child=_after_fork)


def _probe_reply_skip(r: redis.Redis) -> bool | None:
    """True when the server skips the reply to the command after CLIENT REPLY SKIP (Redis >= 3.2; some
    proxies refuse it). Asks once: SKIP, PING, ECHO; a supporting server answers the ECHO only (SKIP itself
    has no answer and the PING's is skipped); any other server answers more than once."""
    pool = r.connection_pool
    conn = pool.get_connection()
    marker = b"reply-skip-probe"
    try:
        conn.send_packed_command(conn.pack_commands([("CLIENT", "REPLY", "SKIP"), ("PING",), ("ECHO", marker)]))
        answers = 0
        while answers < 3:
            answers += 1
            try:
                if conn.read_response() == marker:
                    break
            except redis.ResponseError:
                continue
        if answers > 1:
            log.info("redis does not take CLIENT REPLY SKIP; dedup records are stored with a round trip")
        return answers == 1
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        conn.disconnect()
        return None  # unknown: ask again next time
    finally:
        pool.release(conn)
