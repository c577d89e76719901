"""Opaque bearer tokens kept in Redis with a TTL; only their hash is stored."""

from __future__ import annotations

import hashlib
import secrets

import redis


def _key(kind: str, token: str) -> str:
    return f"tok:{kind}:" + hashlib.sha256(token.encode()).hexdigest()


def issue(r: redis.Redis, kind: str, subject_id: int, ttl: int) -> str:
    token = secrets.token_urlsafe(32)
    r.set(_key(kind, token), str(subject_id), ex=ttl)
    return token


def resolve(r: redis.Redis, kind: str, token: str) -> int | None:
    if not token or len(token) > 200:
        return None
    raw = r.get(_key(kind, token))
    return int(raw) if raw is not None else None


def revoke(r: redis.Redis, kind: str, token: str) -> None:
    r.delete(_key(kind, token))
