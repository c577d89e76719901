"""Chinese text analysis: normalisation, jieba segmentation with a domain dictionary, synonyms, stop words."""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jieba

DICT_DIR = Path(__file__).resolve().parent / "dicts"
USERDICT_PATH = DICT_DIR / "userdict.txt"
SYNONYMS_PATH = DICT_DIR / "synonyms.txt"
STOPWORDS_PATH = DICT_DIR / "stopwords.txt"
T2S_PATH = DICT_DIR / "t2s.txt"

# Queries longer than this are chat pastes (a whole notice, a log); the head carries the question.
MAX_QUERY_CHARS = 200

_EMOJI_RE = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, symbols & pictographs ext.
    "\u2600-\u27bf"  # misc symbols, dingbats
    "\u2b00-\u2bff"  # arrows/stars used as emoji
    "\ufe00-\ufe0f"  # variation selectors
    "\u200b-\u200f\u2060\ufeff"  # zero-width characters
    "\U000e0000-\U000e007f"  # tag characters (flag sequences)
    "]+"
)
_TAG_RE = re.compile(r"<[^<>]{0,200}>")
_SPACE_RE = re.compile(r"\s+")
# Three or more Chinese characters each standing alone between spaces (“外 籍 人 才”): typed spaced out, meant as one
# phrase. Joined back so that jieba sees words; a space between two words (“一网通办 注册”) is left as it is.
_SPACED_HAN_RE = re.compile(r"(?<![\u4e00-\u9fff])[\u4e00-\u9fff](?: [\u4e00-\u9fff](?![\u4e00-\u9fff])){2,}")
_WORDLIKE_RE = re.compile(r"\w", re.UNICODE)
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")
# Characters that carry no meaning in char n-grams: punctuation, symbols, spaces.
_NONWORD_RE = re.compile(r"[^\w]+|_+", re.UNICODE)


