"""What a handler may answer: text, news (图文), image, a transfer to human customer service, or nothing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Text:
    """A plain text reply."""

    text: str


@dataclass(frozen=True)
class Article:
    """One 图文 item."""

    title: str
    description: str = ""
    url: str = ""
    pic_url: str = ""


@dataclass(frozen=True)
class News:
    """A 图文 reply; a passive answer to a user message shows only the first article."""

    articles: tuple[Article, ...]


@dataclass(frozen=True)
class Image:
    """An image reply with an uploaded media_id."""

    media_id: str


@dataclass(frozen=True)
class Transfer:
    """Hand the conversation to human customer service (OA); `note` is sent to the user as well."""

    note: str = ""


@dataclass(frozen=True)
class Many:
    """A first reply answered passively and further ones sent through the customer-service API."""

    replies: tuple[Reply, ...] = field(default_factory=tuple)


Reply = Text | News | Image | Transfer | Many


def as_reply(value: object) -> Reply | None:
    """Accept what handlers return: a Reply, a plain str (text), or None/"" (nothing to say)."""
    if value is None:
        return None
    if isinstance(value, str):
        return Text(value) if value.strip() else None
    if isinstance(value, Text | News | Image | Transfer | Many):
        return value
    raise TypeError(f"a handler returned {type(value).__name__}; return str, a handlers.replies type or None")
