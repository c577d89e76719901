"""Dedup of WeChat pushes: one handler run per message, identical replies to retries, across processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from handlers import Router, Text
from wxapp_backend import create_app
from wxapp_backend.config import Settings
from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
from wxapp_backend.wechat.dedup import Dedup
from wxapp_backend.wechat.pipeline import account_from_settings, user_cache_key

ROOT = Path(__file__).resolve().parents[2]
TOKEN, KEY, APPID = "dedup-token", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxdedup0000000001"
COUNTER = "test:dedup:handler_runs"


def counting_router(delay: float = 0.0, crash_first: bool = False) -> Router:
    """A router whose handler counts its runs in Redis (visible across processes)."""
    r = Router()
    crashed = threading.Event()
    r.text("固定", answer=Text("固定的回答"))  # stored with the claim when the user is known

    @r.default
    def handler(ctx):
        ctx.redis.incr(COUNTER)
        if crash_first and not crashed.is_set():
            crashed.set()
            raise RuntimeError("boom")
        time.sleep(delay)
        return Text(f"第{ctx.redis.get(COUNTER).decode()}次处理：{ctx.text}")

    return r


def gunicorn_app():
    """The gunicorn entry point of the multi-process test (settings from the environment)."""
    delay = float(os.environ.get("DEDUP_DELAY", "0.3"))
    return create_app(Settings.from_env().with_overrides(extra={"wechat_router": counting_router(delay)}))


def _app(settings, **extra):
    return create_app(settings.with_overrides(wechat_token=TOKEN, wechat_aes_key=KEY, wechat_appid=APPID,
                                              extra={"wechat_router": counting_router(**extra)}))


def _push(application, msg_id="7001", text="同一条消息"):
    acct = account_from_settings(application.extensions["wxapp"].settings, "oa")
    plain = make_push(acct, "oDedupUser", text=text, msg_id=msg_id)
    return acct, plain


def _send(application, acct, plain):
    # Each try is signed afresh (new nonce), as WeChat's retries are.
    args, body = seal_push(acct, plain)
    return application.test_client().post("/wechat?" + urlencode(args), data=body)


def test_same_message_three_times_runs_once_identical_replies(app, settings, redis_client):
    a = _app(settings)
    acct, plain = _push(a)
    bodies = [_send(a, acct, plain).get_data() for _ in range(3)]
    assert int(redis_client.get(COUNTER)) == 1
    assert bodies[0] == bodies[1] == bodies[2] and b"<Encrypt>" in bodies[0]


def test_concurrent_retries_wait_for_the_first_answer(app, settings, redis_client):
    a = _app(settings, delay=0.3)
    acct, plain = _push(a, msg_id="7002")
    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(lambda _: _send(a, acct, plain).get_data(), range(3)))
    assert int(redis_client.get(COUNTER)) == 1
    assert bodies[0] == bodies[1] == bodies[2] != b"success"


def test_events_dedup_by_sender_time_and_event(app, settings, redis_client):
    a = _app(settings)
    acct = account_from_settings(a.extensions["wxapp"].settings, "oa")
    now = int(time.time())
    click = make_push(acct, "oDedupUser", event="CLICK", event_key="MENU_X", now=now)
    other = make_push(acct, "oDedupUser", event="CLICK", event_key="MENU_Y", now=now)
    _send(a, acct, click), _send(a, acct, click), _send(a, acct, other)
    assert int(redis_client.get(COUNTER)) == 2


def test_crashed_first_try_lets_the_retry_run(app, settings, redis_client):
    a = _app(settings, crash_first=True)
    acct, plain = _push(a, msg_id="7003")
    first = _send(a, acct, plain)
    assert first.status_code == 200  # an apology, never a 500
    second = _send(a, acct, plain)
    third = _send(a, acct, plain)
    assert int(redis_client.get(COUNTER)) == 2
    assert second.get_data() == third.get_data()


def test_processing_claim_expires(redis_client):
    d = Dedup(redis_client, processing_ttl=1.0)
    claim, _ = d.claim("test:dedup:k1")
    assert claim.state == "new"
    assert d.claim("test:dedup:k1")[0].state == "processing"
    time.sleep(1.1)  # a try that died without releasing does not poison the key
    assert d.claim("test:dedup:k1")[0].state == "new"
    assert not d.finish(claim, b"late")  # the stale owner cannot overwrite the new owner's record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["gthread", "wxapp_backend.http_worker.BalancedThreadWorker"])
def test_dedup_across_three_gunicorn_workers(app, settings, redis_client, tmp_path, worker):
    """Stock gthread with a connection per try; and the project's worker over keep-alive connections, where pushes
    are answered in the poller's thread (http_worker's inline path: a stored or fixed answer there, a handler's
    answer finished on a pool thread)."""
    state = app.extensions["wxapp"]
    port = _free_port()
    env = {**os.environ, "APP_ENV": "testing", "INSTANCE_PATH": str(settings.instance_path),
           "SECRET_KEY": settings.secret_key, "DATABASE_URL": settings.resolved_database_url,
           "REDIS_URL": state.redis_url, "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": KEY, "WECHAT_APPID": APPID,
           "WECHAT_API_BASE": settings.wechat_api_base, "LOG_LEVEL": "WARNING", "DEDUP_DELAY": "0.3",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "gunicorn", "-w", "3", "-k", worker, "--threads", "4", "-b",
           f"127.0.0.1:{port}", "--pythonpath", f"{ROOT},{ROOT / 'tests' / 'integration'}",
           "test_dedup:gunicorn_app()"]
    log_path = tmp_path / "gunicorn.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _healthy(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log_path.read_text())
            time.sleep(0.2)
        acct = account_from_settings(settings.with_overrides(wechat_token=TOKEN, wechat_aes_key=KEY,
                                                             wechat_appid=APPID), "oa")
        plain = make_push(acct, "oDedupUser", text="多进程", msg_id="8001")

        sessions = [requests.Session() for _ in range(3)]

        def send(i):
            args, body = seal_push(acct, plain)
            if worker == "gthread":  # a fresh connection per try, so gunicorn spreads them over its workers
                return requests.post(f"{base}/wechat?{urlencode(args)}", data=body, timeout=10,
                                     headers={"Connection": "close"})
            return sessions[i].post(f"{base}/wechat?{urlencode(args)}", data=body, timeout=10)

        with ThreadPoolExecutor(3) as pool:
            concurrent = list(pool.map(send, range(3)))
        later = [send(i) for i in range(3)]
        bodies = [r.content for r in concurrent + later]
        assert all(r.status_code == 200 for r in concurrent + later)
        assert int(redis_client.get(COUNTER)) == 1
        assert len(set(bodies)) == 1 and b"<Encrypt>" in bodies[0]
        # A fixed answer, stored by whichever worker's claim comes first: every try gets those bytes.
        redis_client.set(user_cache_key("oa", "oDedupFixed"), "1:0", ex=60)  # a known user
        plain = make_push(acct, "oDedupFixed", text="固定", msg_id="8002")
        with ThreadPoolExecutor(3) as pool:
            fixed = [r.content for r in pool.map(send, range(3))] + [send(i).content for i in range(3)]
        assert len(set(fixed)) == 1 and open_reply(acct, fixed[0].decode())["Content"] == "固定的回答"
        assert int(redis_client.get(COUNTER)) == 1  # no handler ran for it
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


# ------------------------------------------------------------------------------------ the hot path's Redis use


def test_finish_nowait_stores_the_answer_and_keeps_the_connection_in_step(redis_client):
    d = Dedup(redis_client, processing_ttl=5.0)
    for i in range(30):
        # Every claim reads its own reply: were a finish's reply left unread (no REPLY SKIP), the next claim
        # on this thread's connection would read that integer instead and fail to unpack it.
        claim, more = d.claim(f"test:dedup:nowait:{i}", lambda c, i=i: (c.incr("test:dedup:nowait:n"),
                                                                         c.get("test:dedup:nowait:absent")))
        assert claim.state == "new" and more == [i + 1, None]
        d.finish_nowait(claim, f"answer {i}".encode())
    again, _ = Dedup(redis_client, processing_ttl=5.0).claim("test:dedup:nowait:7")
    assert again.state == "done" and again.body == b"answer 7"
    assert d._skip_supported() is True


def test_finish_nowait_never_overwrites_a_lost_claim(redis_client):
    d = Dedup(redis_client, processing_ttl=1.0)
    stale, _ = d.claim("test:dedup:lost")
    redis_client.delete("test:dedup:lost")  # as if it expired...
    owner, _ = d.claim("test:dedup:lost")  # ...and another try took it over
    d.finish_nowait(stale, b"stale answer")
    d.finish_nowait(owner, b"owner's answer")
    # Those writes wait for no answer: a round trip on the same connection first (Redis runs one connection's
    # commands in order), or the read on another connection may come before them (it did, under load).
    d.claim("test:dedup:lost:in-step")
    assert redis_client.get("test:dedup:lost") == b"D" + b"owner's answer"


def test_claim_survives_a_killed_connection_and_a_lost_reply(redis_client, monkeypatch):
    d = Dedup(redis_client, processing_ttl=5.0)
    d.claim("test:dedup:warm")
    redis_client.client_kill_filter(_type="normal", skipme=True)  # drops this thread's own connection too
    assert d.claim("test:dedup:after-kill")[0].state == "new"
    sock = d._connection()._sock
    if isinstance(sock, socket.socket) and redis_client.connection_pool.connection_kwargs.get("socket_timeout"):
        assert sock.gettimeout() is None  # the new connection's timeout is the kernel's again (no poll per call)
    # The script ran but its reply was lost: the repeat sees our own marker and still owns the message.
    real, calls = d._evalsha, []

    def lose_first_reply(conn, script, keys, args):
        result = real(conn, script, keys, args)
        calls.append(keys[0])
        if len(calls) == 1:
            raise ConnectionError("reply lost")
        return result

    monkeypatch.setattr(d, "_evalsha", lose_first_reply)
    claim, _ = d.claim("test:dedup:lost-reply")
    assert claim.state == "new" and calls == ["test:dedup:lost-reply"] * 2
    # Negative control: somebody else's marker is "processing", not ours.
    assert Dedup(redis_client, processing_ttl=5.0).claim("test:dedup:lost-reply")[0].state == "processing"


def test_each_thread_and_each_forked_process_gets_its_own_connection(redis_client):
    d = Dedup(redis_client, processing_ttl=5.0)
    mine = d._connection()
    assert d._connection() is mine
    other: list = []
    t = threading.Thread(target=lambda: other.append(d._connection()))
    t.start(), t.join()
    assert other[0] is not mine
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not write on its parent's socket
        os.write(w, b"1" if d._connection() is not mine else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert d._connection() is mine


def _fake_redis_server(refuse_skip: bool):
    """A one-connection RESP server: PING, ECHO, and CLIENT REPLY SKIP refused or honoured."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        buf, skip = b"", False
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while buf.startswith(b"*") and b"\r\n" in buf:
                n = int(buf[1:buf.index(b"\r\n")])
                parts, rest = [], buf[buf.index(b"\r\n") + 2:]
                try:
                    for _ in range(n):
                        size = int(rest[1:rest.index(b"\r\n")])
                        start = rest.index(b"\r\n") + 2
                        if len(rest) < start + size + 2:
                            raise ValueError
                        parts.append(rest[start:start + size])
                        rest = rest[start + size + 2:]
                except ValueError:
                    break
                buf = rest
                cmd = parts[0].upper()
                if cmd == b"CLIENT" and parts[1].upper() != b"REPLY":  # CLIENT SETINFO on connect
                    conn.sendall(b"+OK\r\n")
                    continue
                if cmd == b"CLIENT":
                    if refuse_skip:
                        conn.sendall(b"-ERR unknown command 'CLIENT'\r\n")
                    else:
                        skip = True
                    continue
                reply = b"+PONG\r\n" if cmd == b"PING" else b"$%d\r\n%s\r\n" % (len(parts[1]), parts[1])
                if skip:
                    skip = False
                else:
                    conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


@pytest.mark.parametrize("refuse", [True, False])
def test_reply_skip_probe(refuse):
    import redis

    from wxapp_backend.wechat.dedup import _probe_reply_skip

    port = _fake_redis_server(refuse)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    assert _probe_reply_skip(client) is (not refuse)


def test_a_redis_that_stops_answering_times_out_instead_of_hanging():
    """The thread's own connection leaves its timeout to the kernel (no poll per call): still bounded."""
    import redis

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    conns = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)

            def answer_handshake_only(c=conn):
                while True:
                    data = c.recv(65536)
                    if not data:
                        return
                    if b"CLIENT" in data.upper():  # the connect-time CLIENT SETINFO; nothing else is answered
                        c.sendall(b"+OK\r\n" * data.upper().count(b"CLIENT"))

            threading.Thread(target=answer_handshake_only, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    client = redis.Redis(host="127.0.0.1", port=srv.getsockname()[1], socket_timeout=0.3,
                         socket_connect_timeout=1)
    d = Dedup(client, processing_ttl=5.0)
    started = time.monotonic()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        d.claim("test:dedup:mute")
    assert time.monotonic() - started < 3  # two tries of ~0.3 s each, not a hang
    srv.close()
