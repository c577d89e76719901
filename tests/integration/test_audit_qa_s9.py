"""Audit trail completeness and secret hygiene (QA pass 9): what changed is in the audit log, and no secret,
token or password reaches the logs, the audit rows or an error page."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from wxapp_backend.logs import configure_logging
from wxapp_backend.wechat.client import WeChatAPIError, build_api, code_to_session


@contextmanager
def captured_logs(state, level: str = "DEBUG") -> Iterator[io.StringIO]:
    """The application's own log handler (filters and JSON format as in production), writing to a buffer."""
    buf, stderr = io.StringIO(), sys.stderr
    sys.stderr = buf  # configure_logging binds the handler to the sys.stderr of the moment
    try:
        configure_logging(level, True, state.settings.secret_values())
    finally:
        sys.stderr = stderr
    try:
        yield buf
    finally:
        configure_logging(state.settings.log_level, state.settings.log_json, state.settings.secret_values())


def test_debug_logs_never_carry_the_access_token_or_the_login_code(app_ctx, standin):
    """LOG_LEVEL=DEBUG makes urllib3 log every URL it calls, and WeChat takes the access token in the query
    string (jscode2session the secret and the one-time login code): the token was written out in full."""
    state = app_ctx.extensions["wxapp"]
    with captured_logs(state) as buf:
        wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda _s: None)
        wxa.send_text("o-user-1", "您好")
        token = wxa.access_token()
        standin.fail_next("/cgi-bin/message/custom/send", 45015)  # a failing call logs its URL too
        try:
            wxa.send_text("o-user-1", "您好")
        except WeChatAPIError:
            pass
        answer = code_to_session(state.wechat_http, state.settings.wxa_appid, state.settings.wxa_secret,
                                 "code-for-log-check")
    out = buf.getvalue()
    assert "/cgi-bin/message/custom/send" in out  # the URLs were logged: the check below means something
    assert token not in out
    assert "code-for-log-check" not in out
    assert state.settings.wxa_secret not in out
    assert answer["session_key"] not in out
    assert "access_token=***" in out
