"""Tappable mini-program links in the WeChat chat's text replies.

A WeChat text message (a passive reply, a customer-service text) may carry
`<a data-miniprogram-appid="APPID" data-miniprogram-path="pages/...">text</a>`: tapping the text opens that page of
the mini-program (the Official Account must be linked to the mini-program in its admin console; an older client
shows the text alone). The replies name the pages as 小程序“白领活动”, 在“我的报名”: with the mini-program's appid
configured (WXA_APPID) those names become links. POST /api/v1/chat is read inside the mini-program, which shows no
HTML: its replies never pass here.
"""

from __future__ import annotations

import re
from html import escape

from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from .replies import Many, Reply, Text, Transfer

# Page name as the replies quote it -> the mini-program's page path. Change them here (or mutate the dict at start-up)
# if the mini-program's pages live elsewhere. pages/activity/detail?id=N is the page the activity notices open.
MINI_PAGES: dict[str, str] = {
    "白领活动": "pages/activity/list",
    "我的报名": "pages/me/index",
}

# One activity's own page (the path the activity notices open): where a reply about that activity alone (picked from
# the chat's list) sends its 小程序“白领活动”, instead of the list the user just came from.
ACTIVITY_DETAIL_PAGE = "pages/activity/detail?id={id}"


def activity_page(activity_id: int) -> dict[str, str]:
    """The page names of a reply about one activity, for `mini_links(pages=...)`."""
    return {"白领活动": ACTIVITY_DETAIL_PAGE.format(id=int(activity_id))}


# WeChat cuts a text at 2,048 bytes (WECHAT.md): a cut inside a link's markup shows the user raw HTML, so a link is
# added only while the whole text still fits.
TEXT_MAX_BYTES = REPLY_TEXT_MAX_BYTES

# A page named where it is opened (“小程序“白领活动””, “请到“我的报名””, “打开“我的报名””), not a word to reply
# (“回复“我的报名”查看”). The link's text is the name as written, 小程序 included.
_NAMED = re.compile(r"小程序“(" + "|".join(map(re.escape, MINI_PAGES)) + r")”|(?<=[在到开])“("
                    + "|".join(map(re.escape, MINI_PAGES)) + r")”")


def anchor(appid: str, path: str, text: str) -> str:
    return (f'<a data-miniprogram-appid="{escape(appid)}" data-miniprogram-path="{escape(path)}">'
            f"{escape(text, quote=False)}</a>")


def mini_links(text: str, appid: str, max_bytes: int = TEXT_MAX_BYTES, pages: dict[str, str] | None = None) -> str:
    """`text` with the mini-program pages it names made links to them (first ones first, while it fits in
    `max_bytes`); unchanged without an appid, or when it names none. `pages` puts other paths for some names (one
    activity's page for “白领活动”)."""
    if not appid or not text or "“" not in text or "<a " in text:
        return text
    size = len(text.encode("utf-8"))
    out, at = [], 0
    for m in _NAMED.finditer(text):
        name = m.group(1) or m.group(2)
        path = (pages or {}).get(name) or MINI_PAGES.get(name)
        if not path:
            continue
        link = anchor(appid, path, m.group(0))
        grow = len(link.encode("utf-8")) - len(m.group(0).encode("utf-8"))
        if size + grow > max_bytes:
            break
        size += grow
        out += [text[at:m.start()], link]
        at = m.end()
    return "".join(out) + text[at:] if out else text


def with_links(reply: Reply | None, appid: str, pages: dict[str, str] | None = None) -> Reply | None:
    """A reply's texts with their mini-program links (`mini_links`)."""
    if not appid or reply is None:
        return reply
    if isinstance(reply, Text):
        linked = mini_links(reply.text, appid, pages=pages)
        return reply if linked == reply.text else Text(linked)
    if isinstance(reply, Transfer) and reply.note:
        linked = mini_links(reply.note, appid, pages=pages)
        return reply if linked == reply.note else Transfer(linked)
    if isinstance(reply, Many):
        return Many(tuple(with_links(r, appid, pages) or r for r in reply.replies))
    return reply
