"""Knowledge-base services: the database is the source of truth; every process rebuilds its index on change."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
from sqlalchemy import case, event, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from knowledge.analysis import get_analyzer
from knowledge.loaders import read_list
from knowledge.schema import FIELD_LABELS, POLICY_FIELDS, Entry, entry_issues
from knowledge.search import KnowledgeBase

from ..audit import Actor, audit
from ..db import Database, utcnow
from ..errors import Conflict, NotFound, Unauthorized, ValidationError
from . import snapshot
from .chat import ask
from .models import AnswerFeedback, ChatTurn, KBEntry, UnansweredQuestion

log = logging.getLogger(__name__)

VERSION_KEY = "kb:version"
CHOICE = "choice"  # a chat turn that picked one of the offered choices by its number
REJECTED = "rejected"  # a chat turn that turned the offered choices down (“都不是”): its question is the one asked
SHANGHAI = ZoneInfo("Asia/Shanghai")
_CHANGED = "wxapp_kb_changed"


def today_shanghai() -> date:
    return datetime.now(SHANGHAI).date()


# --- rows <-> entries --------------------------------------------------------------------------------

def entry_from_row(row: KBEntry) -> Entry:
    return Entry(
        id=row.id, question=row.question, answer=row.answer, similar=tuple(row.similar or ()),
        category=row.category or "", tags=tuple(row.tags or ()),
        **{f: getattr(row, f) for f in POLICY_FIELDS}, retired=bool(row.retired),
    )


def _row_values(entry: Entry) -> dict:
    values = {f.name: getattr(entry, f.name) for f in dataclasses.fields(Entry)}
    values["similar"] = list(entry.similar)
    values["tags"] = list(entry.tags)
    return values


def _stored(row: KBEntry, name: str):
    """A row's field as a file import reads it: a phrasing (or tag) stored with line breaks, from before imports
    split them, is the ones it reads as. An import, or a save, that only reads it so is no change (an export and
    re-import counted such an entry 更新); the row keeps it until a real change writes the list as read."""
    value = getattr(row, name)
    return list(read_list(name, value or ())) if name in ("similar", "tags") else value


def _changed(session: Session, r: redis.Redis) -> None:
    """Bump the version in Redis once the transaction commits, so every process reloads."""
    session.info[_CHANGED] = r


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session: Session) -> None:
    r = session.info.pop(_CHANGED, None)
    if r is not None:
        try:
            # A fresh random value rather than a counter: after Redis loses its data a counter starts again at
            # 1, 2, ... and a process that saw the same number before would keep its old index.
            r.set(VERSION_KEY, secrets.token_hex(8))
        except redis.RedisError as exc:  # processes also reload on their periodic look at the table (KBRuntime)
            # One line: the change is committed, and init-db or an import with Redis down is not a crash.
            log.warning("could not bump the knowledge-base version (%s: %s); other processes reload it on their "
                        "periodic look at the table", type(exc).__name__, exc)


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_CHANGED, None)


# --- editing -----------------------------------------------------------------------------------------

@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    kept_retired: int = 0

    def summary(self) -> str:
        return (f"新增 {self.created} 条，更新 {self.updated} 条，未变 {self.unchanged} 条"
                + (f"，下线 {self.retired} 条" if self.retired else "")
                + (f"；其中 {self.kept_retired} 条已下线的条目保持下线（如需恢复，请在控制台知识库中点“恢复”）"
                   if self.kept_retired else ""))


IMPORT_LOCKS = True  # an import holds the rows it read (tests switch it off for the negative control)


def import_entries(session: Session, r: redis.Redis, actor: Actor, entries: Iterable[Entry], *,
                   replace: bool = False, source: str = "", columns: Collection[str] | None = None) -> ImportReport:
    """Upsert entries by id; with replace, entries missing from the import are retired (never deleted). An import
    never restores a retired entry (the console's 恢复 does). `columns`, a table's fields: the others of an
    existing entry are left as they are. `source` (the file imported) goes on the audit row."""
    entries = list(entries)
    report = ImportReport()
    # Locked until the import commits (PostgreSQL): a console save made meanwhile was written over by the
    # import's stale copy, both ending on the same revision; now it waits and, its revision being old, is refused.
    query = select(KBEntry).order_by(KBEntry.id)
    existing = {row.id: row for row in session.scalars(query.with_for_update() if IMPORT_LOCKS else query)}
    _refuse_zeros_dropped(existing, entries)
    for entry in entries:
        values = _row_values(entry)
        row = existing.get(entry.id)
        if row is None:
            row = KBEntry(**values)
            session.add(row)
            report.created += 1
            audit(session, actor, "kb.entry_created", row, via="import", question=entry.question)
            continue
        if columns is not None:  # a sheet of id, question, answer emptied the phrasings and 截止日期
            values.update({k: _stored(row, k) for k in values if k not in columns and k not in ("id", "retired")})
        if row.retired and not entry.retired:
            # A file without the retired column (a master spreadsheet kept by the team) says nothing about it: a
            # withdrawn entry stays offline, as with the console's edit form; restoring is set_retired's.
            values["retired"] = True
            report.kept_retired += 1
        changes = {k: [getattr(row, k), v] for k, v in values.items() if _stored(row, k) != v}
        if not changes:
            report.unchanged += 1
            continue
        for k, v in values.items():
            setattr(row, k, v)
        row.revision += 1
        if changes.pop("retired", None) is not None:  # only ever to retired: an import never restores
            report.retired += 1
            audit(session, actor, "kb.entry_retired", row, via="import")
        if changes:
            report.updated += 1
            audit(session, actor, "kb.entry_updated", row, via="import", fields=sorted(changes), changes=changes)
    if replace:
        keep = {e.id for e in entries}
        for row in existing.values():
            if row.id not in keep and not row.retired:
                row.retired = True
                row.revision += 1
                report.retired += 1
                audit(session, actor, "kb.entry_retired", row, via="import")
    audit(session, actor, "kb.imported", None, created=report.created, updated=report.updated,
          retired=report.retired, kept_retired=report.kept_retired, replace=replace, source=source)
    if report.created or report.updated or report.retired:
        # Only a change makes every process rebuild its index (the whole table; tens of seconds at 100k entries).
        _changed(session, r)
    return report


def _refuse_zeros_dropped(existing: dict[str, KBEntry], entries: list[Entry]) -> None:
    """Refuse an import that would create entries whose ids are existing ones without their leading zeros: Excel
    reads an exported .csv's 0012 as the number 12, and the saved file then made new entries (with --replace
    retiring the originals, their votes and history left behind)."""
    stripped: dict[str, str] = {}
    for old_id in existing:
        if old_id.startswith("0") and old_id.isdigit():
            stripped.setdefault(old_id.lstrip("0") or "0", old_id)
    pairs = [(e.id, stripped[e.id]) for e in entries if e.id not in existing and e.id in stripped]
    if pairs:
        shown = "、".join(f"“{new}”（原为 “{old}”）" for new, old in pairs[:5]) + (" 等" if len(pairs) > 5 else "")
        raise Conflict(f"文件里有 {len(pairs)} 个编号像是已有编号去掉了开头的 0：{shown}。这通常是 Excel 打开并保存 "
                       ".csv 时把编号当成了数字：请改回原来的编号（在 Excel 里先把编号列设为“文本”格式），"
                       "或改用导出的 .xlsx 文件编辑后再导入。")


class StaleEdit(Conflict):
    """An edit started from a revision a colleague has saved over (the console shows both versions side by side)."""

    code = "stale_edit"


def save_entry(session: Session, r: redis.Redis, actor: Actor, entry: Entry, *, create: bool,
               revision: int | None = None) -> KBEntry:
    """Create or edit one entry (the console's form); audited with the fields that changed. `revision` is the
    one the editor started from: when the entry has changed since, the edit is refused rather than written over
    the other change."""
    problems: dict[str, str] = {}
    for name, text in entry_issues(entry):
        problems.setdefault(name, FIELD_LABELS[name] + text)
    if problems:  # each beside its field on the form, in the form's words (not the file columns' English names)
        raise ValidationError(next(iter(problems.values())), fields=problems)
    row = session.get(KBEntry, entry.id, with_for_update=True)
    values = _row_values(entry)
    if create:
        if row is not None:
            return _created_already(row, values)
        row = KBEntry(**values)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # created at the same moment (a double submit; PostgreSQL, SQLite queues writers)
            return _created_already(session.get(KBEntry, entry.id, with_for_update=True), values)
        audit(session, actor, "kb.entry_created", row, question=entry.question)
    else:
        if row is None:
            raise NotFound("没有找到这个知识条目。")
        values["retired"] = row.retired  # the form never says; retiring and restoring are set_retired's
        changed = {k: v for k, v in values.items() if _stored(row, k) != v}
        if changed and revision is not None and revision != row.revision:
            # The form holds every field: saving it would put back what a colleague (or an import, or a phrasing
            # added from the unanswered queue) changed in the meantime. (A resend of a save that changes nothing
            # more, a double click, is no conflict.)
            raise StaleEdit("这条内容在您编辑期间已被其他同事修改并保存，为免覆盖对方的修改，这次没有保存。"
                            "请先复制您改动的内容，重新打开这条条目，在最新内容上修改后再保存。")
        # From/to pairs: nothing else keeps what the bot answered before the edit.
        changes = {k: [getattr(row, k), v] for k, v in changed.items()}
        for k, v in changed.items():
            setattr(row, k, v)
        if not changed:  # saved unchanged (a second click, a check): no process need rebuild its index
            return row
        row.revision += 1
        audit(session, actor, "kb.entry_updated", row, fields=sorted(changed), changes=changes)
    _changed(session, r)
    return row


def _created_already(row: KBEntry | None, values: dict) -> KBEntry:
    """A new entry whose id is taken: the same entry saved twice (a double click on 保存, whose second answer is
    the page the browser shows) is that entry; anything else is refused."""
    if row is None or any(getattr(row, k) != v for k, v in values.items()):
        raise Conflict(f"编号 {values['id']} 已存在，请换一个编号。", fields={"id": "已存在"})
    return row


def set_retired(session: Session, r: redis.Redis, actor: Actor, entry_id: str, retired: bool) -> KBEntry:
    row = session.get(KBEntry, entry_id, with_for_update=True)
    if row is None:
        raise NotFound("没有找到这个知识条目。")
    if row.retired != retired:
        row.retired = retired
        row.revision += 1
        audit(session, actor, "kb.entry_retired" if retired else "kb.entry_restored", row)
        _changed(session, r)
    return row


def add_phrasing(session: Session, r: redis.Redis, actor: Actor, entry_id: str, text: str,
                 unanswered_id: int | None = None) -> KBEntry:
    """Teach an entry a new way of asking (one click from the unanswered queue)."""
    # On one line (the console's 相似问法 box reads one phrasing a line). A "|" stays as asked: the table files and
    # the console's box write it “\|” and read it back whole (it was made a space: “A|B 股” became “A B 股”).
    text = " ".join(text.split())[:300]
    if not text:
        raise ValidationError("问法不能为空。", fields={"text": "不能为空"})
    row = session.get(KBEntry, entry_id, with_for_update=True)
    if row is None:
        raise NotFound("没有找到这个知识条目。")
    # Marking the question handled when the bot still cannot answer it with this entry would hide it from the queue.
    if row.retired:
        raise Conflict(f"条目“{row.question}”已下线，加上这个问法机器人也不会用它回答，问题仍留在待处理中。"
                       "请先在知识库中恢复该条目，或为这个问题新建条目。")
    if row.valid_until is not None and row.valid_until < today_shanghai():
        raise Conflict(f"条目“{row.question}”已于 {row.valid_until.isoformat()} 截止，加上这个问法机器人也不会用它"
                       "回答，问题仍留在待处理中。如政策延续，请先编辑该条目的截止日期；否则请为这个问题新建条目。")
    if text != row.question and text not in (row.similar or []):
        row.similar = [*(row.similar or []), text]
        row.revision += 1
        audit(session, actor, "kb.phrasing_added", row, text=text)
        _changed(session, r)
    if unanswered_id is not None:
        resolve_unanswered(session, actor, unanswered_id, entry_id)
    return row


class QuestionHandled(Conflict):
    """A queue question a colleague handled (or ignored) since the page it was clicked on was loaded."""

    code = "question_handled"


def add_unanswered_as_phrasing(session: Session, r: redis.Redis, actor: Actor, unanswered_id: int,
                               entry_id: str, expected_status: str | None = None) -> KBEntry:
    """Handle a question from the unanswered queue with an entry: the words as asked become one of its phrasings
    (an entry made from the question has it reworded, and the bot must answer the words people used).
    `expected_status`, the queue tab the click came from: a question handled since is refused (a second entry
    given the same words, the colleague's record written over), unless it was handled with this very entry."""
    asked = session.get(UnansweredQuestion, unanswered_id, with_for_update=True)
    if asked is None:
        raise NotFound("没有找到这个问题。")
    if expected_status is not None and asked.status != expected_status and not (
            asked.status == "resolved" and asked.resolved_entry_id == entry_id):
        if asked.status == "resolved":
            done = f"已被同事处理（加到了条目 {asked.resolved_entry_id or '（无）'}）"
        elif asked.status == "ignored":
            done = "已被同事忽略"
        else:
            done = "已被同事放回待处理"
        raise QuestionHandled(f"这个问题在您打开页面后{done}，为免覆盖同事的处理，这次没有保存。"
                              "如仍需调整，请刷新页面后在对应的标签页中操作。")
    return add_phrasing(session, r, actor, entry_id, asked.text, unanswered_id=unanswered_id)


def clashing_phrasings(kb: KnowledgeBase, entry: Entry, today: date) -> list[tuple[str, Entry]]:
    """The phrasings of `entry` that another current entry already holds (as its question or one of its
    phrasings, punctuation and width aside), each with that entry: the bot answers those words with one of the
    two only, so teaching them to the other does nothing."""
    owners = _phrasing_owners(kb, today)
    clashes: list[tuple[str, Entry]] = []
    for text in entry.phrasings:
        other = next((o for o in owners.get(_norm(text), ()) if o.id != entry.id), None)
        if other is not None:
            clashes.append((text, other))
    return clashes


_OWNERS: weakref.WeakKeyDictionary[KnowledgeBase, tuple[date, dict[str, list[Entry]]]] = weakref.WeakKeyDictionary()


def _phrasing_owners(kb: KnowledgeBase, today: date) -> dict[str, list[Entry]]:
    cached = _OWNERS.get(kb)
    if cached is not None and cached[0] == today:
        return cached[1]
    owners = _owners_of(kb.entries, today)
    _OWNERS[kb] = (today, owners)
    return owners


def _owners_of(entries: Iterable[Entry], today: date) -> dict[str, list[Entry]]:
    owners: dict[str, list[Entry]] = {}
    for e in entries:
        if e.is_current(today):
            for text in e.phrasings:
                owners.setdefault(_norm(text), []).append(e)
    return owners


def clashes_among(entries: Iterable[Entry], ids: Collection[str], today: date) -> list[tuple[str, Entry, Entry]]:
    """As clashing_phrasings, for the entries `ids` (an import's) among `entries` (every entry, from the table,
    without building an index): (words, the entry, the other entry holding them), each pair of entries once per
    words (two imported entries holding the same words are one clash, not two)."""
    entries = list(entries)
    owners = _owners_of(entries, today)
    seen: set[tuple[str, frozenset[str]]] = set()
    clashes: list[tuple[str, Entry, Entry]] = []
    for e in entries:
        if e.id not in ids or not e.is_current(today):
            continue
        for text in e.phrasings:
            other = next((o for o in owners.get(_norm(text), ()) if o.id != e.id), None)
            if other is not None and (_norm(text), frozenset((e.id, other.id))) not in seen:
                seen.add((_norm(text), frozenset((e.id, other.id))))
                clashes.append((text, e, other))
    return clashes


# --- unanswered queue, turns and feedback -----------------------------------------------------------

_NORM_RE = re.compile(r"[\s\W_]+", re.UNICODE)


def _norm(text: str) -> str:
    # NFKC: a Chinese input method's full-width ＡＰＰ / ２０２５ is the same question as APP / 2025.
    return _NORM_RE.sub("", unicodedata.normalize("NFKC", text).lower())[:200] or text.strip()[:200]


# People type their phone or ID number into the chat (often meaning it for staff): the chat log and the staff's
# unanswered queue keep the question, not those numbers. As they type them: grouped with spaces or dashes
# (138 0013 8000), after the country code (8613800138000), or in the full-width digits of a Chinese input method.
_D = "[0-9０-９]"
_SEP = "[ \u3000\\-－]?"
_MOBILE_RE = re.compile(rf"(?<!{_D})((?:[+＋]?[8８][6６]{_SEP})?[1１][3-9３-９]{_D}){_SEP}{_D}{{4}}{_SEP}({_D}{{4}})"
                        rf"(?!{_D})")
_ID_CARD_RE = re.compile(
    rf"(?<!{_D})({_D}{{6}}){_SEP}(?:[1１][9９]|[2２][0０]){_D}{{2}}(?:[0０][1-9１-９]|[1１][0-2０-２])"
    rf"(?:[0０][1-9１-９]|[1-2１-２]{_D}|[3３][0-1０-１]){_SEP}({_D}{{3}}[0-9０-９XxＸｘ])(?![0-9０-９XxＸｘ])")


def mask_personal(text: str) -> str:
    """Mobile and ID-card numbers in `text` with their middle digits hidden (138****8000)."""
    text = _ID_CARD_RE.sub(lambda m: m.group(1) + "*" * 8 + m.group(2), text)
    return _MOBILE_RE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


REPEAT_WINDOW = timedelta(minutes=10)
QUESTION_CHARS = 500  # ChatTurn.question, UnansweredQuestion.text


def clip_question(text: str, limit: int = QUESTION_CHARS) -> str:
    """`text` as the chat log and the unanswered queue keep it: a text longer than their column (the app's chat takes
    5,000 characters) is cut with a visible mark and its length, so staff do not read the beginning as the whole."""
    if len(text) <= limit:
        return text
    mark = f"…（原文共 {len(text)} 字，只保留了前面部分）"
    return text[: limit - len(mark)].rstrip() + mark


def log_turn(session: Session, *, channel: str, user_id: int | None, question: str, decision: str,
             entry_id: str | None, confidence: float, offered: list[str] | None = None,
             unanswered: bool = True, at: datetime | None = None) -> ChatTurn:
    """`offered`: the entry ids of the choices a 'suggest' turn gave. `unanswered=False`: a fallback is logged as the
    bot's turn but not counted in staff's unanswered queue (the text answered something else than a question).
    `at`: when it was asked, for a turn logged later (the database was away: knowledge_store.jobs)."""
    question = mask_personal(question)
    kept = clip_question(question)
    when = at or utcnow()
    # The same user sending the same unanswered question again (impatient, or thinking it was lost) is one asker:
    # three sends counted as three people in staff's unanswered queue.
    repeated = decision == "fallback" and user_id is not None and session.scalar(
        select(ChatTurn.id).where(ChatTurn.user_id == user_id, ChatTurn.channel == channel,
                                  ChatTurn.question == kept, ChatTurn.decision == "fallback",
                                  ChatTurn.created_at >= when - REPEAT_WINDOW,
                                  ChatTurn.created_at <= when).limit(1)) is not None
    turn = ChatTurn(channel=channel, user_id=user_id, question=kept, decision=decision, entry_id=entry_id,
                    confidence=round(confidence, 4), offered=list(offered) if offered else None, created_at=when)
    session.add(turn)
    if decision == "fallback" and unanswered and question.strip() and channel != "console" and not repeated:  # staff trying it out
        _count_unanswered(session, _norm(question), clip_question(question.strip()), when)
    session.flush()
    return turn


def queue_unanswered(session: Session, *, channel: str, question: str, at: datetime | None = None) -> bool:
    """Count `question` in staff's unanswered queue as a fallback's question is (masked, clipped), without a turn of its
    own: the question was logged when its “您是不是想问” choices were offered, and the user has since said none of them
    fits (“都不是”). False when it is none for staff (nothing asked, the console's simulator). `at`: when it was said,
    for a count made later (the database was away: knowledge_store.jobs.queue_unanswered_later)."""
    question = mask_personal(question).strip()
    if not question or channel == "console":
        return False
    _count_unanswered(session, _norm(question), clip_question(question), at)
    return True


def unanswered_counted_at(session: Session, question: str, at: datetime) -> bool:
    """Whether the queue's row for `question` was last counted at exactly `at` (a later count's job run again)."""
    last = session.scalar(select(UnansweredQuestion.last_asked_at)
                          .where(UnansweredQuestion.norm == _norm(mask_personal(question).strip())))
    return last is not None and last == at


def _count_unanswered(session: Session, norm: str, text: str, when: datetime | None = None) -> None:
    """One row per normalised question, counted in the database: two people asking the same new question at
    once must not fail the second chat on the unique key, nor lose a count."""
    when = when or utcnow()
    row_id = session.scalar(select(UnansweredQuestion.id).where(UnansweredQuestion.norm == norm))
    if row_id is None:
        try:
            with session.begin_nested():
                session.add(UnansweredQuestion(norm=norm, text=text, first_asked_at=when, last_asked_at=when))
                session.flush()
            return
        except IntegrityError:  # the other asker's row was committed first: count on it
            row_id = session.scalar(select(UnansweredQuestion.id).where(UnansweredQuestion.norm == norm))
            if row_id is None:
                raise
    col = UnansweredQuestion
    session.execute(update(col).where(col.id == row_id).values(
        count=col.count + 1, last_asked_at=when,
        # asked again after it was handled: the fix did not work
        status=case((col.status == "resolved", "open"), else_=col.status)).execution_options(synchronize_session=False))


def resolve_unanswered(session: Session, actor: Actor, unanswered_id: int, entry_id: str | None,
                       *, ignore: bool = False, via: str | None = None) -> UnansweredQuestion:
    row = session.get(UnansweredQuestion, unanswered_id, with_for_update=True)
    if row is None:
        raise NotFound("没有找到这个问题。")
    if ignore and row.status != "open":
        # 忽略 from a page opened earlier would forget the entry a colleague has just handled it with.
        raise Conflict("这个问题已被处理（或已忽略），无需再忽略。如需重新处理，请在“已处理”或“已忽略”中把它放回待处理。")
    if not ignore and row.status == "resolved" and row.resolved_entry_id == entry_id:
        return row  # handled with this entry already (a double click): no second record
    row.status = "ignored" if ignore else "resolved"
    row.resolved_entry_id = entry_id
    audit(session, actor, "kb.unanswered_ignored" if ignore else "kb.unanswered_resolved", row,
          entry_id=entry_id, **({"via": via} if via else {}))
    return row


def resolve_answerable(session: Session, actor: Actor, unanswered_ids: Iterable[int],
                       answer_for: Callable[[str], str | None]) -> tuple[int, int]:
    """Mark handled the open questions among `unanswered_ids` that the bot now answers (`answer_for` gives the
    entry it answers a text with, or None), each with that entry; returns (handled, left as they were). Judged
    again here, not on the page's word: an entry may have gone offline, or a colleague handled the question."""
    done = left = 0
    for qid in dict.fromkeys(unanswered_ids):
        row = session.get(UnansweredQuestion, qid, with_for_update=True)
        entry_id = answer_for(row.text) if row is not None and row.status == "open" else None
        if entry_id is None:
            left += 1
            continue
        resolve_unanswered(session, actor, qid, entry_id, via="now_answerable")
        done += 1
    return done, left


# --- the unanswered queue's marks ----------------------------------------------------------------------

SUGGESTIONS_SHOWN = 3
MARKS_KEY = "kb:marks:v1:{key}"  # a hash per index content: one field per question text
MARKS_TTL = 2 * 86400


@dataclass(frozen=True)
class QuestionMarks:
    """What the queue shows beside a question: entries it may belong to (ids, best first), and the entry the bot
    answers it with today, if it does."""

    suggestions: tuple[str, ...]
    answer: str | None


def _judge(kb: KnowledgeBase, text: str) -> QuestionMarks:
    # One search for both: the bot's own decision, and the current entries that search weighed (a second search
    # per question for the suggestions made a page of 50 questions two searches each).
    result = ask(kb, text)
    hits = result.candidates or kb.search(text, SUGGESTIONS_SHOWN)
    answer = result.entry_id if result.decision == "answer" and not result.picked else None
    return QuestionMarks(tuple(h.entry.id for h in hits[:SUGGESTIONS_SHOWN]), answer)


def question_marks(kb: KnowledgeBase, content_key: str | None, r: redis.Redis | None,
                   texts: Iterable[str]) -> dict[str, QuestionMarks]:
    """The marks of each text on this index, computed once per index content and shared by every process through
    Redis (a page of the queue searched all its questions on every load; most loads follow a click that changed
    no entry). Without a key or Redis, they are computed here."""
    texts = list(dict.fromkeys(texts))
    fields = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:24] for t in texts]
    key = MARKS_KEY.format(key=content_key) if content_key else None
    cached: list = [None] * len(texts)
    if key is not None and r is not None and texts:
        try:
            cached = r.hmget(key, fields)
        except redis.RedisError:
            log.warning("could not read the cached question marks")
            key = None
    out: dict[str, QuestionMarks] = {}
    fresh: dict[str, str] = {}
    for text, fld, raw in zip(texts, fields, cached, strict=True):
        marks = None
        if raw is not None:
            try:
                data = json.loads(raw)
                marks = QuestionMarks(tuple(str(i) for i in data["s"]), data["a"])
            except (ValueError, KeyError, TypeError):
                marks = None
        if marks is None:
            marks = _judge(kb, text)
            fresh[fld] = json.dumps({"s": list(marks.suggestions), "a": marks.answer})
        out[text] = marks
    if fresh and key is not None and r is not None:
        try:
            pipe = r.pipeline(transaction=False)
            pipe.hset(key, mapping=fresh)
            pipe.expire(key, MARKS_TTL)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not cache the question marks")
    return out


