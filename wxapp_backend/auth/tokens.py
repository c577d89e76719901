"""Opaque bearer tokens kept in Redis with a TTL; only their hash is stored."""

from __future__ import annotations

import hashlib
import secrets

import redis


def _key(kind: str, token: str) -> str:
    return f"tok:{kind}:" + hashlib.sha256(token.encode()).hexdigest()


# Staff API tokens and console logins are indexed by account (revoke_subject); mini-program users' are not: they
# are never revoked wholesale, and an index renewed at every login would only grow.
INDEXED_KINDS = frozenset({"staff", "console"})


def _subject_key(kind: str, subject_id: int) -> str:
    return f"tok:subject:{kind}:{subject_id}"


def issue(r: redis.Redis, kind: str, subject_id: int, ttl: int, stamp: str = "") -> str:
    """A new token for `subject_id`; `stamp` (no ":") is kept with it for resolve_stamped."""
    token = secrets.token_urlsafe(32)
    key = _key(kind, token)
    value = f"{subject_id}:{stamp}" if stamp else str(subject_id)
    if kind not in INDEXED_KINDS:
        r.set(key, value, ex=ttl)
        return token
    pipe = r.pipeline(transaction=False)
    pipe.set(key, value, ex=ttl)
    # The subject's tokens, so that revoke_subject can end them all; the set outlives each token in it
    # (a kind's tokens share one ttl), and a member whose token has expired is harmless.
    pipe.sadd(_subject_key(kind, subject_id), key)
    pipe.expire(_subject_key(kind, subject_id), ttl)
    pipe.execute()
    return token


def resolve_stamped(r: redis.Redis, kind: str, token: str) -> tuple[int, str] | None:
    """(subject id, stamp given at issue or "") of a live token, else None."""
    if not token or len(token) > 200:
        return None
    raw = r.get(_key(kind, token))
    if raw is None:
        return None
    subject, _, stamp = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
    return int(subject), stamp


def resolve(r: redis.Redis, kind: str, token: str) -> int | None:
    found = resolve_stamped(r, kind, token)
    return found[0] if found is not None else None


def revoke(r: redis.Redis, kind: str, token: str) -> None:
    r.delete(_key(kind, token))


def revoke_subject(r: redis.Redis, kind: str, subject_id: int) -> int:
    """End every token of `kind` issued to `subject_id`; returns how many were live."""
    index = _subject_key(kind, subject_id)
    keys = list(r.smembers(index))
    if not keys:
        return 0
    pipe = r.pipeline(transaction=False)
    pipe.delete(*keys)
    pipe.srem(index, *keys)  # not DEL: a token issued meanwhile keeps its place in the index
    return int(pipe.execute()[0])
