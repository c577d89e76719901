"""Blocking a user who abuses the accounts (spam, insults, a bot flooding the chat), and lifting the block.

`User.blocked` is the truth: the chat answers a blocked writer with silence (handlers.middleware), broadcasts skip
them, registration and the mini-program's writes refuse them (`refuse_if_blocked`); what they filed before stays,
and staff still see it. The webhook reads the flag through its Redis user cache (`pipeline.touch_user`), so after the
commit the person's cache entries are dropped, their user_known entries rewritten and `pipeline.BLOCKED_KEY` set or
cleared: the block holds from the next message, not a minute later, and with the database away too.

A person is every row with their unionid: a follower's Official Account row not yet merged into their mini-program
row is blocked (and unblocked) with it, or the sender would carry on from the other account.
"""

from __future__ import annotations

import logging
import time

import redis
from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session

from ..audit import SYSTEM, Actor, audit
from ..errors import Conflict, Forbidden, NotFound
from ..validation import Field
from .models import User

log = logging.getLogger(__name__)

BLOCK_FIELDS = (Field("reason", "str", "屏蔽原因", required=True, min_len=2, max_len=200),)
UNBLOCK_FIELDS = (Field("reason", "str", "解除屏蔽的原因", required=True, min_len=2, max_len=200),)
# What a blocked user reads where the mini-program must answer something (the chat in WeChat stays silent). Polite,
# and it names no mechanism: the centre's phone line is where it is explained.
BLOCKED_MESSAGE = "抱歉，您的账号目前无法进行这项操作。如有疑问，请联系营商服务中心。"
BLOCKED_CODE = "account_restricted"
_PLACEHOLDER = "oa:"  # linking.PLACEHOLDER_PREFIX (not imported: linking imports the pipeline's keys lazily too)


def set_blocked(session: Session, actor: Actor, user_id: int, *, blocked: bool, reason: str) -> User:
    """Block (or unblock) the user and the other rows of the same person; an audit row `user.blocked` /
    `user.unblocked` with the reason on each. 409 when the user is already in that state (a colleague was first, or
    a second click): the page was stale. The Redis copies follow after the commit."""
    # The person's rows locked together, in id order, as block_with_person does: two colleagues blocking two rows
    # of one person at once (or a block beside the link job) each locking theirs first waited for each other.
    unionid = session.scalar(select(User.unionid).where(User.id == user_id))
    person = User.id == user_id if not unionid else or_(User.id == user_id, User.unionid == unionid)
    locked = list(session.scalars(select(User).where(person).order_by(User.id).with_for_update(of=User)
                                  .execution_options(populate_existing=True)))
    user = next((row for row in locked if row.id == user_id), None)
    if user is None:
        raise NotFound("没有找到这个用户。")
    if bool(user.blocked) == blocked:
        raise Conflict("这位用户已经被屏蔽了（可能同事刚刚处理过），请刷新页面查看最新状态。" if blocked else
                       "这位用户现在没有被屏蔽（可能同事刚刚解除了），请刷新页面查看最新状态。",
                       code="already_blocked" if blocked else "not_blocked")
    rows = [user] + [row for row in locked if row is not user and row.unionid and row.unionid == user.unionid
                     and bool(row.blocked) != blocked]
    action = "user.blocked" if blocked else "user.unblocked"
    for row in rows:
        row.blocked = blocked
        extra = {"same_person_as": user.id} if row is not user else {}
        audit(session, actor, action, row, reason=reason, **extra)
    session.flush()
    mirror_after_commit(session, [identity_of(row) for row in rows], blocked)
    return user


# The audit reason of a block a row took from another row of the same person (inherit_block).
SAME_PERSON_REASON = "同一人的另一个账号已被屏蔽，这个账号一并屏蔽"


