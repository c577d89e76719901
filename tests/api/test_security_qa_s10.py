"""Security review, session 10: defects found attacking the running service, each test failing without its fix."""

from __future__ import annotations

import pytest

from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion


@pytest.mark.parametrize(("said", "kept"), [
    ("我的手机 138-0013-8000 麻烦回电", "138-0013-8000"),
    ("电话 138 0013 8000 找张经理", "138 0013 8000"),
    ("联系我 +86 13800138000 谢谢", "13800138000"),
    ("联系我 8613800138000 谢谢", "8613800138000"),
    ("手机号１３８００１３８０００请回电", "１３８００１３８０００"),
    ("身份证号１１０１０５１９９００１０１１２３４怎么查社保", "１１０１０５１９９００１０１１２３４"),
])
def test_phone_numbers_written_as_people_type_them_are_not_kept_in_the_chat_log(client, db, said, kept):
    """The chat log and the staff's unanswered queue hide the middle of a mobile or ID-card number, but only of
    eleven (eighteen) ASCII digits in a row: the same number with the spaces or dashes people group it with, with
    the country code in front, or in the full-width digits a Chinese input method types, was kept as typed."""
    resp = client.post("/api/v1/chat", json={"text": said})
    assert resp.status_code == 200, resp.get_json()
    stored = [t.question for t in db.query(ChatTurn)] + [q.text for q in db.query(UnansweredQuestion)]
    assert stored, "the question was not logged at all"
    for text in stored:
        assert kept not in text, text
        assert "****" in text, text


def test_a_scripted_staff_login_can_be_ended_by_its_holder(client, make_staff):
    """POST /api/v1/staff/login hands a script a bearer token good for 12 hours, and nothing could end it but a
    password change or an admin disabling the account: a token left in a script or a shell history stayed
    usable. The mini-program's token has its logout; the staff token now has one too."""
    staff = make_staff(role="dept")
    token = client.post("/api/v1/staff/login", json={"username": staff.username,
                                                      "password": staff.plain_password}).get_json()["token"]
    other = client.post("/api/v1/staff/login", json={"username": staff.username,
                                                      "password": staff.plain_password}).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/staff/grids", headers=headers).status_code == 200
    resp = client.post("/api/v1/staff/logout", headers=headers, json={})
    assert resp.status_code == 200, resp.get_json()
    gone = client.get("/api/v1/staff/grids", headers=headers)
    assert gone.status_code == 401 and gone.get_json()["error"] == "invalid_token"
    # Only the token that logged out: the same account's other script keeps working.
    assert client.get("/api/v1/staff/grids", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_an_unsatisfiable_range_on_an_appeal_photo_is_answered_in_chinese(client, make_user, user_token, make_staff,
                                                                          console_login):
    """Photos are sent with Range support, and a range past the end of the file is a 416, which the error handlers
    did not know: the mini-program got {"error": "error", "message": "The server cannot provide the requested
    range."} and the console page said the same in English."""
    import base64

    headers = user_token(make_user())
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 100).decode()
    appeal = client.post("/api/v1/appeals", headers=headers, json={
        "content": "楼道里的灯坏了好几天", "contact_name": "张三", "contact_phone": "13800138000", "images": [png]})
    assert appeal.status_code == 201, appeal.get_json()
    appeal_id, name = appeal.get_json()["id"], appeal.get_json()["images"][0]
    past_the_end = {"Range": "bytes=99999-"}
    resp = client.get(f"/api/v1/appeals/{appeal_id}/images/{name}", headers={**headers, **past_the_end})
    assert resp.status_code == 416
    body = resp.get_json()
    assert body["error"] == "range_not_satisfiable" and "range" not in body["message"].lower()
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body["message"]), body
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/appeals/{appeal_id}/images/{name}", headers=past_the_end)
    assert page.status_code == 416
    assert "requested range" not in page.get_data(as_text=True)


