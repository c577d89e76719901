"""Per-user conversation state: a small JSON dict per (account, openid) in Redis with a TTL.

`update(fn)` is the safe way to change it: optimistic WATCH/MULTI, retried when another message from the
same user changed the state in between, so concurrent messages never lose each other's updates.

That keeps a single write whole, not a flow step: a handler decides from the state it read (“the rating is at
its comment”, “no draft is open”) and acts on the database and the state later. Two messages of one user sent
at the same moment both decided from the same old state (“跳过” rated the appeal while the comment sent with it
was being saved, which then failed; “菜单” answered as if no draft were open while “我要反映” opened one). So a
message goes through the rules and its handler holding the user's `step_lock` (handlers/middleware.py), and
reads the state again under it: the messages of one user take their turns, each on the state the one before
left. Other users are not held up.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

DEFAULT_TTL = 30 * 60  # a conversation is forgotten after half an hour of silence
MAX_BYTES = 16 * 1024  # "small": a state that grows past this is a bug in a handler
_RETRIES = 50
# A message's step normally holds its user's lock for milliseconds. The lock expires by itself after LOCK_TTL (a
# process that died holding it, a database that hangs); a message waits at most LOCK_WAIT for it, then goes on
# without it (past the webhook's deadline its answer goes by customer-service message anyway).
LOCK_TTL = 15
LOCK_WAIT = 10.0
_LOCK_POLL = 0.02

log = logging.getLogger("handlers")


class StateConflict(RuntimeError):
    """update() kept losing the race; practically only under a pathological burst."""


def state_key(account: str, openid: str) -> str:
    return f"wx:conv:{account}:{openid}"


def lock_key(account: str, openid: str) -> str:
    return f"wx:convlock:{account}:{openid}"


def _load(raw: bytes | str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _dump(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise ValueError(f"conversation state is larger than {MAX_BYTES} bytes")
    return text


def get(r: redis.Redis, account: str, openid: str) -> dict[str, Any]:
    """The user's state ({} when none)."""
    return _load(r.get(state_key(account, openid)))


def set(r: redis.Redis, account: str, openid: str, data: dict[str, Any], ttl: int = DEFAULT_TTL) -> None:  # noqa: A001
    """Replace the state (last writer wins: prefer update() when the new state depends on the old)."""
    r.set(state_key(account, openid), _dump(data), ex=ttl)


def clear(r: redis.Redis, account: str, openid: str) -> None:
    r.delete(state_key(account, openid))


def update(r: redis.Redis, account: str, openid: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None],
           ttl: int = DEFAULT_TTL) -> dict[str, Any]:
    """Apply fn(old) -> new atomically; fn may mutate and return None. Returns the new state.

    fn may run more than once (on conflict), so it must not have side effects beyond the dict.
    An empty result deletes the key.
    """
    key = state_key(account, openid)
    with r.pipeline() as pipe:
        for _ in range(_RETRIES):
            try:
                pipe.watch(key)
                current = _load(pipe.get(key))
                result = fn(current)
                new = current if result is None else result
                pipe.multi()
                if new:
                    pipe.set(key, _dump(new), ex=ttl)
                else:
                    pipe.delete(key)
                pipe.execute()
                return new
            except redis.WatchError:
                continue
    raise StateConflict(key)


_NO_SNAPSHOT = object()
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_held = threading.local()  # the lock keys this thread holds (a nested dispatch must not wait for itself)


@contextmanager
def step_lock(r: redis.Redis, account: str, openid: str, ttl: int = LOCK_TTL,
              wait: float = LOCK_WAIT) -> Iterator[Any]:
    """Hold the user's conversation for one message's step; yields the raw state read under the lock (taking the
    lock and reading are one round trip), or `_NO_SNAPSHOT` when nothing was read (held already by this thread,
    Redis unreachable: the handlers read for themselves and say so)."""
    key = lock_key(account, openid)
    held: list[str] = _held.__dict__.setdefault("keys", [])  # (this module's `set` is the state's)
    if key in held:
        yield _NO_SNAPSHOT
        return
    token = secrets.token_hex(8)
    give_up = time.monotonic() + wait
    raw: Any = _NO_SNAPSHOT
    locked = False
    try:
        while True:
            pipe = r.pipeline(transaction=False)
            pipe.set(key, token, nx=True, ex=ttl)
            pipe.get(state_key(account, openid))
            locked, raw = pipe.execute()
            if locked or time.monotonic() >= give_up:
                break
            time.sleep(_LOCK_POLL)
        if not locked:
            log.warning("conversation lock not taken in time", extra={"account": account})
    except redis.RedisError:
        raw = _NO_SNAPSHOT
    if not locked:
        yield raw
        return
    held.append(key)
    try:
        yield raw
    finally:
        held.remove(key)
        try:
            r.eval(_UNLOCK, 1, key, token)
        except redis.RedisError:  # it expires by itself
            pass


class ConversationState:
    """The state of one user, bound to a Redis client: ctx.state in handlers.

    `snapshot` is the raw value already read for this message (the webhook reads it in its first Redis
    round trip): `get()` answers from it until this object changes the state, then reads Redis again.
    """

    def __init__(self, r: redis.Redis, account: str, openid: str, ttl: int = DEFAULT_TTL,
                 snapshot: Any = _NO_SNAPSHOT) -> None:
        self.redis, self.account, self.openid, self.ttl = r, account, openid, ttl
        self._snapshot = snapshot

    def get(self) -> dict[str, Any]:
        if self._snapshot is not _NO_SNAPSHOT:
            return _load(self._snapshot)  # a fresh dict every time, like a read
        return get(self.redis, self.account, self.openid)

    def set(self, data: dict[str, Any]) -> None:  # noqa: A003
        self._snapshot = _NO_SNAPSHOT
        set(self.redis, self.account, self.openid, data, self.ttl)

    def clear(self) -> None:
        self._snapshot = _NO_SNAPSHOT
        clear(self.redis, self.account, self.openid)

    def update(self, fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        self._snapshot = _NO_SNAPSHOT
        return update(self.redis, self.account, self.openid, fn, self.ttl)

    def merge(self, **values: Any) -> dict[str, Any]:
        """Set some keys atomically (None deletes a key)."""

        def apply(d: dict[str, Any]) -> dict[str, Any]:
            for k, v in values.items():
                if v is None:
                    d.pop(k, None)
                else:
                    d[k] = v
            return d

        return self.update(apply)
