"""Public search API: KnowledgeBase.search() ranks entries, decide() says answer / suggest / fallback."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np

from .analysis import MAX_QUERY_CHARS, Analyzer, get_analyzer
from .index import IndexParams, SearchIndex
from .schema import Entry

DecisionKind = Literal["answer", "suggest", "fallback"]

# Chosen on our own dev data (labelled dev split + held-out phrasings, `bench/kb_eval.py --fit` sweep):
# out-of-scope answers on dev stay at their floor from 0.75 to 0.9; 0.8 keeps a margin. See docs/bench/kb.md.
DEFAULT_ANSWER_THRESHOLD = 0.8
DEFAULT_SUGGEST_THRESHOLD = 0.2
# When the runner-up is this close to the best, the question is ambiguous: offer choices instead.
DEFAULT_AMBIGUITY_MARGIN = 0.0
# A question needs at least this many distinct content words before the bot answers outright.
DEFAULT_MIN_ANSWER_TOKENS = 2


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked entry: `confidence` in [0, 1] is comparable across index sizes; `score` is the raw fused score."""

    entry: Entry
    score: float
    confidence: float
    matched: str = ""
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What the bot should do with a question, the hits it is based on, and why (Chinese, for logs and staff)."""

    kind: DecisionKind
    hits: list[Hit] = field(default_factory=list)
    reason: str = ""
    expired: list[Hit] = field(default_factory=list)
    # The current entries weighed, best first, whatever the kind (a fallback's are below the suggest threshold):
    # what a caller shows as "possibly related" without searching the same question a second time.
    candidates: list[Hit] = field(default_factory=list)

    @property
    def best(self) -> Hit | None:
        """The top hit, if any."""
        return self.hits[0] if self.hits else None


def _entry_text(e: Entry) -> str:
    """The entry's answer-side text (answer, category, tags, policy fields), searched as one weaker field.

    An answer that only repeats the question adds nothing, so it is left out.
    """
    parts: list[str | None] = [] if e.answer.strip() == e.question.strip() else [e.answer]
    parts += [e.category, *e.tags, e.issuer, e.eligibility, e.conditions, e.benefit, e.where_to_apply]
    return " ".join(x for x in parts if x)


class KnowledgeBase:
    """An immutable, thread-safe search index over entries; build a new one (with_changes) to update it."""

    def __init__(
        self,
        entries: Iterable[Entry],
        today: date | None = None,
        *,
        answer_threshold: float = DEFAULT_ANSWER_THRESHOLD,
        suggest_threshold: float = DEFAULT_SUGGEST_THRESHOLD,
        ambiguity_margin: float = DEFAULT_AMBIGUITY_MARGIN,
        min_answer_tokens: int = DEFAULT_MIN_ANSWER_TOKENS,
        analyzer: Analyzer | None = None,
        params: IndexParams | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self._entries: tuple[Entry, ...] = tuple(entries)
        ids = [e.id for e in self._entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"知识库条目编号重复：{'、'.join(dup)}")
        if not 0.0 <= suggest_threshold <= answer_threshold <= 1.0:
            raise ValueError("阈值须满足 0 ≤ suggest_threshold ≤ answer_threshold ≤ 1")
        self.today = today
        self.answer_threshold = answer_threshold
        self.suggest_threshold = suggest_threshold
        self.ambiguity_margin = ambiguity_margin
        self.min_answer_tokens = min_answer_tokens
        self.analyzer = analyzer or get_analyzer()
        self._params = params
        self._weights = weights
        self._by_id = {e.id: i for i, e in enumerate(self._entries)}
        texts: list[str] = []
        owner: list[int] = []
        for i, e in enumerate(self._entries):
            for p in e.phrasings:
                texts.append(p)
                owner.append(i)
        self._texts = texts
        self._index = SearchIndex(
            texts, owner, self.analyzer, params, weights, entry_texts=[_entry_text(e) for e in self._entries]
        )
        # (day, per-document flag), swapped in as one object: threads asking for different days (around
        # midnight) never pair one day with the other's flags.
        self._masked: tuple[date, np.ndarray] | None = None

    # -- collection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """All entries, current or not, in load order."""
        return self._entries

    def get(self, entry_id: str) -> Entry | None:
        """The entry with this id, or None."""
        i = self._by_id.get(entry_id)
        return self._entries[i] if i is not None else None

    def with_changes(self, upsert: Iterable[Entry] = (), remove: Iterable[str] = ()) -> KnowledgeBase:
        """A new KnowledgeBase with entries added/replaced by id and ids removed; this one is unchanged."""
        drop = set(remove)
        new = {e.id: e for e in upsert}
        merged = [new.pop(e.id, e) for e in self._entries if e.id not in drop]
        merged.extend(e for e in new.values() if e.id not in drop)
        return KnowledgeBase(
            merged,
            self.today,
            answer_threshold=self.answer_threshold,
            suggest_threshold=self.suggest_threshold,
            ambiguity_margin=self.ambiguity_margin,
            min_answer_tokens=self.min_answer_tokens,
            analyzer=self.analyzer,
            params=self._params,
            weights=self._weights,
        )

    # -- search -----------------------------------------------------------------------

    def on_day(self, today: date) -> KnowledgeBase:
        """The same index with `today` as its default day. Validity is judged per query, so nothing is rebuilt:
        the new day costs one pass over the entries' dates at its first search, not a new index."""
        twin = copy.copy(self)
        twin.today = today
        twin._masked = None
        return twin

    def _current_mask(self, today: date) -> np.ndarray:
        """Per-document flag: does the owning entry count as current on `today` (cached per day)."""
        masked = self._masked
        if masked is not None and masked[0] == today:
            return masked[1]
        cur = np.fromiter((e.is_current(today) for e in self._entries), dtype=bool, count=len(self._entries))
        mask = cur[self._index.doc_entry] if len(self._entries) else np.zeros(0, dtype=bool)
        self._masked = (today, mask)
        return mask

    def search(
        self, query: str, limit: int = 5, *, include_expired: bool = False, today: date | None = None
    ) -> list[Hit]:
        """Best entries for a question, best first; expired/retired ones only with include_expired (flagged)."""
        if limit <= 0 or not isinstance(query, str):
            return []
        day = today or self.today or date.today()
        q = self.analyzer.analyze(query, MAX_QUERY_CHARS)
        mask = self._current_mask(day)
        allowed = None if include_expired or mask.all() else mask
        # Several phrasings of one entry can fill the candidate list, so ask for extra.
        k = max(self._index.params.candidates, limit * 4)
        docs, fused, conf, _ = self._index.search_docs(q, allowed, k)
        hits: list[Hit] = []
        seen: set[int] = set()
        for d, s, c in zip(docs.tolist(), fused.tolist(), conf.tolist(), strict=True):
            ei = int(self._index.doc_entry[d])
            if ei in seen:
                continue
            seen.add(ei)
            hits.append(Hit(self._entries[ei], float(s), float(c), self._texts[d], expired=not bool(mask[d])))
            if len(hits) >= limit:
                break
        return hits

    def decide(self, query: str, limit: int = 5, *, today: date | None = None) -> Decision:
        """Answer when the best current hit is confident and unambiguous, suggest when plausible, else fall back."""
        day = today or self.today or date.today()
        q = self.analyzer.analyze(query, MAX_QUERY_CHARS) if isinstance(query, str) else None
        if q is None or not q.tokens:
            return Decision("fallback", [], "问题为空或只有语气词，无法检索")
        everything = self.search(query, limit * 2, include_expired=True, today=day)
        hits = [h for h in everything if not h.expired][:limit]
        expired = [h for h in everything if h.expired and h.confidence >= self.suggest_threshold]
        if len(hits) < limit and len(everything) > len(hits):
            # Expired phrasings crowded the candidates out; ask again among current entries only.
            hits = self.search(query, limit, today=day)
        best = hits[0] if hits else None
        if best is None or best.confidence < self.suggest_threshold:
            reason = "未找到足够相关的条目"
            if expired:
                reason += f"；相关政策 “{expired[0].entry.question}” 已过期或下线"
            return Decision("fallback", hits[:0] if best is None else [], reason, expired, hits)
        suggestions = [h for h in hits if h.confidence >= self.suggest_threshold]
        if best.confidence >= self.answer_threshold and len(set(q.tokens)) < self.min_answer_tokens:
            # One keyword ("融资", "营业执照") matches many entries equally well: offer choices instead.
            return Decision("suggest", suggestions, "问题太短，只有一个关键词，先给出几个可能的问题", expired, hits)
        if expired and expired[0].confidence > best.confidence:
            # The question is about an expired policy more than about any current entry: say so rather
            # than answer with the nearest current one.
            return Decision(
                "suggest",
                suggestions,
                f"最相关的政策 “{expired[0].entry.question}” 已过期或下线（置信度 {expired[0].confidence:.2f}）",
                expired,
                hits,
            )
        if best.confidence >= self.answer_threshold:
            runner = hits[1] if len(hits) > 1 else None
            if runner is not None and best.confidence - runner.confidence < self.ambiguity_margin:
                return Decision(
                    "suggest",
                    suggestions,
                    f"前两条置信度接近（{best.confidence:.2f} / {runner.confidence:.2f}）",
                    expired,
                    hits,
                )
            return Decision(
                "answer",
                hits,
                f"置信度 {best.confidence:.2f} ≥ 回答阈值 {self.answer_threshold:.2f}",
                expired,
                hits,
            )
        return Decision(
            "suggest", suggestions, f"置信度 {best.confidence:.2f} 介于推荐阈值与回答阈值之间", expired, hits
        )
