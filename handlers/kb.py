"""Knowledge-base answers for free text: the one function the knowledge-base integration replaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .replies import Reply, Text

if TYPE_CHECKING:
    from .state import ConversationState

PLACEHOLDER = (
    "您的问题小二已经收到啦～\n"
    "政策问答知识库正在上线中…暂时还不能自动回答。\n"
    "您可以：\n"
    "· 回复“人工”，由工作人员为您解答；\n"
    "· 回复“我要反映”，把问题留给我们，办理进度会及时告诉您。"
)


def answer(text: str, state: ConversationState) -> Reply | str:
    """Answer `text` from the knowledge base; `state` is the user's conversation state (ctx.state).

    Until the knowledge-base integration lands this says so and offers 人工 and 我要反映.
    """
    return Text(PLACEHOLDER)