def test_appeal_photos_in_the_console_are_not_kept_in_the_browser_cache(client, make_user, user_token, make_staff,
                                                                        console_login):
    """Console pages are sent with Cache-Control: no-store (an office PC is shared), but an appeal's photo (a
    business licence, an ID card, someone's shop front) went out with send_file's no-cache, which lets the
    browser keep it on disk: the console's header was only a default."""
    import base64

    headers = user_token(make_user())
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 100).decode()
    appeal = client.post("/api/v1/appeals", headers=headers, json={
        "content": "营业执照年检的问题想咨询", "contact_name": "张三", "contact_phone": "13800138000", "images": [png]})
    assert appeal.status_code == 201, appeal.get_json()
    console_login(make_staff(role="staff"))
    resp = client.get(f"/console/appeals/{appeal.get_json()['id']}/images/{appeal.get_json()['images'][0]}")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_database_error_logs_no_appeal_text_or_phone_number(app, client, make_user, user_token):
    """A write the database refuses (SQLite's “database is locked” under load, a PostgreSQL deadlock or a dropped
    connection) is a 500 whose traceback goes to the log, and SQLAlchemy's error text carries every bound value:
    the enterprise's whole description and phone number were written to the logs (and to RQ's failed-job
    record, shown on the jobs page, when it happens in a job)."""
    import sqlite3

    from sqlalchemy import event

    from tests.integration.test_audit_qa_s9 import captured_logs

    state = app.extensions["wxapp"]
    engine = state.db.engine

    def locked(cursor, statement, parameters, context):
        if statement.lstrip().upper().startswith("INSERT INTO APPEALS"):
            raise sqlite3.OperationalError("database is locked")

    headers = user_token(make_user())
    event.listen(engine, "do_execute", locked)
    try:
        with captured_logs(state, "INFO") as buf:
            resp = client.post("/api/v1/appeals", headers=headers, json={
                "content": "仓库漏水严重请尽快处理", "contact_name": "王小二", "contact_phone": "13912345678"})
    finally:
        event.remove(engine, "do_execute", locked)
    out = buf.getvalue()
    assert resp.status_code == 500 and "database is locked" in out  # the traceback was logged
    for value in ("仓库漏水严重请尽快处理", "王小二", "13912345678"):
        assert value not in out, value


def test_wrong_link_codes_sent_at_once_still_stop_at_the_limit(app, app_ctx, make_user):
    """“绑定 <6 digits>” links the sender's WeChat to a staff member (their test notices and 办不成事 alerts go
    there), so wrong codes are limited to LINK_TRIES per sender. The count was read, then the code tried, then
    the count raised: guesses sent together (the chat answers each message on its own thread) all read the
    count before any raised it, and got through however many there were. Here each guess arrives while the
    previous one is being tried."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast

    r = app.extensions["wxapp"].redis
    user = make_user()
    tried: list[str] = []

    class Concurrent:
        """The real Redis, but the next guess comes in while a code is being looked up."""

        def __init__(self, session) -> None:
            self.session = session

        def __getattr__(self, name):
            return getattr(r, name)

        def getdel(self, key):
            tried.append(key)
            if len(tried) < 3 * broadcast.LINK_TRIES:
                broadcast.redeem_link_code(self.session, self, f"{100000 + len(tried)}", user.id)
            return r.getdel(key)

    with session_scope() as s:
        answer = broadcast.redeem_link_code(s, Concurrent(s), "999999", user.id)
    assert isinstance(answer, str)
    assert len(tried) == broadcast.LINK_TRIES, f"{len(tried)} codes were tried"


def test_passwords_guessed_at_once_still_stop_at_the_lockout(app, app_ctx, make_staff, settings, monkeypatch):
    """A name is locked after login_max_failures wrong passwords from one address. The lock was checked before
    the password and the failure counted after it, and the check takes a while (scrypt), so guesses sent
    together all passed the check before any was counted: a script with as many requests in flight as the
    server has threads (2 × cores × 4) got that many guesses per window, not 5. Here each guess arrives while
    the previous one's password is being checked."""
    from wxapp_backend.auth import services
    from wxapp_backend.db import session_scope
    from wxapp_backend.errors import AppError

    staff = make_staff(role="admin")
    state = app.extensions["wxapp"]
    throttle = services.LoginThrottle(state.redis, settings.login_max_failures, settings.login_lockout_seconds)
    real_check = services.check_password_hash
    checked: list[str] = []

    with session_scope() as s:
        def guess(password: str) -> int:
            try:
                services.authenticate_staff(s, throttle, username=staff.username, password=password,
                                            ip="203.0.113.9")
            except AppError as exc:
                return exc.status
            return 200

        def concurrent_check(pwhash: str, password: str) -> bool:
            checked.append(password)
            if len(checked) < 4 * settings.login_max_failures:
                guess(f"Wrong-pass{len(checked)}")
            return real_check(pwhash, password)

        monkeypatch.setattr(services, "check_password_hash", concurrent_check)
        assert guess("Wrong-pass0") == 401
    assert len(checked) == settings.login_max_failures, f"{len(checked)} passwords were tried"
    monkeypatch.setattr(services, "check_password_hash", real_check)
    with session_scope() as s:  # locked here now, as after five failures one after another
        assert guess(staff.plain_password) == 429


