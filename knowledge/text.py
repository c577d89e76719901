"""Text hygiene shared by the knowledge-base files and the application's forms."""

from __future__ import annotations

import unicodedata


def strip_invisible(value: str) -> str:
    """`value` without invisible format characters (Unicode category Cf: zero-width space and joiners U+200B-U+200D,
    the word joiner U+2060, a stray BOM U+FEFF, bidi marks and overrides, the soft hyphen). Pasted from a web page,
    Word or a chat they show nothing, yet made “上海甲科技” and “上海甲\u200b科技” two names: a second file of the same
    enterprise, and a name typed later that matched nothing. What an emoji is made of stays: a zero-width joiner
    between two pictographs (👨‍👩‍👧) and the tag characters of a flag (🏴 and its tags)."""
    if value.isascii() or value.isprintable():  # no format character is printable: the common case, at C speed
        return value
    out: list[str] = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if unicodedata.category(ch) != "Cf":
            out.append(ch)
        elif ch == "\u200d" and out and i < last and unicodedata.category(out[-1]) in {"So", "Sk", "Mn"} \
                and unicodedata.category(value[i + 1]) == "So":
            out.append(ch)
        elif "\U000e0020" <= ch <= "\U000e007f" and out and (out[-1] == "\U0001f3f4" or "\U000e0020" <= out[-1] <= "\U000e007f"):
            out.append(ch)
    return "".join(out)


__all__ = ["strip_invisible"]