def block_with_person(session: Session, unionid: str) -> list[User]:
    """When one row with this unionid is blocked, block the others too (an audit row `user.blocked` by the system,
    with `same_person_as`, on each; the Redis copies after the commit). For a row that has just learned its unionid
    (`linking.link_oa_user`): set_blocked covered the rows that carried it at the time, and two rows the link job
    does not merge yet (the follower is still writing, or the rows conflict) stayed apart, one of them answered.
    Returns the rows it blocked."""
    rows = list(session.scalars(select(User).where(User.unionid == unionid).order_by(User.id)
                                .with_for_update(of=User).execution_options(populate_existing=True)))
    blocked = next((row for row in rows if row.blocked), None)
    if blocked is None:
        return []
    newly = [row for row in rows if not row.blocked]
    for row in newly:
        row.blocked = True
        audit(session, SYSTEM, "user.blocked", row, reason=SAME_PERSON_REASON, same_person_as=blocked.id)
    if newly:
        session.flush()
        mirror_after_commit(session, [identity_of(row) for row in newly], True)
        log.info("rows blocked with their person", extra={"user_ids": [row.id for row in newly],
                                                           "same_person_as": blocked.id})
    return newly


def identity_of(user: User) -> tuple[int, list[tuple[str, str]]]:
    """(user id, [(account, openid)]) as the webhook keys them: the Official Account openid, the mini-program one
    (not a follower's placeholder "oa:<openid>", which no push carries)."""
    openids = []
    if user.oa_openid:
        openids.append(("oa", user.oa_openid))
    if user.openid and not user.openid.startswith(_PLACEHOLDER):
        openids.append(("wxa", user.openid))
    return user.id, openids


def mirror_after_commit(session: Session, people: list[tuple[int, list[tuple[str, str]]]], blocked: bool) -> None:
    def mirror(_session: Session) -> None:
        try:
            mirror_in_redis(people, blocked)
        except Exception:  # noqa: BLE001 - committed: the chat's cache catches up within USER_CACHE_TTL
            log.warning("block not mirrored in Redis", exc_info=True, extra={"blocked": blocked})

    event.listen(session, "after_commit", mirror, once=True)


def mirror_in_redis(people: list[tuple[int, list[tuple[str, str]]]], blocked: bool) -> None:
    """BLOCKED_KEY's fields set (or removed) first, then the short cache dropped and user_known rewritten: a message
    whose database read came before the commit finds the field when it writes its cache (pipeline._REMEMBER_USER)."""
    from flask import current_app

    from ..wechat.pipeline import BLOCKED_KEY, USER_KNOWN_TTL, blocked_field, user_cache_key, user_known_key

    r = current_app.extensions["wxapp"].redis
    fields = [blocked_field("user", str(uid)) for uid, _ in people]
    fields += [blocked_field(account, openid) for _, openids in people for account, openid in openids]
    pipe = r.pipeline(transaction=False)
    if blocked:
        pipe.hset(BLOCKED_KEY, mapping=dict.fromkeys(fields, int(time.time() * 1000)))
    else:
        pipe.hdel(BLOCKED_KEY, *fields)
    for uid, openids in people:
        for account, openid in openids:
            pipe.delete(user_cache_key(account, openid))
            pipe.set(user_known_key(account, openid), f"{uid}:{int(blocked)}", ex=USER_KNOWN_TTL)
    pipe.execute()


def is_blocked(user_id: int) -> bool:
    """Whether staff have blocked this mini-program user: the database; with it away, the Redis copy."""
    from flask import current_app

    from ..db import DB_AWAY, session_scope
    from ..wechat.pipeline import BLOCKED_KEY, blocked_field

    try:
        with session_scope() as s:
            return bool(s.scalar(select(User.blocked).where(User.id == user_id)))
    except DB_AWAY:
        try:
            return bool(current_app.extensions["wxapp"].redis.hexists(BLOCKED_KEY, blocked_field("user", str(user_id))))
        except redis.RedisError:
            return False  # both away: what needs either fails on its own


def refuse_if_blocked(user_id: int | None) -> None:
    """403 account_restricted for a blocked user's write (a new appeal, a supplement, a rating, a chat message ...).
    Call it outside any session_scope() (it opens one)."""
    if user_id is not None and is_blocked(user_id):
        raise Forbidden(BLOCKED_MESSAGE, code=BLOCKED_CODE)
