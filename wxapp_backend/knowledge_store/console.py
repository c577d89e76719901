"""Console pages for the knowledge base: entries, the unanswered-questions queue, answer rates."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import Text, cast, func, or_, select
from werkzeug.datastructures import MultiDict

from knowledge.loaders import TAG_SEPARATORS, escape_separators, split_separated
from knowledge.schema import POLICY_FIELDS, Entry

from ..auth.guard import console_required
from ..auth.models import StaffRole
from ..console import add_nav, without_refused_filters
from ..db import session_scope, utcnow
from ..errors import AppError, ValidationError
from ..validation import Field, row_id, row_ids, text_key, validate
from . import services
from .models import KBEntry, UnansweredQuestion

bp = Blueprint("kb_console", __name__, url_prefix="/console/kb")

PER_PAGE = 30
UNANSWERED_PER_PAGE = 50  # each question on the page is searched once per index content (cached)
NO_CATEGORY = "（未分类）"
QUEUE_TABS = ("open", "resolved", "ignored")
_LINE_BREAK_RE = re.compile(r"\r\n?")
ENTRY_FIELDS = (
    Field("id", "str", "编号", required=True, max_len=128),
    Field("question", "str", "标准问题", required=True, max_len=300),
    Field("similar", "text", "相似问法", max_len=10000, default=""),
    Field("answer", "text", "答案", required=True, max_len=10000),
    Field("category", "str", "分类", max_len=40, default=""),
    Field("tags", "str", "标签", max_len=500, default=""),
    Field("issuer", "str", "发布部门", max_len=200),
    Field("eligibility", "text", "适用对象", max_len=5000),
    Field("conditions", "text", "申请条件", max_len=5000),
    Field("window", "str", "申报时间", max_len=300),
    Field("benefit", "text", "支持内容", max_len=5000),
    Field("where_to_apply", "text", "办理渠道", max_len=5000),
    Field("url", "str", "原文链接", max_len=500),
    Field("valid_from", "date", "生效日期"),
    Field("valid_until", "date", "截止日期"),
)

add_nav("kb_console.entries", "知识库", StaffRole.STAFF)
add_nav("kb_console.unanswered", "未答问题", StaffRole.STAFF)


def _redis():
    return current_app.extensions["wxapp"].redis


def _entry_from_form(form: dict) -> Entry:
    data = validate(form, ENTRY_FIELDS)
    # Browsers send a textarea's line breaks as CRLF; entries hold LF, as every file format gives them back (an
    # .xlsx turns CRLF into LF, so an export and re-import counted the entry as changed).
    data = {k: _LINE_BREAK_RE.sub("\n", v) if isinstance(v, str) else v for k, v in data.items()}
    # One phrasing a line; "|" separates them too, as in a table file, and “\|” is a bar of the phrasing, as the form
    # shows one (a phrasing with a bar, from a YAML file, was split in two by the next save of its entry).
    split = [s.strip() for line in (data["similar"] or "").splitlines() for s in split_separated(line) if s.strip()]
    # Each once, and not the standard question again (a pasted list kept its repeats: 问法 counted them all).
    split = [s for s in dict.fromkeys(split) if s != data["question"].strip()]
    # A Chinese keyboard's comma is “，”; "|" and "｜" separate tags in table files.
    # Each once, as a file import keeps them (else the first export and re-import counted the entry as changed).
    tags = list(dict.fromkeys(t.strip() for t in TAG_SEPARATORS.split(data["tags"] or "") if t.strip()))
    return Entry(id=data["id"], question=data["question"], answer=data["answer"], similar=tuple(split),
                 category=data["category"] or "", tags=tuple(tags),
                 **{f: data.get(f) for f in POLICY_FIELDS}, retired=False)


# q takes a whole id (128 characters: saving an entry lands on the list searched by its id) and a whole question
# (300, a user's question pasted in to see what the bot matches).
LIST_FILTERS = (Field("q", "str", "搜索", max_len=300, default=""), Field("category", "str", "分类", max_len=40, default=""))


@bp.get("/")
@console_required(StaffRole.STAFF)
def entries():
    # Validated like every console filter: control characters out (a NUL in a LIKE is a 500 on PostgreSQL).
    # A search the box cannot hold (a link with a whole message in it) is left out with a note, as on the other lists.
    args, note = without_refused_filters({k: v for k in ("q", "category") if (v := request.args.get(k)) is not None},
                                         lambda raw: validate(raw, LIST_FILTERS))
    q, category = args["q"], args["category"]
    show = request.args.get("show", "current")
    page = max(1, min(request.args.get("page", 1, type=int) or 1, 10000))
    with session_scope() as s:
        stmt = select(KBEntry)
        if q:
            # Any case on PostgreSQL too (its LIKE is case-sensitive), and "%" or "_" typed is just a character.
            # Phrasings and tags too (a phrasing added from the unanswered queue is what staff remember). They are
            # stored as JSON text with Chinese as \uXXXX escapes: the words are looked for as JSON writes them.
            in_json = json.dumps(q)[1:-1]
            stmt = stmt.where(or_(*(c.icontains(q, autoescape=True)
                                    for c in (KBEntry.id, KBEntry.question, KBEntry.answer)),
                                  *(cast(c, Text).icontains(in_json, autoescape=True)
                                    for c in (KBEntry.similar, KBEntry.tags))))
        if category:  # the menu's （未分类） is its own value: an empty one means every category
            stmt = stmt.where(KBEntry.category == ("" if category == NO_CATEGORY else category))
        offline = 0
        if show == "current":
            if q or category:  # otherwise a search for an offline entry said 共 0 条, as if it did not exist
                retired = stmt.where(KBEntry.retired.is_(True))
                offline = s.scalar(select(func.count()).select_from(retired.subquery()))
            stmt = stmt.where(KBEntry.retired.is_(False))
        elif show == "retired":
            stmt = stmt.where(KBEntry.retired.is_(True))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        # Past the last page (its only entry just taken offline, an old link) shows the last one, not an empty table.
        page = min(page, max(1, -(-total // PER_PAGE)))
        rows = s.scalars(stmt.order_by(KBEntry.category, KBEntry.id).offset((page - 1) * PER_PAGE)
                         .limit(PER_PAGE)).all()
        categories = [c for (c,) in s.execute(select(KBEntry.category).distinct().order_by(KBEntry.category))]
        since = utcnow() - timedelta(days=30)
        rates = services.answer_rates(s, since=since)
        votes = services.entry_votes(s, [r.id for r in rows], since=since)  # which answers the 没用 are about
    hits = []
    if q:
        hits = services.get_runtime().get().search(q, 5)
    return render_template("console/kb/list.html", rows=rows, total=total, page=page, per_page=PER_PAGE, q=q,
                           category=category, categories=categories, show=show, rates=rates, hits=hits, votes=votes, offline=offline,
                           no_category=NO_CATEGORY, filter_error=note,
                           today=services.today_shanghai()), 422 if note else 200


@bp.route("/new", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def new_entry():
    return _edit(None)


@bp.route("/<entry_id>/edit", methods=["GET", "POST"])
@console_required(StaffRole.STAFF)
def edit_entry(entry_id: str):
    key = text_key(entry_id, 128)
    if key is None:
        abort(404)
    return _edit(key)


def _edit(entry_id: str | None):
    errors: dict[str, str] = {}
    form: dict = {}
    notice = ""
    if request.method == "POST":
        form = request.form.to_dict()
        if entry_id is not None:
            form["id"] = entry_id
        try:
            entry = _entry_from_form(form)
            with session_scope() as s:
                row = services.save_entry(s, _redis(), g.actor, entry, create=entry_id is None,
                                          revision=row_id(request.form.get("revision")))
                from_q = row_id(request.form.get("from_unanswered"))
                if from_q:  # 新建条目 is offered on the queue's open tab only
                    services.add_unanswered_as_phrasing(s, _redis(), g.actor, from_q, entry.id,
                                                        expected_status="open")
                offline = _offline_notice(row)
                saved = services.entry_from_row(row)  # with the words of the question it was made from
            # An entry offline, past its 截止日期 or not yet in force is saved but not answered with: saying the bot
            # would use it in seconds left the editor believing users now read the new text.
            flash("已保存。" + offline if offline else "已保存，机器人几秒内就会用上新内容。")
            _warn_clashes(saved)
            # show=all: an offline entry, saved, is still on the page (在线 only said 共 0 条, as if it were lost).
            return redirect(url_for("kb_console.entries", q=entry.id, show="all"))
        except services.StaleEdit:
            # What the colleague saved, beside what this staff member typed (still in the form, nothing lost);
            # the form now carries the colleague's revision, so saving again after merging is accepted.
            with session_scope() as s:
                row = s.get(KBEntry, entry_id)
                theirs = _form_values(row) if row is not None else {}
                # A colleague's 下线 (or 恢复) is no field of the form: the table alone showed nothing changed.
                notice = _offline_notice(row) if row is not None else ""
            form["revision"] = theirs.get("revision", form.get("revision"))
            errors = {"_": "这条内容在您编辑期间已被其他同事修改并保存，为免覆盖对方的修改，这次没有保存。"
                           "下方对照列出了同事保存的版本和您未保存的内容；您填写的内容仍在表单里，"
                           "请对照合并后再点“保存”。"}
            return render_template("console/kb/edit.html", form=form, errors=errors, entry_id=entry_id,
                                   fields=ENTRY_FIELDS, conflict=_conflict_rows(theirs, form), notice=notice), 409
        except services.QuestionHandled as exc:
            # Saved again, the entry is made on its own: the colleague's handling of the question stays.
            form["from_unanswered"] = ""
            errors = {"_": exc.message.replace("如仍需调整，请刷新页面后在对应的标签页中操作。",
                                               "如仍要新建这条条目，请再点“保存”（不再关联这个问题）。")}
            status = exc.status
        except AppError as exc:
            errors = exc.fields or {"_": exc.message}
            status = exc.status
        return render_template("console/kb/edit.html", form=form, errors=errors, entry_id=entry_id,
                               fields=ENTRY_FIELDS), status
    if entry_id is not None:
        with session_scope() as s:
            row = s.get(KBEntry, entry_id)
            if row is None:
                abort(404)
            form = _form_values(row)
            notice = _offline_notice(row)
    else:
        form = {"question": request.args.get("question", "")[:300],
                "from_unanswered": request.args.get("from_unanswered", "")}
    return render_template("console/kb/edit.html", form=form, errors=errors, entry_id=entry_id,
                           fields=ENTRY_FIELDS, notice=notice)


def _warn_clashes(entry: Entry) -> None:
    """Flash the phrasings of `entry` another current entry already holds."""
    for text, other in services.clashing_phrasings(services.get_runtime().get(), entry,
                                                   services.today_shanghai())[:5]:
        flash(f"注意：问法“{text}”与条目 {other.id}（{other.question}）的问法重复，机器人遇到这句话只会用"
              "其中一条回答。请删去不该回答它的那一处。")


def _form_values(row: KBEntry) -> dict:
    """An entry as its edit form shows it."""
    form = {f.name: getattr(row, f.name) for f in ENTRY_FIELDS}
    form["similar"] = "\n".join(escape_separators(s) for s in row.similar or [])  # read back by _entry_from_form
    form["tags"] = ", ".join(row.tags or [])
    form["retired"] = row.retired
    form["revision"] = row.revision  # sent back on save: an edit made meanwhile is not overwritten
    return form


def _shown(value) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value or "")
    return "\n".join(line.strip() for line in _LINE_BREAK_RE.sub("\n", text).strip().splitlines())


def _conflict_rows(theirs: dict, mine: dict) -> list[tuple[str, str, str, bool]]:
    """(label, the colleague's saved text, this staff member's unsaved text, differ) for each field of the form:
    the standard question, answer and phrasings always, the other fields where the two differ."""
    rows = []
    for f in ENTRY_FIELDS:
        if f.name == "id":
            continue
        saved, unsaved = _shown(theirs.get(f.name)), _shown(mine.get(f.name))
        if f.name == "tags":  # the same tags, however separated, are no difference
            saved, unsaved = (", ".join(t.strip() for t in TAG_SEPARATORS.split(v) if t.strip())
                              for v in (saved, unsaved))
        if f.name == "similar":
            saved, unsaved = ("\n".join(line for line in v.splitlines() if line) for v in (saved, unsaved))
        if saved != unsaved or f.name in ("question", "answer", "similar"):
            rows.append((f.label, saved, unsaved, saved != unsaved))
    return rows


def _offline_notice(row: KBEntry) -> str:
    """Why the bot does not answer with this entry today, if it does not (said above its form)."""
    today = services.today_shanghai()
    if row.retired:
        return "这条内容已下线，机器人不会用它回答。要重新启用，请在知识库列表中点“恢复”。"
    if row.valid_until is not None and row.valid_until < today:
        return (f"这项政策已于 {row.valid_until.isoformat()} 截止，机器人不会再把它当作现行政策回答。"
                "如政策延续，请修改截止日期。")
    if row.valid_from is not None and row.valid_from > today:
        return f"这项政策自 {row.valid_from.isoformat()} 起施行，在此之前机器人不会用它回答。"
    return ""


@bp.post("/<entry_id>/retire")
@console_required(StaffRole.STAFF)
def retire_entry(entry_id: str):
    value = request.form.get("retire", "1")
    if value not in ("1", "0"):  # anything else restored the entry (retire=true put it back online)
        raise ValidationError("retire 只能是 1（下线）或 0（恢复上线）。", fields={"retire": "应为 1 或 0"})
    retire = value == "1"
    key = text_key(entry_id, 128)
    if key is None:
        abort(404)
    with session_scope() as s:
        row = services.set_retired(s, _redis(), g.actor, key, retire)
        until, since = row.valid_until, row.valid_from
    today = services.today_shanghai()
    if retire:
        flash("已下线，机器人不会再用这条回答。")
    elif until is not None and until < today:  # the bot still does not answer it: say why
        flash(f"已恢复上线。但它的截止日期 {until.isoformat()} 已过，机器人仍不会用它回答；如政策延续，请编辑截止日期。")
    elif since is not None and since > today:
        flash(f"已恢复上线，生效日期 {since.isoformat()} 起机器人才会用它回答。")
    else:
        flash("已恢复上线。")
    return redirect(request.referrer if _same_site(request.referrer) else url_for("kb_console.entries"))


def _same_site(url: str | None) -> bool:
    return bool(url) and url.startswith(request.host_url + "console/")


@bp.get("/unanswered")
@console_required(StaffRole.STAFF)
def unanswered():
    return _queue_page(request.args)


def _queue_page(args, **extra):
    """The unanswered queue at `args`' tab and page (a GET's query, or the page a refused button was on)."""
    status = args.get("status", "open")
    if status not in QUEUE_TABS:
        status = "open"
    with session_scope() as s:
        counts = dict(s.execute(select(UnansweredQuestion.status, func.count())
                                .group_by(UnansweredQuestion.status)).all())
        total = counts.get(status, 0)
        pages = max(1, -(-total // UNANSWERED_PER_PAGE))
        # Past the last page (questions handled meanwhile) shows the last one rather than an empty page.
        page = min(max(1, min(args.get("page", 1, type=int) or 1, 100000)), pages)
        # id last: questions asked as often at the same moment keep their place from one page to the next.
        rows = s.scalars(select(UnansweredQuestion).where(UnansweredQuestion.status == status)
                         .order_by(UnansweredQuestion.count.desc(), UnansweredQuestion.last_asked_at.desc(),
                                   UnansweredQuestion.id)
                         .offset((page - 1) * UNANSWERED_PER_PAGE).limit(UNANSWERED_PER_PAGE)).all()
    runtime = services.get_runtime()
    kb = runtime.get()
    # Every question on the page gets its suggestions, and an open one is marked when an entry added or edited
    # since answers it, with one click to mark them: one search per question, cached per index content.
    marks = services.question_marks(kb, runtime.content_key(kb), _redis(), (row.text for row in rows))
    suggestions = {row.id: [e for e in map(kb.get, marks[row.text].suggestions) if e is not None] for row in rows}
    answerable = {}
    if status == "open":
        for row in rows:
            entry = kb.get(marks[row.text].answer or "")
            if entry is not None:
                answerable[row.id] = entry
    return render_template("console/kb/unanswered.html", rows=rows, status=status, suggestions=suggestions,
                           counts=counts, total=total, page=page, pages=pages, per_page=UNANSWERED_PER_PAGE,
                           answerable=answerable, **extra)


@bp.post("/unanswered/resolve-answerable")
@console_required(StaffRole.STAFF)
def unanswered_resolve_answerable():
    runtime = services.get_runtime()
    kb = runtime.get()
    key = runtime.content_key(kb)
    qids = row_ids(request.form.getlist("qid"))[:UNANSWERED_PER_PAGE]

    def answer_for(text: str) -> str | None:  # judged on today's index (cached with the page's marks)
        return services.question_marks(kb, key, _redis(), [text])[text].answer

    with session_scope() as s:
        done, left = services.resolve_answerable(s, g.actor, qids, answer_for)
    flash(f"已把 {done} 个机器人现在能回答的问题标为已处理。"
          + (f"另有 {left} 个已被同事处理或机器人仍答不上，保持原样。" if left else ""))
    return _back_to_queue()


@bp.post("/unanswered/<int:qid>/phrasing")
@console_required(StaffRole.STAFF)
def unanswered_to_phrasing(qid: int):
    entry_id = text_key(request.form.get("entry_id"), 128) or ""  # "" is no entry: the service says so
    # The tab the button was on: a question a colleague handled since that page was loaded is not taken over.
    seen = request.form.get("status")
    try:
        with session_scope() as s:
            row = services.add_unanswered_as_phrasing(s, _redis(), g.actor, qid, entry_id,
                                                      expected_status=seen if seen in QUEUE_TABS else None)
            since = row.valid_from
            asked = s.get(UnansweredQuestion, qid).text
    except AppError as exc:
        # A number mistyped into 加为问法, an entry offline: said on the queue the staff member was working on (a
        # bare 页面不存在 page lost their place), with the number typed.
        return _refused_on_queue(exc, f"没有加为条目 {request.form.get('entry_id', '').strip()[:128]} 的问法：")
    if since is not None and since > services.today_shanghai():  # added, but the bot cannot answer with it yet
        flash(f"已把这个问法加到条目 {entry_id}。该条目的生效日期是 {since.isoformat()}，机器人从那天起才会用它回答"
              "这个问题。")
    else:
        flash(f"已把这个问法加到条目 {entry_id}。")
    # Words another current entry holds (given to it since they were asked) go on being answered by that one:
    # said here as the edit form says it.
    _warn_clashes(Entry(id=entry_id, question=asked, answer=""))
    return _back_to_queue()


@bp.post("/unanswered/<int:qid>/ignore")
@console_required(StaffRole.STAFF)
def unanswered_ignore(qid: int):
    try:
        with session_scope() as s:
            services.resolve_unanswered(s, g.actor, qid, None, ignore=True)
    except AppError as exc:  # handled by a colleague meanwhile
        return _refused_on_queue(exc)
    flash("已忽略。")
    return _back_to_queue()


@bp.post("/unanswered/<int:qid>/reopen")
@console_required(StaffRole.STAFF)
def unanswered_reopen(qid: int):
    try:
        with session_scope() as s:
            services.reopen_unanswered(s, g.actor, qid)
    except AppError as exc:
        return _refused_on_queue(exc)
    flash("已放回待处理。")
    return _back_to_queue()


def _refused_on_queue(exc: AppError, lead: str = ""):
    """A button on the queue refused: the queue again, at the tab and page it was pressed on, saying why."""
    if exc.status == 403:
        raise exc
    ref = request.referrer or ""
    args = MultiDict(parse_qsl(urlsplit(ref).query)) if _same_site(ref) and "/console/kb/unanswered" in ref \
        else MultiDict()
    return _queue_page(args, refusal=lead + exc.message), exc.status


def _back_to_queue():
    # Back to the page and tab the staff member was working on (page 4 of the queue, not page 1 again).
    ref = request.referrer
    if _same_site(ref) and "/console/kb/unanswered" in ref:
        return redirect(ref)
    return redirect(url_for("kb_console.unanswered"))
