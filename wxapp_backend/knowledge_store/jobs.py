"""Jobs of the knowledge base: the chat turns the bot answered while the database was away, and the questions whose
“您是不是想问” choices were turned down meanwhile, logged once it is back."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from ..db import session_scope
from .models import ChatTurn
from .services import clip_question, log_turn, mask_personal, queue_unanswered, unanswered_counted_at

log = logging.getLogger(__name__)

# Tried again after 5 s, 30 s, 2 min and 10 min (wxapp_backend.queue.enqueue): a restart of PostgreSQL is over by then.
RETRIES = 4


def log_turn_later(turn: dict) -> int:
    """Log a chat turn answered while the database was away (`knowledge_store.bot.log_turn_or_defer`), at the time it
    was asked: the answer rates and staff's unanswered queue count it. Safe to run twice: the turn already logged
    (same channel, user, question and time) is not logged again."""
    from ..auth.models import User

    at = datetime.fromisoformat(turn["at"])
    fields = {k: v for k, v in turn.items() if k != "at"}
    kept = clip_question(mask_personal(fields["question"]))
    with session_scope() as s:
        if fields.get("user_id") is not None and s.get(User, fields["user_id"]) is None:
            fields["user_id"] = None  # the account is gone meanwhile (merged, removed): the turn is still counted
        who = ChatTurn.user_id.is_(None) if fields.get("user_id") is None else ChatTurn.user_id == fields["user_id"]
        done = s.scalar(select(ChatTurn.id).where(ChatTurn.channel == fields["channel"], who,
                                                  ChatTurn.question == kept, ChatTurn.created_at == at).limit(1))
        if done is not None:
            return done
        return log_turn(s, at=at, **fields).id


def queue_unanswered_later(channel: str, question: str, at: str) -> bool:
    """Count a question in staff's unanswered queue whose choices were turned down (“都不是”) while the database was
    away (`knowledge_store.bot._queue_once`), at the time it was said. Safe to run twice: a row last counted at
    exactly that time is this job's own count."""
    when = datetime.fromisoformat(at)
    with session_scope() as s:
        if unanswered_counted_at(s, question, when):
            return True
        return queue_unanswered(s, channel=channel, question=question, at=when)
