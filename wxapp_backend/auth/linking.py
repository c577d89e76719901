"""One person, two openids: an Official Account follower joined to their mini-program login by unionid.

WeChat gives a person one openid in the Official Account and another in the mini-program; both answers carry
the same unionid when the two are bound to one open-platform account. A follower who writes to the Official
Account before ever opening the mini-program gets a row with the placeholder openid "oa:<oa_openid>"
(`pipeline.upsert_chat_user`), and its unionid is asked of `cgi-bin/user/info` by the job `link_oa_user`
queued when that row is made. Whichever side learns the unionid second joins the two:

- a mini-program login whose unionid belongs to a placeholder row, and who has no row of their own yet, takes
  the placeholder row over (its openid becomes the mini-program's; nothing moves);
- otherwise the placeholder row is merged into the mini-program row (`merge_users`): everything the follower
  did in the chat (appeals and their ratings, chat turns and feedback, inbox and notices) moves over, the
  placeholder row is deleted and one audit row says what moved.

So an enterprise that filed an appeal in the Official Account chat finds it in the mini-program's 我的诉求.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import delete, event, exists, func, select, text, update
from sqlalchemy.orm import Session

from ..audit import SYSTEM, Actor, audit
from ..db import Base, session_scope
from .models import User

log = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "oa:"
_UNIONID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Tables whose rows are unique per user and hold nothing the target's own copy lacks: on a collision the
# follower's copy is dropped. A collision anywhere else (an appeal with the same idempotency key, a future
# table) stops the merge instead of deleting business data.
DROPPABLE = frozenset({"category_subscriptions", "notice_outbox"})
# A follower row without a unionid is asked about again at most this often (when they write after it).
ASK_AGAIN_SECONDS = 24 * 3600
# The job merges only after the follower has been quiet this long (their row's last_message_at is refreshed at
# least every USER_CACHE_TTL while they write), so that no message of theirs is in flight with the old id;
# otherwise it tries again this much later, up to QUIET_TRIES times, then merges anyway.
QUIET_SECONDS = 120
QUIET_TRIES = 30


class LinkConflict(Exception):
    """Two rows of one person that cannot be merged without losing something; both are left as they are."""


def is_placeholder(user: User) -> bool:
    return (user.openid or "").startswith(PLACEHOLDER_PREFIX)


def never_logged_in(session: Session, user_id: int) -> bool:
    """Whether `user_id` is a follower's placeholder row: no mini-program login joined to it (yet), so nothing done
    in the mini-program (registrations, appeals filed there) is under it."""
    user = session.get(User, user_id)
    return user is not None and is_placeholder(user)


def valid_unionid(value: Any) -> str | None:
    """The unionid of a WeChat answer, or None when it has none (or something that is not one)."""
    return value if isinstance(value, str) and _UNIONID.fullmatch(value) else None


def placeholder_for(session: Session, unionid: str, *, lock: bool = False) -> User | None:
    """The Official-Account-only row of this person, if there is one."""
    query = select(User).where(User.unionid == unionid, User.openid.startswith(PLACEHOLDER_PREFIX, autoescape=True))
    query = query.order_by(User.id).limit(1)
    return session.scalar(query.with_for_update(of=User) if lock else query)


def _user_tables() -> list[tuple[Any, Any]]:
    """(table, column) of every column that references users.id, in dependency order."""
    out = []
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "users" and fk.column.name == "id":
                out.append((table, fk.parent))
    return out


def _unique_groups(table: Any, column: Any) -> list[list[Any]]:
    """For each unique constraint of `table` that includes `column`: its other columns."""
    from sqlalchemy import UniqueConstraint

    groups = []
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and column.name in constraint.columns:
            groups.append([c for c in constraint.columns if c.name != column.name])
    if column.name in table.primary_key.columns and len(table.primary_key.columns) > 1:
        groups.append([c for c in table.primary_key.columns if c.name != column.name])
    return groups


def lock_person(session: Session, unionid: str) -> None:
    """Serialise every link decision about one person for the rest of the transaction (PostgreSQL; the
    SQLite engine's writers are serialised by BEGIN IMMEDIATE already): a login and the link job that run
    at the same moment then see each other's rows instead of both missing them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"unionid:{unionid}"})


def _merge_registrations(session: Session, source: User, target: User) -> int:
    """Registrations carry the user in their keys ("activity:user" while active, "user:Idempotency-Key"):
    the keys are rewritten for the target, and two active registrations for one activity stop the merge."""
    from ..activities.models import Registration

    mine = session.scalars(select(Registration).where(Registration.user_id == source.id)).all()
    if not mine:
        return 0
    theirs = {r.activity_id for r in session.scalars(
        select(Registration).where(Registration.user_id == target.id, Registration.active_key.is_not(None)))}
    clash = sorted(r.activity_id for r in mine if r.active_key and r.activity_id in theirs)
    if clash:
        raise LinkConflict(f"both rows hold an active registration for activity {clash[0]}")
    for reg in mine:
        if reg.active_key:
            reg.active_key = f"{reg.activity_id}:{target.id}"
        if reg.idempotency_key:
            reg.idempotency_key = f"{target.id}:{reg.idempotency_key.split(':', 1)[1]}"
        reg.user_id = target.id
    session.flush()
    return len(mine)


def _merge_credits(session: Session, source: User, target: User) -> int:
    """Subscribe-message credits of one template are added up (the target's ban stays); returns how many
    of the follower's credit rows were added into the target's."""
    from ..notices.models import SubscribeCredit

    theirs = {c.template_id: c for c in session.scalars(
        select(SubscribeCredit).where(SubscribeCredit.user_id == target.id).with_for_update())}
    added = 0
    for credit in session.scalars(select(SubscribeCredit).where(SubscribeCredit.user_id == source.id)).all():
        other = theirs.get(credit.template_id)
        if other is not None:
            other.credits += credit.credits
            other.long_term = other.long_term or credit.long_term
            session.delete(credit)
            added += 1
    session.flush()
    return added


def _drop_twin_notices(session: Session, source: User, target: User) -> int:
    """A staff notice that reached both rows (one person, two users, before they were joined) stays in the
    inbox once, as its outbox row does: the follower's copy goes. Returns how many were dropped."""
    from ..notices.broadcast_models import OutboxRow
    from ..notices.models import InboxItem

    theirs = select(OutboxRow.notice_id).where(OutboxRow.user_id == target.id, OutboxRow.channel == "inbox")
    refs = [f"notice:{n}" for n in session.scalars(select(OutboxRow.notice_id).where(
        OutboxRow.user_id == source.id, OutboxRow.channel == "inbox", OutboxRow.notice_id.in_(theirs)))]
    if not refs:
        return 0
    return session.execute(delete(InboxItem).where(InboxItem.user_id == source.id, InboxItem.ref.in_(refs))
                           .execution_options(synchronize_session=False)).rowcount


def merge_users(session: Session, source: User, target: User, *, via: str, actor: Actor = SYSTEM) -> dict:
    """Move everything of the placeholder row `source` to `target` and delete `source`, in the caller's
    transaction. Rows unique per user (one subscription per category, one outbox row per notice) that the
    target already has are kept as the target's, and the source's copies are dropped (counted in the audit
    row). Raises LinkConflict, before changing anything, when the two cannot be merged."""
    if source.id == target.id:
        raise LinkConflict("a row cannot be merged into itself")
    if not is_placeholder(source):
        raise LinkConflict("only an Official-Account-only row is merged into another")
    if target.oa_openid and source.oa_openid and target.oa_openid != source.oa_openid:
        raise LinkConflict("the target already follows the Official Account under another openid")
    moved: dict[str, int] = {}
    dropped: dict[str, int] = {}
    if n := _merge_registrations(session, source, target):
        moved["registrations"] = n
    if n := _merge_credits(session, source, target):
        dropped["subscribe_credits"] = n  # added into the target's rows of the same template
    if n := _drop_twin_notices(session, source, target):
        dropped["inbox_items"] = n
    for table, column in _user_tables():
        for others in _unique_groups(table, column):
            twin = table.alias()
            clash = (column == source.id) & exists().where(
                twin.c[column.name] == target.id, *[twin.c[o.name] == table.c[o.name] for o in others])
            if table.name not in DROPPABLE:
                if session.scalar(select(func.count()).select_from(table).where(clash)):
                    raise LinkConflict(f"both rows hold the same unique {table.name} row")
                continue
            result = session.execute(delete(table).where(clash))
            if result.rowcount:
                dropped[table.name] = dropped.get(table.name, 0) + result.rowcount
        result = session.execute(update(table).where(column == source.id).values({column.name: target.id}))
        if result.rowcount:
            moved[table.name] = moved.get(table.name, 0) + result.rowcount
    oa_openid = source.oa_openid
    facts: dict[str, Any] = {"followed": source.followed, "blocked": source.blocked}
    source.oa_openid = None
    session.flush()
    target.oa_openid = oa_openid
    target.followed = source.followed
    target.blocked = target.blocked or source.blocked  # a block on either side stays
    target.unionid = target.unionid or source.unionid
    target.no_show_count = (target.no_show_count or 0) + (source.no_show_count or 0)
    if source.last_message_at and (not target.last_message_at or source.last_message_at > target.last_message_at):
        target.last_message_at = source.last_message_at
    if source.created_at and target.created_at and source.created_at < target.created_at:
        target.created_at = source.created_at
    for name in ("nickname", "phone"):
        if not getattr(target, name) and getattr(source, name):
            setattr(target, name, getattr(source, name))
    if target.building_id is None and source.building_id is not None:
        target.building_id = source.building_id
    if source.enterprise_id is not None and source.enterprise_id != target.enterprise_id:
        if target.enterprise_id is None:
            target.enterprise_id, target.binding_state, target.role = (
                source.enterprise_id, source.binding_state, source.role)
            target.pending_enterprise_id = target.pending_enterprise_id or source.pending_enterprise_id
            facts["enterprise_taken"] = source.enterprise_id
        else:  # the mini-program's own binding wins; staff can see what the chat row had
            facts["enterprise_not_taken"] = {"id": source.enterprise_id, "binding_state": source.binding_state}
    source_id = source.id
    session.delete(source)
    session.flush()
    audit(session, actor, "user.merged", target, from_user=source_id, via=via, moved=moved, dropped=dropped, **facts)
    _forget_cached_user_after_commit(session, oa_openid)
    if target.blocked:  # the block now covers both openids: the chat's Redis copy too (auth.blocking)
        from .blocking import identity_of, mirror_after_commit

        mirror_after_commit(session, [identity_of(target)], True)
    log.info("official account follower linked to mini-program user",
             extra={"user_id": target.id, "from_user": source_id, "via": via, "moved": moved})
    return {"moved": moved, "dropped": dropped}


def take_over(session: Session, placeholder: User, openid: str, *, actor: Actor) -> User:
    """A first mini-program login of a follower: their placeholder row becomes their row."""
    placeholder.openid = openid
    session.flush()
    audit(session, actor, "user.linked", placeholder, via="mini_program")
    if placeholder.blocked:  # their new mini-program openid is blocked as well (auth.blocking)
        from .blocking import identity_of, mirror_after_commit

        mirror_after_commit(session, [identity_of(placeholder)], True)
    log.info("official account follower logged into the mini-program", extra={"user_id": placeholder.id})
    return placeholder


def _forget_cached_user(oa_openid: str | None) -> None:
    """Drop the webhook's cached user id of this follower (it may name the deleted row)."""
    if not oa_openid:
        return
    from flask import current_app, has_app_context

    from ..wechat.pipeline import user_cache_key, user_known_key

    if has_app_context():
        current_app.extensions["wxapp"].redis.delete(user_cache_key("oa", oa_openid), user_known_key("oa", oa_openid))


def _forget_cached_user_after_commit(session: Session, oa_openid: str | None) -> None:
    _forget_cached_user(oa_openid)  # now, so that no push re-reads the old id from the cache meanwhile ...

    def forget(_session: Session) -> None:  # ... and after the commit, for a push that cached it meanwhile
        try:
            _forget_cached_user(oa_openid)
        except Exception:  # noqa: BLE001 - the merge is committed; a stale entry expires with USER_CACHE_TTL
            log.warning("could not drop a merged user's cache entry")

    event.listen(session, "after_commit", forget, once=True)


def link_after_login(session: Session, user: User | None, openid: str, unionid: str | None) -> User | None:
    """At a mini-program login: take over or merge the follower's placeholder row of the same unionid.
    Returns the row the login now belongs to (None: the caller creates it)."""
    if not unionid:
        return user
    placeholder = placeholder_for(session, unionid, lock=True)
    if placeholder is None or (user is not None and placeholder.id == user.id):
        return user
    if user is None:
        return take_over(session, placeholder, openid, actor=Actor("user", placeholder.id))
    if user.oa_openid is not None:
        log.warning("mini-program user already linked to another follower",
                     extra={"user_id": user.id, "placeholder": placeholder.id})
        return user
    try:
        with session.begin_nested():
            merge_users(session, placeholder, user, via="mini_program", actor=Actor("user", user.id))
    except LinkConflict as exc:
        _link_failed(session, user, placeholder, str(exc), via="mini_program")
    except Exception:  # noqa: BLE001 - the login itself must not fail because the two could not be joined
        log.exception("follower not linked", extra={"user_id": user.id, "placeholder": placeholder.id})
    return user


def _link_failed(session: Session, target: User, source: User, reason: str, *, via: str) -> None:
    """Two rows of one person stay apart: an audit row on each for staff, and a warning."""
    for row, other in ((target, source), (source, target)):
        audit(session, SYSTEM, "user.link_failed", row, other_user=other.id, reason=reason, via=via)
    log.warning("follower not linked: %s", reason, extra={"user_id": target.id, "placeholder": source.id})


def link_oa_user(user_id: int, tries: int = 0) -> str:
    """Job: learn a follower's unionid from cgi-bin/user/info and join their mini-program row, if any.
    Returns what happened (for logs and tests): gone, linked, not_following, no_unionid, waiting, later
    (they are chatting: tried again after QUIET_SECONDS), merged, conflict, refused."""
    from ..wechat.client import WeChatAPIError, get_api

    with session_scope() as s:
        user = s.get(User, user_id)
        if user is None or not user.oa_openid:
            return "gone"
        if not is_placeholder(user):
            return "linked"
        oa_openid, unionid = user.oa_openid, user.unionid
    if unionid is None:
        try:
            info = get_api("oa").user_info(oa_openid)
        except WeChatAPIError as exc:
            if exc.transient:
                raise  # the queue tries again later
            log.warning("user/info refused", extra={"user_id": user_id, "errcode": exc.errcode})
            return "refused"  # asked again when they write after ASK_AGAIN_SECONDS, or by link-followers
        # Someone who no longer follows still comes with their unionid (only the profile is left out).
        unionid = valid_unionid(info.get("unionid"))
        if unionid is None:
            # The accounts are not bound to one open-platform account (or, unfollowed, WeChat said nothing).
            return "no_unionid" if info.get("subscribe") else "not_following"
    with session_scope() as s:
        lock_person(s, unionid)
        user = s.get(User, user_id, with_for_update={"of": User})
        if user is None or not is_placeholder(user):
            return "gone" if user is None else "linked"
        user.unionid = user.unionid or unionid
        from .blocking import block_with_person

        block_with_person(s, unionid)  # one row blocked: both, while they stay apart (later, conflict)
        target = s.scalar(select(User).where(
            User.unionid == unionid, User.id != user.id,
            ~User.openid.startswith(PLACEHOLDER_PREFIX, autoescape=True)).order_by(User.id).limit(1).with_for_update(of=User))
        if target is None:
            return "waiting"  # their first mini-program login takes this row over
        if target.oa_openid is not None:
            _link_failed(s, target, user, "the mini-program user already follows under another openid",
                         via="official_account")
            return "conflict"
        if tries < QUIET_TRIES and _chatting(user):
            from ..queue import enqueue_after_commit

            enqueue_after_commit(s, "wxapp_backend.auth.linking.link_oa_user", user_id, tries + 1,
                                 delay=QUIET_SECONDS, retries=3)
            return "later"  # the unionid is kept now: a login meanwhile takes the same decision
        try:
            with s.begin_nested():
                merge_users(s, user, target, via="official_account")
        except LinkConflict as exc:
            _link_failed(s, target, user, str(exc), via="official_account")
            return "conflict"
    return "merged"


def _chatting(user: User) -> bool:
    from ..db import utcnow

    last = user.last_message_at
    if last is None:
        return False
    if last.tzinfo is None:  # SQLite gives naive UTC
        last = last.replace(tzinfo=UTC)
    return utcnow() - last < timedelta(seconds=QUIET_SECONDS)


def queue_link(session: Session, user: User, *, created: bool, followed: bool | None) -> bool:
    """After the webhook read a follower's row (a new one, a follow, or a cache miss): queue link_oa_user for
    when the transaction commits, if the row still has no unionid and the Official Account's API is
    configured. A row that is neither new nor just followed is asked about at most every ASK_AGAIN_SECONDS
    (rows from before linking existed, or whose last answer was a refusal)."""
    if not is_placeholder(user) or user.unionid is not None:
        return False
    from flask import current_app, has_app_context

    if not has_app_context():
        return False
    state = current_app.extensions["wxapp"]
    if not (state.settings.wechat_appid and state.settings.wechat_secret):
        return False
    key = f"wxapp:link_asked:{user.id}"
    if created or followed is True:
        state.redis.set(key, 1, ex=ASK_AGAIN_SECONDS)
    elif not state.redis.set(key, 1, nx=True, ex=ASK_AGAIN_SECONDS):
        return False
    from ..queue import enqueue_after_commit

    enqueue_after_commit(session, "wxapp_backend.auth.linking.link_oa_user", user.id, retries=3)
    return True


def queue_all_unlinked(session: Session, batch: int = 500) -> int:
    """Queue link_oa_user for every follower row without a unionid (`flask link-followers`: rows from before
    linking existed, or after the accounts were bound to an open-platform account). Returns how many."""
    from ..queue import enqueue

    last, queued = 0, 0
    while True:
        ids = session.scalars(select(User.id).where(
            User.id > last, User.unionid.is_(None), User.oa_openid.is_not(None),
            User.openid.startswith(PLACEHOLDER_PREFIX, autoescape=True)).order_by(User.id).limit(batch)).all()
        if not ids:
            return queued
        for uid in ids:
            enqueue("wxapp_backend.auth.linking.link_oa_user", uid, retries=3)
        queued += len(ids)
        last = ids[-1]