def test_the_embedded_redis_socket_of_a_deep_checkout_is_not_in_the_shared_temp_folder(tmp_path):
    """A socket path must be short, so a deep checkout's embedded Redis listened on /tmp/wxapp-redis-<hash>.sock:
    a name anyone on the machine can work out, in a folder anyone can write to. Whoever put a Redis of their own
    there first was answering the ping and was used: it saw every token and conversation, and RQ unpickles the
    jobs it hands out. The socket is now in a folder of this user alone (0700), and one that someone else made
    is refused rather than used."""
    import os
    import shutil
    import stat
    import tempfile

    from wxapp_backend.kv import EmbeddedRedisError, _socket_path, ensure_embedded_redis, stop_embedded_redis

    instance = tmp_path / ("deep-checkout-" + "x" * 100) / "instance"
    sock = _socket_path(instance / "redis")
    shared = os.path.realpath(tempfile.gettempdir())
    assert os.path.realpath(sock.parent) != shared, f"{sock} is in the shared temp folder"
    try:
        sock.parent.mkdir(mode=0o777)  # someone else got there first
        os.chmod(sock.parent, 0o777)
        with pytest.raises(EmbeddedRedisError):
            ensure_embedded_redis(instance)
        sock.parent.rmdir()
        assert ensure_embedded_redis(instance) == f"unix://{sock}"
        mode = os.lstat(sock.parent)
        assert mode.st_uid == os.getuid() and stat.S_IMODE(mode.st_mode) == 0o700
    finally:
        stop_embedded_redis(instance)
        shutil.rmtree(sock.parent, ignore_errors=True)


def test_the_development_secret_key_file_is_readable_by_its_owner_only(tmp_path):
    """Without SECRET_KEY (the embedded set-up the README's two commands start) the key is made once and kept in
    instance/dev-secret-key, created with the umask's 0644: anyone on the machine could read the key that signs
    the console's cookies and the check-in codes (a forged code marks anyone as present). It is 0600 now, and a
    key file left readable by an earlier version is tightened."""
    import os
    import stat

    from wxapp_backend.config import Settings

    fresh = tmp_path / "fresh"
    Settings.from_env({"APP_ENV": "development", "INSTANCE_PATH": str(fresh)})
    assert stat.S_IMODE(os.stat(fresh / "dev-secret-key").st_mode) == 0o600
    old = tmp_path / "old"
    old.mkdir()
    (old / "dev-secret-key").write_text("kept-from-before-0123456789")
    os.chmod(old / "dev-secret-key", 0o644)
    settings = Settings.from_env({"APP_ENV": "development", "INSTANCE_PATH": str(old)})
    assert settings.secret_key == "kept-from-before-0123456789"
    assert stat.S_IMODE(os.stat(old / "dev-secret-key").st_mode) == 0o600


