"""Pinyin forms of a query as shoppers type them (the traffic of benches and load profiles)."""

from __future__ import annotations


def pinyin_forms(query: str) -> tuple[str, str]:
    """(full pinyin, pinyin initials) of `query`, lower case without spaces (ASCII stays as it is)."""
    from pypinyin import Style, lazy_pinyin  # deferred: only traffic generators need it

    full = "".join(lazy_pinyin(query)).replace(" ", "").lower()
    initials = "".join(lazy_pinyin(query, style=Style.FIRST_LETTER)).replace(" ", "").lower()
    return full, initials


def has_chinese(text: str) -> bool:
    """Whether `text` holds a CJK character (only those have a pinyin form of their own)."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)
