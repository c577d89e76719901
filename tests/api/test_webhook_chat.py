"""`flask chat` and the console chat simulator go through the real webhook path."""

from __future__ import annotations

import re

from handlers.bot import GREETING, HUMAN_NOTE, WELCOME
from wxapp_backend.wechat.chat import run_chat


def test_chat_cli_with_throwaway_token_and_standin(app, standin):
    out: list[str] = []
    # The session settings have no WECHAT_TOKEN: the chat makes a throwaway token and AES key.
    run_chat(app, "oa", "chat-test-user", lines=["你好", "/follow", "转人工", "/quit", "不会发送"], echo=out.append,
             standin=standin)
    text = "\n".join(out)
    assert "安全模式" in out[0] and "临时 Token" in out[0]
    assert f"店小二> {GREETING}" in out
    assert any(WELCOME.splitlines()[0] in line for line in out)
    assert "店小二> ［已转接人工客服］" in out
    assert f"店小二> ［客服消息］{HUMAN_NOTE}" in out
    assert "不会发送" not in text


def test_chat_cli_mini_program_replies_come_by_customer_service(app, standin):
    out: list[str] = []
    run_chat(app, "wxa", "chat-test-wxa", lines=["你好"], echo=out.append, standin=standin)
    assert f"店小二> ［客服消息］{GREETING}" in out


def test_chat_cli_inside_the_instance_apps_context_keeps_its_jobs(app, standin):
    """`flask --app wsgi chat` runs inside the instance app's context: the replies that go out as
    customer-service messages must still be queued on the chat session's own queue, which it runs."""
    out: list[str] = []
    queue = app.extensions["wxapp"].queue
    before = len(queue)
    with app.app_context():
        run_chat(app, "wxa", "chat-test-wxa-cli", lines=["你好"], echo=out.append, standin=standin)
    assert f"店小二> ［客服消息］{GREETING}" in out
    assert len(queue) == before  # nothing left behind on the instance's real queue


def test_chat_cli_starts_its_own_standin_for_the_default_api_base(app, settings):
    from wxapp_backend import create_app

    default = create_app(settings.with_overrides(wechat_api_base="https://api.weixin.qq.com"))
    out: list[str] = []
    run_chat(default, "wxa", "chat-test-wxa2", lines=["谢谢"], echo=out.append)
    assert "本地模拟微信接口" in out[0]
    assert any("［客服消息］不客气" in line for line in out)


def test_flask_chat_command_is_registered(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["chat", "--help"])
    assert result.exit_code == 0 and "--account" in result.output


def test_flask_chat_ends_quietly_at_the_end_of_piped_input(app, standin):
    """`echo 你好 | flask --app wsgi chat` answers and exits 0; the end of input used to print Click's English
    "Aborted!" and exit 1, with RQ's per-job log lines between the question and the answer."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["chat"], input="你好\n")
    assert result.exit_code == 0, result.output
    assert "Aborted" not in result.output and "店小二>" in result.output
    assert "Job OK" not in result.output and "default: " not in result.output


def test_console_chat_simulator(client, make_staff, console_login):
    staff = make_staff(role="staff")
    csrf = console_login(staff)
    page = client.get("/console/chat")
    assert page.status_code == 200 and "对话测试" in page.get_data(as_text=True)
    assert "<script>" not in page.get_data(as_text=True)  # CSP: no inline script
    assert client.post("/console/chat", data={"text": "你好"}).status_code == 400  # CSRF
    resp = client.post("/console/chat", data={"text": "你好", "csrf_token": csrf})
    assert resp.status_code == 302
    html = client.get("/console/chat").get_data(as_text=True)
    assert GREETING in html and re.search(r"chat-me.*你好", html, re.S)
    client.post("/console/chat", data={"event": "subscribe", "csrf_token": csrf})
    assert "欢迎关注营商服务中心" in client.get("/console/chat").get_data(as_text=True)


def test_console_chat_needs_staff_role(client, make_staff, console_login):
    console_login(make_staff(role="dept"))
    assert client.get("/console/chat").status_code in (302, 403)


def test_mini_program_chat_hands_over_to_the_customer_service_tool(app, settings, standin):
    """人工 in the mini-program chat: the push is answered (sealed, in the account's format) with
    transfer_customer_service, the one passive answer a mini-program chat takes, after the note as a
    customer-service message; plain answers still go by customer-service API only."""
    from wxapp_backend import create_app

    for fmt in ("json", "xml"):
        chat_app = app if fmt == "json" else create_app(settings.with_overrides(wxa_msg_format="xml"))
        out: list[str] = []
        run_chat(chat_app, "wxa", f"chat-wxa-human-{fmt}", lines=["人工", "你好"], echo=out.append, standin=standin)
        assert "店小二> ［已转接人工客服］" in out, (fmt, out)
        assert f"店小二> ［客服消息］{HUMAN_NOTE}" in out
        assert f"店小二> ［客服消息］{GREETING}" in out and f"店小二> {GREETING}" not in out


def test_chat_keeps_routine_log_lines_out_of_the_conversation(app, settings, standin, capsys):
    """`flask chat` at the default LOG_LEVEL printed "access token fetched" and "knowledge base loaded" JSON
    lines between a question and its answer; warnings still show."""
    import logging

    from wxapp_backend import create_app

    chat_app = create_app(settings.with_overrides(log_level="INFO"))
    out: list[str] = []

    def echo(line: str) -> None:
        out.append(line)
        logging.getLogger("wxapp_backend.chat_probe").info("routine-info-line")
        logging.getLogger("wxapp_backend.chat_probe").warning("a-warning-line")

    run_chat(chat_app, "wxa", "chat-test-quiet", lines=["你好"], echo=echo, standin=standin)
    err = capsys.readouterr().err
    assert any("店小二>" in line for line in out)
    assert "a-warning-line" in err and "routine-info-line" not in err


def test_chat_shows_a_refused_and_retried_send_once(app, standin):
    """A customer-service send WeChat refused (a token another stand-in issued: 40001) and the client re-sent
    reached the user once; the chat showed it twice (seen with `flask chat` run a second time)."""
    from wxapp_backend.wechat.chat import KEFU_PATH

    standin.fail_next(KEFU_PATH, 40001)
    out: list[str] = []
    run_chat(app, "wxa", "chat-test-retried", lines=["你好"], echo=out.append, standin=standin)
    assert standin.count(KEFU_PATH) == 2  # the refused send and the one that went through
    assert out.count(f"店小二> ［客服消息］{GREETING}") == 1, out