def test_appeal_photos_on_disk_are_readable_by_the_service_alone(app, client, make_user, user_token):
    """Appeal photos (a business licence, an ID card) were written with the umask's 0644 in a folder anyone on
    the server may list: every local account could read them. The folder is 0700 and each photo 0600."""
    import base64
    import os
    import stat

    from wxapp_backend.appeals.intake import upload_dir

    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 100).decode()
    resp = client.post("/api/v1/appeals", headers=user_token(make_user()), json={
        "content": "营业执照变更的问题咨询", "contact_name": "张三", "contact_phone": "13800138000", "images": [png]})
    assert resp.status_code == 201, resp.get_json()
    folder = upload_dir(app.instance_path)
    photo = folder / resp.get_json()["images"][0]
    assert stat.S_IMODE(os.stat(photo).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def _no_private_redis(monkeypatch):
    """gunicorn.conf.py starts the private Redis when no REDIS_URL is set, and nothing here would stop it (each run
    of these tests on the embedded defaults left two redis-servers behind). A URL it never connects to."""
    import os

    monkeypatch.setenv("REDIS_URL", os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15")


def test_gunicorns_metrics_folder_in_tmp_cannot_be_taken_by_someone_else(tmp_path, monkeypatch):
    """Without PROMETHEUS_MULTIPROC_DIR, gunicorn.conf.py kept the workers' metrics in /tmp/wxapp-metrics-<pid of
    the master>: a name anyone can guess, which on_starting removed and made again. A folder (or a link to one)
    someone else made there first could not be removed (the sticky /tmp) and was used as it was, so they chose
    where the workers write their files. It is now a fresh private folder (mkdtemp, 0700) that is emptied in
    place, never removed and made again."""
    import os
    import runpy
    import shutil
    import stat

    from wxapp_backend.config import ROOT

    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    _no_private_redis(monkeypatch)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")  # so that monkeypatch puts it back afterwards
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.delenv("WXAPP_METRICS_SHARED", raising=False)
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert not (tmp_path / "instance" / "redis").exists(), "a private Redis was started and left running"
    folder = conf["_metrics_dir"]
    try:
        assert os.path.basename(folder) != f"wxapp-metrics-{os.getpid()}", "a name anyone can work out"
        (open(os.path.join(folder, "counter_1.db"), "w")).close()
        conf["on_starting"](None)
        info = os.lstat(folder)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
        assert os.listdir(folder) == []  # emptied for the new master, as before
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_logins_that_fail_on_our_side_do_not_count_towards_the_lockout(app, app_ctx, make_staff, settings,
                                                                       monkeypatch):
    """Counting an attempt before its password is checked must not turn our own failure (the database not
    answering) into wrong passwords: staff retrying through an outage would find themselves locked out after it."""
    from sqlalchemy.exc import OperationalError

    from wxapp_backend.auth import services
    from wxapp_backend.db import session_scope

    staff = make_staff(role="admin")
    state = app.extensions["wxapp"]
    throttle = services.LoginThrottle(state.redis, settings.login_max_failures, settings.login_lockout_seconds)

    def down(*_a, **_kw):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    for _ in range(settings.login_max_failures + 2):
        with session_scope() as s:
            for read in ("scalar", "scalars", "execute"):  # however the account is looked up
                monkeypatch.setattr(s, read, down)
            with pytest.raises(OperationalError):
                services.authenticate_staff(s, throttle, username=staff.username, password=staff.plain_password,
                                            ip="203.0.113.10")
    with session_scope() as s:
        assert services.authenticate_staff(s, throttle, username=staff.username, password=staff.plain_password,
                                           ip="203.0.113.10").id == staff.id


def test_the_access_log_keeps_no_query_strings(tmp_path, monkeypatch):
    """With ACCESS_LOG on, gunicorn wrote each request line whole: every WeChat push's URL carries the sender's
    openid with the signature, timestamp and nonce (enough to post a forged plain-mode push within the 5-minute
    window), a mini-program search its question, a console search the phone number looked up (also in the
    Referer of the next page). The access log now has the path without the query, and no Referer."""
    import runpy
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from wxapp_backend.config import ROOT

    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    _no_private_redis(monkeypatch)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert not (tmp_path / "instance" / "redis").exists(), "a private Redis was started and left running"
    cfg = Config()
    if "access_log_format" in conf:
        cfg.set("access_log_format", conf["access_log_format"])
    query = "signature=5d1c0e2f&timestamp=1796548000&nonce=1234567890&openid=oAbCdEfGhIjKlMnOpQrStUvWxYz0"
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": f"/wechat?{query}", "SERVER_PROTOCOL": "HTTP/1.1",
               "PATH_INFO": "/wechat", "QUERY_STRING": query, "REMOTE_ADDR": "203.0.113.5",
               "HTTP_REFERER": "https://example.org/console/users?q=13800138000", "HTTP_USER_AGENT": "Mozilla/5.0"}
    resp = SimpleNamespace(status="200 OK", sent=7, headers=[])
    req = SimpleNamespace(headers=[("USER-AGENT", "Mozilla/5.0")])
    logger = Logger(cfg)
    line = cfg.access_log_format % logger.atoms_wrapper_class(logger.atoms(resp, req, environ, timedelta(0)))
    assert "/wechat" in line and "200" in line
    for secret in ("oAbCdEfGhIjKlMnOpQrStUvWxYz0", "5d1c0e2f", "1234567890", "13800138000"):
        assert secret not in line, line


def test_the_embedded_database_and_redis_files_are_readable_by_the_service_alone(tmp_path):
    """On the embedded defaults everything lives under instance/: the SQLite database (password hashes, phone
    numbers, every appeal) and its WAL, and the private Redis's append-only file (logins, chat drafts with phone
    numbers, queued jobs), all created with the umask's 0644, readable by every account on the machine. They
    are 0600 now."""
    import os
    import stat

    from sqlalchemy import text

    from wxapp_backend.db import make_engine
    from wxapp_backend.kv import ensure_embedded_redis, make_redis, stop_embedded_redis

    def mode(path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    engine = make_engine(f"sqlite:///{tmp_path / 'wxapp.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (phone TEXT)"))
        conn.execute(text("INSERT INTO t VALUES ('13800138000')"))
    files = [tmp_path / name for name in ("wxapp.sqlite3", "wxapp.sqlite3-wal", "wxapp.sqlite3-shm")]
    try:
        assert {f.name: mode(f) for f in files if f.exists()} == {f.name: 0o600 for f in files}
    finally:
        engine.dispose()
    instance = tmp_path / "instance"
    try:
        make_redis(ensure_embedded_redis(instance)).set("k", "v")
        redis_dir = instance / "redis"
        written = [p for p in redis_dir.iterdir() if p.name.startswith("appendonly")]
        assert written, list(redis_dir.iterdir())
        assert {p.name: mode(p) for p in written} == {p.name: 0o600 for p in written}
    finally:
        stop_embedded_redis(instance)


def test_profile_edits_are_rate_limited_per_user(client, make_user, user_token, app):
    """PATCH /me writes an audit row per change and had no limit: a script with a token could fill the log."""
    from wxapp_backend.auth.api import PROFILE_LIMIT_PER_MIN

    user, other = make_user(), make_user()
    headers = user_token(user)
    codes = [client.patch("/api/v1/me", json={"nickname": f"名字{i}"}, headers=headers).status_code
             for i in range(PROFILE_LIMIT_PER_MIN + 1)]
    assert codes[:-1] == [200] * PROFILE_LIMIT_PER_MIN
    last = client.patch("/api/v1/me", json={"nickname": "再改"}, headers=headers)
    assert last.status_code == 429 and "太频繁" in last.get_json()["message"] and last.headers["Retry-After"]
    assert client.patch("/api/v1/me", json={"nickname": "别人"}, headers=user_token(other)).status_code == 200