def _read_lines(path: Path) -> Iterable[str]:
    """Non-empty, non-comment lines of a UTF-8 dictionary file."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def load_t2s(path: Path = T2S_PATH) -> dict[int, str]:
    """Traditional->simplified translation table for str.translate."""
    table: dict[int, str] = {}
    for line in _read_lines(path):
        for pair in line.split():
            if len(pair) == 2 and pair[0] != pair[1]:
                table[ord(pair[0])] = pair[1]
    return table


def load_synonyms(path: Path = SYNONYMS_PATH) -> dict[str, str]:
    """Word -> canonical word; the first word of each line is the canonical one, first mapping wins."""
    mapping: dict[str, str] = {}
    for line in _read_lines(path):
        words = [w.lower() for w in line.split()]
        if not words:
            continue
        canon = words[0]
        for w in words:
            mapping.setdefault(w, canon)
    return mapping


def load_words(path: Path) -> list[str]:
    """First column of each line (jieba user-dictionary and stop-word format)."""
    return [line.split()[0].lower() for line in _read_lines(path)]


@dataclass(frozen=True, slots=True)
class Analysis:
    """The analysed form of one text: normalised string, retrieval tokens, and the string char n-grams use."""

    normalized: str
    tokens: tuple[str, ...]
    chars: str = field(default="")


class Analyzer:
    """Turns raw chat or FAQ text into canonical tokens; one instance is shared and safe across threads."""

    def __init__(
        self,
        userdict: Path | None = USERDICT_PATH,
        synonyms: Path | None = SYNONYMS_PATH,
        stopwords: Path | None = STOPWORDS_PATH,
        t2s: Path | None = T2S_PATH,
        hmm: bool = True,
    ) -> None:
        self._userdict_path = userdict
        self.synonyms: dict[str, str] = load_synonyms(synonyms) if synonyms else {}
        self.stopwords: frozenset[str] = frozenset(load_words(stopwords)) if stopwords else frozenset()
        self.t2s: dict[int, str] = load_t2s(t2s) if t2s else {}
        self.hmm = hmm
        self._tokenizer: jieba.Tokenizer | None = None
        self._lock = threading.Lock()

    # -- segmentation -------------------------------------------------------------

    def _get_tokenizer(self) -> jieba.Tokenizer:
        """A private jieba tokenizer, built on first use (double-checked so threads build it once)."""
        tk = self._tokenizer
        if tk is not None:
            return tk
        with self._lock:
            if self._tokenizer is None:
                tk = jieba.Tokenizer()
                tk.initialize()
                words: list[str] = []
                if self._userdict_path:
                    words.extend(load_words(self._userdict_path))
                # Multi-character synonyms must survive segmentation as one token to be mapped.
                words.extend(w for w in self.synonyms if len(w) > 1)
                for w in dict.fromkeys(words):
                    tk.add_word(w)
                self._tokenizer = tk
            return self._tokenizer

    def warm_up(self) -> None:
        """Load the dictionaries now rather than on the first query."""
        self._get_tokenizer()

    # -- public helpers ---------------------------------------------------------------

    def normalize(self, text: str, max_chars: int | None = None) -> str:
        """NFKC (full-width -> half-width), lower-case, traditional -> simplified, no emoji/HTML tags, one space."""
        if not text:
            return ""
        if max_chars is not None and len(text) > max_chars * 4:
            # Cheap pre-cut so a 1 MB paste never reaches the regexes below.
            text = text[: max_chars * 4]
        t = unicodedata.normalize("NFKC", text).lower()
        if self.t2s:
            t = t.translate(self.t2s)
        t = _TAG_RE.sub(" ", t)
        t = _EMOJI_RE.sub(" ", t)
        t = _SPACE_RE.sub(" ", t).strip()
        if " " in t:
            t = _SPACED_HAN_RE.sub(lambda m: m.group().replace(" ", ""), t)
        if max_chars is not None and len(t) > max_chars:
            t = t[:max_chars]
        return t

    def segment(self, normalized: str) -> list[str]:
        """jieba words of an already normalised text, punctuation and spaces dropped, nothing else changed."""
        if not normalized:
            return []
        tk = self._get_tokenizer()
        return [w for w in tk.lcut(normalized, HMM=self.hmm) if _WORDLIKE_RE.search(w)]

    def canonical(self, words: Iterable[str]) -> list[str]:
        """Drop stop words and map every synonym to its group's canonical word."""
        syn = self.synonyms
        stop = self.stopwords
        return [syn.get(w, w) for w in words if w not in stop]

    def analyze(self, text: str, max_chars: int | None = None) -> Analysis:
        """Full pipeline for one text: normalise, segment, canonicalise; `chars` joins the kept tokens."""
        norm = self.normalize(text, max_chars)
        words = self.segment(norm)
        toks = self.canonical(words)
        # Char n-grams see the canonical words too, so 咋办 and 怎么办 share bigrams.
        chars = _NONWORD_RE.sub("", "".join(toks))
        return Analysis(norm, tuple(toks), chars)

    def tokens(self, text: str, max_chars: int | None = None) -> list[str]:
        """Canonical retrieval tokens of a raw text."""
        return list(self.analyze(text, max_chars).tokens)


def char_ngrams(chars: str, n_min: int = 1, n_max: int = 2) -> list[str]:
    """All character n-grams of lengths n_min..n_max, in order."""
    out: list[str] = []
    L = len(chars)
    for n in range(n_min, n_max + 1):
        if L < n:
            break
        out.extend(chars[i : i + n] for i in range(L - n + 1))
    return out


def surface(normalized: str) -> str:
    """A normalised text without punctuation and spaces, its stop words and synonyms as written."""
    return _NONWORD_RE.sub("", normalized)


def has_han(text: str) -> bool:
    """True if the text contains at least one CJK ideograph."""
    return bool(_HAN_RE.search(text))


_default: Analyzer | None = None
_default_lock = threading.Lock()


def get_analyzer() -> Analyzer:
    """The process-wide default analyzer (created once, lazily, thread-safe)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Analyzer()
    return _default
