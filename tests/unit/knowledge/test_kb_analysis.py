"""Analysis tests: normalisation, the domain dictionary, synonyms, stop words and the private tokenizer."""

from __future__ import annotations

import threading

import jieba

from knowledge.analysis import (
    SYNONYMS_PATH,
    USERDICT_PATH,
    Analyzer,
    char_ngrams,
    get_analyzer,
    load_words,
)


def test_dictionary_sizes() -> None:
    assert len(set(load_words(USERDICT_PATH))) >= 150
    groups = [
        line for line in SYNONYMS_PATH.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"
    ]
    assert len(groups) >= 60


def test_no_word_in_two_synonym_groups() -> None:
    seen: dict[str, int] = {}
    for n, line in enumerate(SYNONYMS_PATH.read_text(encoding="utf-8").splitlines()):
        if line.startswith("#"):
            continue
        for w in set(line.split()):
            assert w not in seen, f"{w} in lines {seen[w] + 1} and {n + 1}"
            seen[w] = n


def test_normalize_width_case_traditional_emoji_html() -> None:
    a = get_analyzer()
    assert a.normalize("ＡＢＣ１２３") == "abc123"
    assert a.normalize("營業執照怎麼辦理") == "营业执照怎么办理"
    assert a.normalize("你好😀👍🏻 世界") == "你好 世界"
    assert a.normalize("<b>落户</b>") == "落户"
    assert a.normalize("  a \n\t b ") == "a b"
    assert len(a.normalize("落" * 5000, max_chars=200)) == 200


def test_domain_terms_stay_whole() -> None:
    a = get_analyzer()
    for term in ["一网通办", "居住证积分", "专精特新", "统一社会信用代码", "帮办代办", "留抵退税", "信易贷"]:
        assert term in a.segment(a.normalize(f"请问{term}怎么申请")), term
    assert "r字签证" in a.segment(a.normalize("R字签证"))


def test_synonyms_map_to_one_canonical_token() -> None:
    a = get_analyzer()
    assert a.tokens("老外") == a.tokens("外国人") == a.tokens("外籍")
    assert a.tokens("户口") == a.tokens("落户")
    assert a.tokens("扶持资金") == a.tokens("补贴") == a.tokens("奖励")
    assert a.tokens("咋办营业执照") == a.tokens("怎么办执照")


def test_stop_words_removed_question_words_kept() -> None:
    a = get_analyzer()
    assert a.tokens("的了吗呢吧") == []
    assert "哪里" in a.tokens("在哪里办")
    assert "多少钱" in a.tokens("要多少钱")


def test_private_tokenizer_leaves_global_jieba_alone() -> None:
    get_analyzer().warm_up()
    assert "居住证积分" not in jieba.dt.FREQ or jieba.dt.FREQ.get("居住证积分") == 0
    assert "营商通" not in jieba.lcut("营商通")


def test_lazy_thread_safe_initialisation() -> None:
    a = Analyzer()
    seen: list[object] = []

    def work() -> None:
        seen.append(a._get_tokenizer())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in seen}) == 1


def test_char_ngrams() -> None:
    assert char_ngrams("落户", 1, 2) == ["落", "户", "落户"]
    assert char_ngrams("a", 1, 3) == ["a"]
    assert char_ngrams("", 1, 2) == []


def test_robust_inputs_do_not_crash() -> None:
    a = get_analyzer()
    for text in [
        "",
        "   ",
        "😀😀",
        "x" * 5000,
        "'; DROP TABLE kb;--",
        "<script>alert(1)</script>",
        "Hello World",
    ]:
        res = a.analyze(text, 200)
        assert isinstance(res.tokens, tuple)
