"""What a staff member typed into a console form that was sent after their login ran out, kept for them.

The form comes back filled on the page they were on once they log in again (console.js fills it; nothing is
sent on their behalf). Only their own next login gets it: a colleague logging in on the same browser does not.
Passwords and tokens are never kept, nor uploaded files. The text waits in Redis (a long answer does not fit
in a cookie), named by a random key in the signed session cookie, for DRAFT_TTL seconds.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import current_app, request, session

from .once import FIELD as ONCE_FIELD

DRAFT_TTL = 2 * 3600
# Fields never kept, whatever the form: the page's own token and anything that may be a secret.
_SECRET_WORDS = ("password", "secret", "token", "aes_key")
_MAX_CHARS = 200_000
_BOOKKEEPING = frozenset({"action", "version", "revision", "from_unanswered"})


def _key(name: str) -> str:
    return f"console:draft:{name}"


def _kept(name: str) -> bool:
    lowered = name.lower()
    # Nor the create forms' one-time token (console/once.py): the page shown after the login has a fresh one, and a
    # kept old one made the form look like another (its hidden fields disagreed), so nothing was filled back.
    return name not in ("next", ONCE_FIELD) and not any(word in lowered for word in _SECRET_WORDS)  # csrf_token too


def keep(staff_id: int | None, page: str) -> None:
    """Keep the fields of this POST for `staff_id`'s next login, to be filled into the form on `page`."""
    if staff_id is None:
        return  # a browser that never told us who it was: nobody to give the text back to
    # Blank boxes too: a field the staff member emptied on an edit page comes back empty, not with the old text.
    fields = [[k, v] for k, v in request.form.items(multi=True) if _kept(k)]
    typed = [v for k, v in fields if v.strip() and k != "csrf_token"]
    if not typed or sum(len(v) for _k, v in fields) > _MAX_CHARS:
        return
    name = secrets.token_urlsafe(16)
    draft = {"staff": staff_id, "page": page.split("?", 1)[0], "action": request.path, "fields": fields}
    current_app.extensions["wxapp"].redis.set(_key(name), json.dumps(draft, ensure_ascii=False), ex=DRAFT_TTL)
    session["draft"] = name


def carry_over(old: str | None, staff_id: int) -> None:
    """At login: hand the kept form on to the new session when it is the same person's, else drop it."""
    if not old:
        return
    r = current_app.extensions["wxapp"].redis
    raw = r.get(_key(old))
    if raw is not None and json.loads(raw).get("staff") == staff_id:
        session["draft"] = old
    else:
        r.delete(_key(old))


def take() -> dict[str, Any] | None:
    """The kept form for the page now shown (once), or None. The first page after the login uses it or drops it."""
    name = session.pop("draft", None)
    if not name:
        return None
    pipe = current_app.extensions["wxapp"].redis.pipeline()
    pipe.get(_key(name))
    pipe.delete(_key(name))
    raw = pipe.execute()[0]
    if raw is None:
        return None
    draft = json.loads(raw)
    if draft.get("page") != request.path:
        return None
    # For the note to copy from: what was typed, without the forms' bookkeeping (which action, which version); with
    # its field's name, for console.js to show a menu's or a box's choice as the page words it, not as its code.
    draft["typed"] = [[k, v] for k, v in draft["fields"] if v.strip() and k not in _BOOKKEEPING]
    return draft