def turn_vote_token(secret: str, turn_id: int) -> str:
    """The token an anonymous chat answer is sent with: only who got the answer can vote on it (turn ids are
    sequential, so the id alone proves nothing)."""
    digest = hmac.new(secret.encode(), f"kb-vote|{turn_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _holds_turn(turn: ChatTurn, user_id: int | None, secret: str, vote_token: str | None) -> bool:
    if turn.user_id is not None:  # a logged-in user's turn: that user's vote alone
        return turn.user_id == user_id
    # As bytes: compare_digest refuses a str with non-ASCII characters, and the token is the caller's text.
    return bool(vote_token) and bool(secret) and hmac.compare_digest(
        vote_token.encode("utf-8"), turn_vote_token(secret, turn.id).encode("utf-8"))


def reopen_unanswered(session: Session, actor: Actor, unanswered_id: int) -> UnansweredQuestion:
    """Put a handled or ignored question back in the queue (a 忽略 clicked by mistake was otherwise final)."""
    row = session.get(UnansweredQuestion, unanswered_id, with_for_update=True)
    if row is None:
        raise NotFound("没有找到这个问题。")
    if row.status != "open":
        audit(session, actor, "kb.unanswered_reopened", row, was=row.status, entry_id=row.resolved_entry_id)
        row.status, row.resolved_entry_id = "open", None
    return row


def own_vote(session: Session, user_id: int, entry_id: str) -> AnswerFeedback | None:
    """The user's vote on an entry outside any chat turn (on a search result), if any."""
    return session.scalar(select(AnswerFeedback).where(
        AnswerFeedback.turn_id.is_(None), AnswerFeedback.user_id == user_id,
        AnswerFeedback.entry_id == entry_id).order_by(AnswerFeedback.id).limit(1))


def record_feedback(session: Session, *, turn_id: int | None, entry_id: str, user_id: int | None,
                    useful: bool, secret: str = "", vote_token: str | None = None) -> AnswerFeedback:
    """A 有用/没用 vote: on a chat turn by whoever got its answer (the user, or the holder of its vote token), or
    without a turn by a logged-in user, once per entry."""
    if session.get(KBEntry, entry_id) is None:
        raise NotFound("没有找到这个知识条目。")
    if turn_id is None and user_id is None:
        # Anonymous votes without a turn could not be told apart: each one counted, as often as a script liked.
        raise Unauthorized("登录后才能评价这条内容；对话中的回答可以直接评价。", code="login_required")
    if turn_id is not None:
        turn = session.get(ChatTurn, turn_id)
        if turn is None or not _holds_turn(turn, user_id, secret, vote_token):
            raise NotFound("没有找到这次问答。")
        # A vote on a turn is about what that turn gave: its answer, or one of its suggestions.
        if turn.decision == "suggest":
            # Any entry id was taken here (the turn named none): one turn voted for whichever entry a script liked.
            if entry_id not in (turn.offered or []):
                raise ValidationError("这次问答推荐的问题里没有这一条，无法评价。",
                                      fields={"entry_id": "不是这次问答推荐的条目"})
        elif (turn.decision not in ("answer", CHOICE) or turn.entry_id != entry_id):
            # (a choice that had gone gave nothing: its entry is None)
            raise ValidationError("这次问答没有给出这条回答，无法评价。",
                                  fields={"entry_id": "与这次问答给出的回答不符"})
        existing = session.scalar(select(AnswerFeedback).where(AnswerFeedback.turn_id == turn_id))
        if existing is not None:
            existing.useful = useful  # changing one's mind replaces the earlier vote
            return existing
    elif user_id is not None:
        # Without a turn (a vote on a search result) one user has one vote per entry: tapping 有用 again and
        # again, or a script with a token, would otherwise move the 有用 share as it liked.
        existing = own_vote(session, user_id, entry_id)
        if existing is not None:
            existing.useful = useful
            return existing
    fb = AnswerFeedback(turn_id=turn_id, entry_id=entry_id, user_id=user_id, useful=useful)
    try:
        with session.begin_nested():
            session.add(fb)
            session.flush()
    except IntegrityError:  # a double tap (PostgreSQL; SQLite queues writers): the vote saved first takes this one
        if turn_id is not None:
            existing = session.scalar(select(AnswerFeedback).where(AnswerFeedback.turn_id == turn_id))
        else:  # the user's vote on this entry outside a turn (uq_kb_feedback_user_entry_without_turn)
            existing = own_vote(session, user_id, entry_id)
        if existing is None:
            raise
        existing.useful = useful
        return existing
    return fb


def answer_rates(session: Session, since: datetime | None = None) -> dict:
    """Shares of questions answered, suggested and not answered, and the share of 有用 votes."""
    stmt = select(ChatTurn.decision, func.count()).where(ChatTurn.channel != "console").group_by(ChatTurn.decision)
    if since is not None:
        stmt = stmt.where(ChatTurn.created_at >= since)
    counts = dict(session.execute(stmt).all())
    asked = sum(v for k, v in counts.items() if k not in ("smalltalk", CHOICE, REJECTED))
    # Choices turned down covered nothing: counted as offered (suggested), not as covered.
    covered = counts.get("answer", 0) + max(counts.get("suggest", 0) - counts.get(REJECTED, 0), 0)
    votes_stmt = select(AnswerFeedback.useful, func.count()).group_by(AnswerFeedback.useful)
    if since is not None:  # the same window as the questions: an answer fixed since shows the change
        votes_stmt = votes_stmt.where(AnswerFeedback.created_at >= since)
    fb = dict(session.execute(votes_stmt).all())
    votes = fb.get(True, 0) + fb.get(False, 0)
    return {
        "asked": asked,
        "answered": counts.get("answer", 0),
        "suggested": counts.get("suggest", 0),
        "fallback": counts.get("fallback", 0),
        "answer_rate": counts.get("answer", 0) / asked if asked else None,
        "rejected": counts.get(REJECTED, 0),
        "covered_rate": covered / asked if asked else None,
        "useful_votes": fb.get(True, 0),
        "votes": votes,
        "useful_rate": fb.get(True, 0) / votes if votes else None,
    }


def entry_votes(session: Session, entry_ids: Collection[str], since: datetime | None = None,
                ) -> dict[str, tuple[int, int]]:
    """有用 and 没用 votes of each entry (those without votes are left out), over the same window as answer_rates."""
    stmt = (select(AnswerFeedback.entry_id, AnswerFeedback.useful, func.count())
            .where(AnswerFeedback.entry_id.in_(list(entry_ids))).group_by(AnswerFeedback.entry_id, AnswerFeedback.useful))
    if since is not None:
        stmt = stmt.where(AnswerFeedback.created_at >= since)
    votes: dict[str, tuple[int, int]] = {}
    for entry_id, useful, n in session.execute(stmt):
        up, down = votes.get(entry_id, (0, 0))
        votes[entry_id] = (up + n, down) if useful else (up, down + n)
    return votes


# --- the per-process index ---------------------------------------------------------------------------

class KBRuntime:
    """Holds this process's KnowledgeBase; rebuilds it when the Redis version moves (checked ≤ once a second).

    A rebuild runs on a thread of its own while the previous index goes on answering. The request that noticed the
    change waits for it when the last build was quick (a few hundred entries: well under a second), so an edit is
    in the next answer; a slow one (about half a minute at 100,000 entries) is not waited for: a WeChat push
    that stood behind it would miss its five seconds, and every process's first question after each edit would
    hang. A new day is no rebuild at all: validity is judged per query (KnowledgeBase.on_day)."""

    # Wait for a rebuild when the last build took less than this many seconds (the default knowledge base's
    # ~200 entries: 0.3-0.8 s; 10,000: about 4 s).
    wait_for_builds_under = 3.0

    # Serving the copy on disk (the database away when this process first needed an index): how often to try the
    # database again, on a thread of its own.
    snapshot_retry_interval = 5.0

    def __init__(self, db: Database, r: redis.Redis, check_interval: float = 1.0,
                 full_check_interval: float = 60.0, snapshot: Path | None = None) -> None:
        self.db, self.r, self.check_interval = db, r, check_interval
        self.full_check_interval = full_check_interval
        # The entries of the last index built, kept on disk (knowledge_store/snapshot.py); None: no copy.
        self.snapshot = snapshot
        self._from_snapshot = False
        self._retry_at = 0.0
        self._snapshot_lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._kb: KnowledgeBase | None = None
        self._version: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._full_checked = 0.0
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._last_build_seconds = 0.0
        # What each index was built from (version, entries, sum of revisions): a result computed on it is cached
        # under that and its day.
        self._sources: weakref.WeakKeyDictionary[KnowledgeBase, tuple[str, int, int]] = weakref.WeakKeyDictionary()

    @property
    def loaded(self) -> bool:
        """Whether an index has been built in this process (the first get() builds it: seconds per 10,000 entries)."""
        return self._kb is not None

    def content_key(self, kb: KnowledgeBase) -> str | None:
        """A key naming what `kb` was built from, the same in every process that built it from the same rows: the
        version in Redis (a fresh random value at every change) and the rows' stamp (no entry is ever deleted and
        every change raises a revision, so it moves even when the version could not be bumped); None for an index
        this runtime did not build."""
        source = self._sources.get(kb)
        if source is None or kb.today is None:
            return None
        version, n, revisions = source
        return f"{version or '-'}:{n}:{revisions}:{kb.today.isoformat()}"

    def _read_version(self) -> str:
        try:
            raw = self.r.get(VERSION_KEY)
        except redis.RedisError:
            return self._version if self._version is not None else ""
        return raw.decode() if isinstance(raw, bytes) else str(raw or "")

    def _read_stamp(self, session: Session) -> tuple[int, int]:
        """Entries and the sum of their revisions: every change moves one of them."""
        n, revisions = session.execute(select(func.count(KBEntry.id),
                                              func.coalesce(func.sum(KBEntry.revision), 0))).one()
        return int(n), int(revisions)

    def _table_moved(self) -> bool:
        try:
            with self.db.session_scope() as s:
                return self._read_stamp(s) != self._stamp
        except SQLAlchemyError:
            log.warning("could not check the knowledge-base table")
            return False

    def get(self) -> KnowledgeBase:
        now = time.monotonic()
        # Validity is judged by the centre's day, not the server clock's (UTC is a day behind until 08:00).
        day = today_shanghai()
        kb = self._kb
        if kb is not None and kb.today != day:
            kb = self._redate(kb, day)
        if kb is not None and now - self._checked < self.check_interval:
            return kb
        version = self._read_version()
        self._checked = now
        if kb is None:
            with self._lock:  # the first index: every caller needs it
                if self._kb is None:
                    self._kb, self._version = self._first_index(day, version)
                return self._kb
        if self._from_snapshot:
            return self._retry_database(kb, day, version, now)
        if version == self._version:
            if now - self._full_checked < self.full_check_interval:
                return kb
            # The version bump after a commit is best effort (Redis can be briefly unreachable): now and then
            # look at the table itself, so such an edit still arrives.
            self._full_checked = now
            if not self._table_moved():
                return kb
        return self._rebuild_behind(day, version)

    def _first_index(self, day: date, version: str) -> tuple[KnowledgeBase, str | None]:
        """Built from the database; with the database away, from the copy on disk (version None: not what Redis
        names), which answers until the database is back."""
        try:
            return self._build(day, version), version
        except SQLAlchemyError:
            kept = snapshot.read(self.snapshot) if self.snapshot is not None else None
            if kept is None:
                raise
            entries, stamp = kept
            kb = KnowledgeBase(entries, today=day)
            self._stamp, self._from_snapshot = stamp, True
            self._retry_at = time.monotonic() + self.snapshot_retry_interval
            log.warning("database unreachable: the knowledge base answers from its copy on disk until it is back",
                        exc_info=True, extra={"entries": len(entries)})
            return kb, None

    def _retry_database(self, kb: KnowledgeBase, day: date, version: str, now: float) -> KnowledgeBase:
        """Serving the copy on disk: every snapshot_retry_interval seconds a build from the database is tried behind
        it (never waited for: with the database away a connection attempt can take seconds)."""
        if now < self._retry_at:
            return kb
        self._retry_at = now + self.snapshot_retry_interval
        with self._lock:
            if self._builder is None:
                self._builder = threading.Thread(target=self._build_and_swap, args=(day, version),
                                                 name="kb-rebuild", daemon=True)
                self._builder.start()
        return self._kb  # type: ignore[return-value]

    def _keep_copy(self, entries: list[Entry], stamp: tuple[int, int]) -> None:
        """Write the copy on disk unless it already holds these rows (another process wrote it)."""
        with self._snapshot_lock:
            if self._stamp == stamp and snapshot.stamp_of(self.snapshot) != stamp:  # type: ignore[arg-type]
                snapshot.write(self.snapshot, entries, stamp)  # type: ignore[arg-type]

    def _redate(self, kb: KnowledgeBase, day: date) -> KnowledgeBase:
        with self._lock:
            if self._kb is kb:
                self._kb = kb.on_day(day)
                source = self._sources.get(kb)
                if source is not None:
                    self._sources[self._kb] = source
            return self._kb if self._kb is not None else kb

    def _rebuild_behind(self, day: date, version: str) -> KnowledgeBase:
        with self._lock:
            builder = self._builder
            if builder is not None:  # already under way: keep serving the previous index
                return self._kb  # type: ignore[return-value]
            builder = self._builder = threading.Thread(
                target=self._build_and_swap, args=(day, version), name="kb-rebuild", daemon=True)
            builder.start()
        if self._last_build_seconds < self.wait_for_builds_under:
            builder.join()
        return self._kb  # type: ignore[return-value]

    def _build_and_swap(self, day: date, version: str) -> None:
        try:
            kb = self._build(day, version)
            with self._lock:
                self._kb, self._version, self._from_snapshot = kb, version, False
        except SQLAlchemyError as exc:
            # The database away: the previous index goes on answering; the next check tries again.
            log.warning("knowledge base rebuild failed: database error (%s)", type(exc).__name__)
        except Exception:
            # The previous index goes on answering; the next check (a second on) tries again.
            log.exception("knowledge base rebuild failed")
        finally:
            with self._lock:
                self._builder = None

    def _build(self, day: date, version: str = "") -> KnowledgeBase:
        get_analyzer()  # jieba's dictionary, loaded once per process, is no part of what a rebuild costs
        started = time.perf_counter()
        with self.db.session_scope() as s:
            rows = s.scalars(select(KBEntry).order_by(KBEntry.id)).all()
            # The stamp of the rows read, not of a query of its own: a save committed between two statements
            # (PostgreSQL's read committed) gave an index the stamp of content it did not hold.
            stamp = (len(rows), sum(row.revision or 0 for row in rows))
            entries = [entry_from_row(row) for row in rows]
        kb = KnowledgeBase(entries, today=day)
        self._sources[kb] = (version, *stamp)
        self._stamp, self._full_checked = stamp, time.monotonic()
        self._last_build_seconds = time.perf_counter() - started
        if self.snapshot is not None:  # on a thread of its own: at 100,000 entries the copy takes seconds
            self._keeper = threading.Thread(target=self._keep_copy, args=(entries, stamp), name="kb-snapshot",
                                            daemon=True)
            self._keeper.start()
        log.info("knowledge base loaded", extra={"entries": len(entries),
                                                 "ms": round(self._last_build_seconds * 1000)})
        return kb


def get_runtime() -> KBRuntime:
    from flask import current_app

    ext = current_app.extensions
    runtime = ext.get("wxapp_kb")
    if runtime is None:
        state = ext["wxapp"]
        kept = snapshot.snapshot_path(state.settings.instance_path, state.settings.resolved_database_url)
        runtime = ext.setdefault("wxapp_kb", KBRuntime(state.db, state.redis, snapshot=kept))
    return runtime
