"""Dedup of WeChat pushes and their retries: processing -> done records in Redis, one round trip to claim.

A push is claimed with SET NX and a short TTL (so a crashed try cannot poison the key); the try that
answers stores the exact response body as `done` for at least a minute, and every retry gets that body
byte for byte. A retry that arrives while the first try still runs waits briefly for the stored answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from .crypto import random_bytes

_PROCESSING = b"P"
_DONE = b"D"

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


@dataclass(frozen=True)
class Claim:
    """The result of claiming a key: "new" (ours to process), "done" (body is the answer) or "processing"."""

    state: str
    key: str
    token: bytes = b""
    body: bytes | None = None


class Dedup:
    """Redis-backed dedup records shared by every worker process."""

    def __init__(self, r: redis.Redis, processing_ttl: float, done_ttl: float = 300.0) -> None:
        self.redis = r
        self.processing_ms = max(1000, int(processing_ttl * 1000))
        self.done_ms = max(60_000, int(done_ttl * 1000))  # WeChat retries for ~15 s; keep it >= 60 s
        self._finish = r.register_script(_FINISH)
        self._release = r.register_script(_RELEASE)

    def claim(self, key: str, extra: Callable[[redis.client.Pipeline], None] | None = None
              ) -> tuple[Claim, list]:
        """Claim `key` for processing, or learn its stored answer; one round trip.

        `extra` may add commands to the same round trip (the webhook's per-user reads); their results
        are returned beside the claim.
        """
        extra_results: list = []
        for _ in range(3):
            token = _PROCESSING + random_bytes(8).hex().encode()
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(key, token, nx=True, px=self.processing_ms)
            pipe.get(key)
            if extra is not None:
                extra(pipe)
                extra = None
            created, value, *more = pipe.execute()
            extra_results = extra_results or more
            if created:
                return Claim("new", key, token), extra_results
            found = self._parse(key, value)
            if found is not None:
                return found, extra_results
            # The record vanished between SET and GET (released or expired): try again.
        return Claim("processing", key), extra_results

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

    def release(self, claim: Claim) -> None:
        """Forget a claim whose processing failed, so WeChat's retry runs the handler again."""
        self._release(keys=[claim.key], args=[claim.token])

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
