"""Per-user conversation state: a small JSON dict per (account, openid) in Redis with a TTL.

`update(fn)` is the safe way to change it: optimistic WATCH/MULTI, retried when another message from the
same user changed the state in between, so concurrent messages never lose each other's updates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

DEFAULT_TTL = 30 * 60  # a conversation is forgotten after half an hour of silence
MAX_BYTES = 16 * 1024  # "small": a state that grows past this is a bug in a handler
_RETRIES = 50


class StateConflict(RuntimeError):
    """update() kept losing the race; practically only under a pathological burst."""


def state_key(account: str, openid: str) -> str:
    return f"wx:conv:{account}:{openid}"


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
