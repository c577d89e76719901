"""One-time form tokens for the console's create forms: a form sent twice makes one record.

A double-click on 保存草稿 (console.js guards it, but not with scripts off or a slow answer the browser resends)
made two drafts, one easily published by a colleague after the other. Each create form carries a random
`form_once`; the first post claims it in Redis, and once saved it names the record made, so the second post of
the same form is led to that record. A post refused for a mistake releases it: corrected, the same form saves.
A post without the field (an old page left open) is saved as before.
"""

from __future__ import annotations

import re
import secrets
import time

from flask import current_app, request

FIELD = "form_once"
ONCE_TTL = 3600  # a resend comes within seconds; an hour covers a page left open and sent again by the back button
_PENDING = "pending"
_VALID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def token() -> str:
    """For the form: the token of the form sent back (refused, shown again), else a new one."""
    sent = request.form.get(FIELD, "") if request.method == "POST" else ""
    return sent if _VALID.fullmatch(sent) else secrets.token_urlsafe(16)


def _key(staff_id: int, sent: str) -> str:
    return f"console:once:{staff_id}:{sent}"


def claim(staff_id: int) -> str | None:
    """Claim this post's token. None: go on and save (first post, or none sent); else the id saved by the first
    post of the same form, or "" when that one is still being saved (or failed in a way that kept its claim)."""
    sent = request.form.get(FIELD, "")
    if not _VALID.fullmatch(sent):
        return None
    r = current_app.extensions["wxapp"].redis
    if r.set(_key(staff_id, sent), _PENDING, nx=True, ex=ONCE_TTL):
        return None
    for _ in range(20):  # the double-click's first post is usually a moment ahead: wait for its answer
        value = r.get(_key(staff_id, sent))
        value = value.decode() if isinstance(value, bytes) else value
        if value is None and r.set(_key(staff_id, sent), _PENDING, nx=True, ex=ONCE_TTL):
            return None  # the first post was refused (and released its claim): this one tries again
        if value is not None and value != _PENDING:
            return value
        time.sleep(0.1)
    return ""


def saved(staff_id: int, record_id: int) -> None:
    sent = request.form.get(FIELD, "")
    if _VALID.fullmatch(sent):
        current_app.extensions["wxapp"].redis.set(_key(staff_id, sent), str(record_id), ex=ONCE_TTL)


def release(staff_id: int) -> None:
    """The post was refused: the corrected form may be sent again with the same token."""
    sent = request.form.get(FIELD, "")
    if _VALID.fullmatch(sent):
        current_app.extensions["wxapp"].redis.delete(_key(staff_id, sent))
