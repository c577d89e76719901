"""An Official Account follower joined to their mini-program login by unionid (wxapp_backend/auth/linking.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from wxapp_backend.appeals.models import Appeal
from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.linking import link_oa_user
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.chat import run_chat
from wxapp_backend.wechat.client import WeChatAPIError, get_api


@pytest.fixture(autouse=True)
def _no_quiet_period(monkeypatch):
    """These tests merge as soon as the job runs; the quiet period has its own test below."""
    from wxapp_backend.auth import linking

    monkeypatch.setattr(linking, "QUIET_SECONDS", 0)


FILE_APPEAL = ["我要反映", "写字楼门口的路灯坏了一个月，晚上很黑", "测试贸易有限公司", "王五 13900139000", "跳过", "确认"]


def _login(client, code: str) -> tuple[int, dict]:
    resp = client.post("/api/v1/auth/login", json={"code": code})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}


def _row(oa_openid: str) -> User:
    with session_scope() as s:
        user = s.scalar(select(User).where(User.oa_openid == oa_openid))
        s.expunge(user)
        return user


def _users() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(User))


def _chat(app, standin, openid: str, lines: list[str]) -> str:
    out: list[str] = []
    run_chat(app, "oa", openid, lines=lines, echo=out.append, standin=standin)
    return "\n".join(out)


def test_user_info_gives_the_same_unionid_as_the_mini_program_login(app_ctx, standin):
    api = get_api("oa")
    info = api.user_info(standin.oa_openid_for("alice"))
    assert info["subscribe"] == 1 and info["unionid"] == standin.unionid_for("alice~1")
    assert "unionid" not in api.user_info("o-someone-unbound")  # no open-platform binding known for them
    with pytest.raises(WeChatAPIError) as err:
        api.user_info("not an openid")
    assert err.value.errcode == 40003
    assert standin.calls_to("/cgi-bin/user/info")[0].query["lang"] == "zh_CN"


def test_follower_first_then_login_takes_the_row_over(app, app_ctx, client, standin):
    oa = standin.oa_openid_for("alice")
    assert "诉求已提交" in _chat(app, standin, oa, FILE_APPEAL)
    follower = _row(oa)
    # The chat's own worker ran the link job: unionid learned, no mini-program row to join yet.
    assert follower.openid == f"oa:{oa}" and follower.unionid == standin.unionid_for("alice")
    assert len(standin.calls_to("/cgi-bin/user/info")) == 1
    assert link_oa_user(follower.id) == "waiting"

    user_id, headers = _login(client, "alice~1")
    assert user_id == follower.id and _users() == 1  # the same row, now with the mini-program's openid
    with session_scope() as s:
        assert s.get(User, user_id).openid == standin.openid_for("alice~1")
        assert s.scalar(select(AuditLog).where(AuditLog.action == "user.linked")).target_id == str(user_id)
    mine = client.get("/api/v1/appeals", headers=headers).get_json()
    assert [a["content"] for a in mine["items"]] == ["写字楼门口的路灯坏了一个月，晚上很黑"]
    assert link_oa_user(user_id) == "linked"  # a late second run changes nothing


def test_login_first_then_the_follower_row_is_merged_by_the_chat(app, app_ctx, client, standin):
    mp_id, headers = _login(client, "bob~1")
    oa = standin.oa_openid_for("bob")
    assert "诉求已提交" in _chat(app, standin, oa, FILE_APPEAL)
    assert _users() == 1 and _row(oa).id == mp_id
    with session_scope() as s:
        assert s.scalar(select(Appeal.user_id)) == mp_id
        row = s.scalar(select(AuditLog).where(AuditLog.action == "user.merged"))
        assert row.target_id == str(mp_id) and row.data["via"] == "official_account"
    assert len(client.get("/api/v1/appeals", headers=headers).get_json()["items"]) == 1


def test_a_merge_moves_the_chat_history_and_the_webhook_follows(app, app_ctx, client, standin, redis_client):
    from wxapp_backend.wechat.pipeline import user_cache_key

    oa = standin.oa_openid_for("ivy")
    _chat(app, standin, oa, FILE_APPEAL)
    follower = _row(oa)
    assert redis_client.get(user_cache_key("oa", oa)).startswith(f"{follower.id}:".encode())
    with session_scope() as s:  # a mini-program row of the same person, made before the follower's was linked
        mp = User(openid=standin.openid_for("ivy~1"), unionid=standin.unionid_for("ivy"))
        s.add(mp)
        s.flush()
        mp_id = mp.id
    assert link_oa_user(follower.id) == "merged"
    assert _users() == 1
    merged = _row(oa)
    assert merged.id == mp_id and merged.openid == standin.openid_for("ivy~1") and merged.followed is not None
    assert redis_client.get(user_cache_key("oa", oa)) is None  # the webhook re-reads who this is
    with session_scope() as s:
        assert s.scalar(select(Appeal.user_id)) == mp_id
        row = s.scalar(select(AuditLog).where(AuditLog.action == "user.merged"))
        assert row.data["from_user"] == follower.id and row.data["moved"]["appeals"] == 1
    # The follower goes on chatting: their next message lands on the merged row and finds the appeal.
    assert "路灯" in _chat(app, standin, oa, ["我的诉求"])


def test_login_after_the_unionid_is_known_merges_into_an_existing_mini_program_row(app, app_ctx, client, standin):
    """Both rows exist before anyone links them (a login from before unionids were kept): the next login
    joins them."""
    oa = standin.oa_openid_for("carol")
    _chat(app, standin, oa, FILE_APPEAL)
    with session_scope() as s:
        s.add(User(openid=standin.openid_for("carol~1"), unionid=None))
    follower_id = _row(oa).id
    user_id, headers = _login(client, "carol~1")
    assert user_id != follower_id and _users() == 1
    assert _row(oa).id == user_id
    assert len(client.get("/api/v1/appeals", headers=headers).get_json()["items"]) == 1


def test_rows_unique_per_user_keep_the_target_copy_and_credits_add_up(app_ctx, client, standin):
    from wxapp_backend.activities.models import CategorySubscription
    from wxapp_backend.notices.models import SubscribeCredit
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    mp_id, _ = _login(client, "dave~1")
    oa = standin.oa_openid_for("dave")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=oa)
        s.add_all([CategorySubscription(user_id=mp_id, category="讲座"),
                   CategorySubscription(user_id=follower_id, category="讲座"),
                   CategorySubscription(user_id=follower_id, category="运动"),
                   SubscribeCredit(user_id=mp_id, template_id="tpl-a", credits=2),
                   SubscribeCredit(user_id=follower_id, template_id="tpl-a", credits=1),
                   SubscribeCredit(user_id=follower_id, template_id="tpl-b", credits=3)])
    assert link_oa_user(follower_id) == "merged"
    with session_scope() as s:
        subs = sorted(s.scalars(select(CategorySubscription.category).where(CategorySubscription.user_id == mp_id)))
        credits = dict(s.execute(select(SubscribeCredit.template_id, SubscribeCredit.credits)).all())
        row = s.scalar(select(AuditLog).where(AuditLog.action == "user.merged"))
    assert subs == ["讲座", "运动"] and credits == {"tpl-a": 3, "tpl-b": 3}
    assert row.data["dropped"] == {"category_subscriptions": 1, "subscribe_credits": 1}


def test_two_active_registrations_for_one_activity_stop_the_merge(app_ctx, client, standin, make_activity):
    from wxapp_backend.activities.models import Registration
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    activity_id = make_activity().id
    mp_id, _ = _login(client, "erin~1")
    oa = standin.oa_openid_for("erin")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=oa)
        for uid in (mp_id, follower_id):
            s.add(Registration(activity_id=activity_id, user_id=uid, status="confirmed",
                               active_key=f"{activity_id}:{uid}"))
    assert link_oa_user(follower_id) == "conflict"
    assert _users() == 2  # nothing merged, nothing lost
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Registration)) == 2
        assert s.get(User, follower_id).unionid == standin.unionid_for("erin")  # learned, kept
        assert s.scalar(select(AuditLog).where(AuditLog.action == "user.merged")) is None
        failed = s.scalars(select(AuditLog).where(AuditLog.action == "user.link_failed")).all()
        assert sorted(int(r.target_id) for r in failed) == sorted([mp_id, follower_id])
        assert "registration" in failed[0].data["reason"]


def test_an_appeal_with_the_same_idempotency_key_on_both_rows_stops_the_merge(app_ctx, client, standin):
    """Only the listed tables may lose the follower's copy of a row unique per user; elsewhere (appeals'
    user + idempotency key) a collision keeps both rows apart instead of deleting an appeal."""
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    mp_id, _ = _login(client, "kim~1")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for("kim"))
    for uid in (mp_id, follower_id):
        with session_scope() as s:
            _appeal(s, uid, idempotency_key="same-key")
    assert link_oa_user(follower_id) == "conflict"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Appeal)) == 2
    assert _users() == 2


def _appeal(session, user_id: int, idempotency_key: str) -> Appeal:
    from wxapp_backend.appeals.services import Intake, submit_appeal

    return submit_appeal(session, user_id, Intake(content="园区门口的路灯坏了，晚上很黑", contact_name="王五",
                                                   contact_phone="13900139000"), idempotency_key=idempotency_key)[0]


def test_an_unfollowed_users_unionid_still_links_them(app_ctx, client, standin):
    """user/info of someone who no longer follows leaves the profile out but still gives the unionid."""
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    mp_id, _ = _login(client, "lee~1")
    oa = standin.oa_openid_for("lee")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=oa, followed=False)
    standin.set_following(oa, False)
    assert get_api("oa").user_info(oa) == {"subscribe": 0, "openid": oa, "tagid_list": [],
                                           "unionid": standin.unionid_for("lee")}
    assert link_oa_user(follower_id) == "merged"
    assert _row(oa).id == mp_id
    standin.set_following("o-unbound-gone", False)
    with session_scope() as s:
        other, _ = upsert_chat_user(s, account="oa", openid="o-unbound-gone")
    assert link_oa_user(other) == "not_following"


def test_a_follower_from_before_linking_is_asked_again_when_they_write(app_ctx, client, standin, run_jobs):
    """Rows made before linking existed (or whose last answer was a refusal) have no unionid: a cache miss
    queues the lookup again, at most once a day."""
    from wxapp_backend.queue import get_queue
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    oa = standin.oa_openid_for("mia")
    with session_scope() as s:
        s.add(User(openid=f"oa:{oa}", oa_openid=oa, followed=True))
    for _ in range(2):  # two cache misses: one lookup
        with session_scope() as s:
            upsert_chat_user(s, account="oa", openid=oa)
    assert [job.func_name for job in get_queue().jobs].count("wxapp_backend.auth.linking.link_oa_user") == 1
    run_jobs()
    _login(client, "mia~1")
    assert _users() == 1


def test_link_followers_queues_every_unlinked_follower(app, app_ctx, standin, run_jobs):
    with session_scope() as s:
        s.add_all([User(openid=f"oa:{standin.oa_openid_for(p)}", oa_openid=standin.oa_openid_for(p))
                   for p in ("nia", "oli")])
        s.add(User(openid="o-mini-only", unionid="u-known"))
    result = app.test_cli_runner().invoke(args=["link-followers"])
    assert result.exit_code == 0 and "已排队 2 位" in result.output
    run_jobs()
    with session_scope() as s:
        assert {u.unionid for u in s.scalars(select(User).where(User.oa_openid.is_not(None)))} == {
            standin.unionid_for("nia"), standin.unionid_for("oli")}


def test_a_registration_moves_with_its_keys(app_ctx, client, standin, make_activity):
    from wxapp_backend.activities.models import Registration
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    activity_id = make_activity().id
    mp_id, _ = _login(client, "fay~1")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for("fay"))
        s.add(Registration(activity_id=activity_id, user_id=follower_id, status="confirmed",
                           active_key=f"{activity_id}:{follower_id}", idempotency_key=f"{follower_id}:k-1"))
    assert link_oa_user(follower_id) == "merged"
    with session_scope() as s:
        reg = s.scalar(select(Registration))
        assert (reg.user_id, reg.active_key, reg.idempotency_key) == (mp_id, f"{activity_id}:{mp_id}", f"{mp_id}:k-1")
        assert s.scalar(select(AuditLog).where(AuditLog.action == "user.merged")).data["moved"] == {"registrations": 1}


def test_unbound_accounts_and_refusals_change_nothing(app_ctx, standin):
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    with session_scope() as s:
        unbound, _ = upsert_chat_user(s, account="oa", openid="o-unbound-follower")
    assert link_oa_user(unbound) == "no_unionid"
    standin.fail_next("/cgi-bin/user/info", 48001)  # api unauthorized: not a verified service account
    with session_scope() as s:
        other, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for("gus"))
    assert link_oa_user(other) == "refused"
    standin.fail_next("/cgi-bin/user/info", -1, times=5)  # busy: the queue tries again later
    with pytest.raises(WeChatAPIError):
        link_oa_user(other)
    assert link_oa_user(other) == "waiting"
    assert _users() == 2 and link_oa_user(99999) == "gone"


def test_the_webhook_queues_the_link_when_it_makes_a_follower_row(app_ctx, client, standin, run_jobs):
    from wxapp_backend.queue import get_queue
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    mp_id, _ = _login(client, "hal~1")
    oa = standin.oa_openid_for("hal")
    with session_scope() as s:
        upsert_chat_user(s, account="oa", openid=oa)
    with session_scope() as s:
        upsert_chat_user(s, account="oa", openid=oa)  # a second message: not queued again
    names = [job.func_name for job in get_queue().jobs]
    assert names.count("wxapp_backend.auth.linking.link_oa_user") == 1
    run_jobs()
    assert _users() == 1 and _row(oa).id == mp_id
    with session_scope() as s:
        upsert_chat_user(s, account="oa", openid=oa, followed=True)  # linked: a follow asks nothing more
    assert "wxapp_backend.auth.linking.link_oa_user" not in [job.func_name for job in get_queue().jobs]


def _postgres(app) -> bool:
    return app.extensions["wxapp"].db.dialect == "postgresql"


@pytest.mark.parametrize("follower", [True, False], ids=["take-over", "control-no-follower-row"])
def test_two_first_logins_at_once_both_succeed(app, app_ctx, standin, follower):
    """wx.login fired twice at launch (onLaunch and a page's onLoad) by someone new to the mini-program: the
    second login waits for the first (on the person's lock, or on the unique openid) and then finds its row,
    whether the first took a follower's row over or made a new one. PostgreSQL: SQLite serialises writers."""
    if not _postgres(app):
        pytest.skip("needs PostgreSQL (set DATABASE_URL); .ci/run runs it")
    import threading
    import time

    from wxapp_backend.auth.services import upsert_mini_program_user
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    person = "ola" if follower else "pia"
    if follower:
        with session_scope() as s:
            uid, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for(person))
            s.get(User, uid).unionid = standin.unionid_for(person)
    out: dict = {}

    def second_login() -> None:
        with app.app_context():
            out["status"] = app.test_client().post("/api/v1/auth/login", json={"code": f"{person}~2"}).status_code

    with session_scope() as s:  # the first login, not yet committed while the second one arrives
        upsert_mini_program_user(s, openid=standin.openid_for(f"{person}~1"), unionid=standin.unionid_for(person))
        s.flush()
        t = threading.Thread(target=second_login)
        t.start()
        time.sleep(1.0)
    t.join(30)
    assert out.get("status") == 200, out
    assert _users() == 1


def test_a_login_and_the_link_job_at_the_same_moment_still_join(app, app_ctx, standin):
    """The job learns the unionid while the person's first login is making their mini-program row: without
    the person's lock each transaction misses the other's uncommitted row and the two stay apart until some
    later login. PostgreSQL (SQLite serialises writers)."""
    if not _postgres(app):
        pytest.skip("needs PostgreSQL (set DATABASE_URL); .ci/run runs it")
    import threading
    import time

    from wxapp_backend.auth.services import upsert_mini_program_user
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    oa = standin.oa_openid_for("quin")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=oa)
    out: dict = {}

    def job() -> None:
        with app.app_context():
            out["job"] = link_oa_user(follower_id)

    with session_scope() as s:  # the login, not yet committed while the job runs
        upsert_mini_program_user(s, openid=standin.openid_for("quin~1"), unionid=standin.unionid_for("quin"))
        s.flush()
        t = threading.Thread(target=job)
        t.start()
        time.sleep(1.0)
    t.join(30)
    assert out.get("job") == "merged", out
    assert _users() == 1 and _row(oa).openid == standin.openid_for("quin~1")


def test_the_job_merges_only_once_the_follower_pauses(app_ctx, client, standin, monkeypatch):
    """A merge while the follower is chatting could catch a message in flight with the old id: the job keeps
    the unionid, tries again QUIET_SECONDS later, and merges once they are quiet (or after QUIET_TRIES)."""
    from datetime import timedelta

    from wxapp_backend.auth import linking
    from wxapp_backend.db import utcnow
    from wxapp_backend.queue import get_queue
    from wxapp_backend.wechat.pipeline import upsert_chat_user

    monkeypatch.setattr(linking, "QUIET_SECONDS", 120)
    mp_id, _ = _login(client, "ray~1")
    with session_scope() as s:
        follower_id, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for("ray"))  # writing now
    assert link_oa_user(follower_id) == "later"
    assert _users() == 2 and _row(standin.oa_openid_for("ray")).unionid == standin.unionid_for("ray")
    scheduled = [get_queue().fetch_job(j) for j in get_queue().scheduled_job_registry.get_job_ids()]
    assert [(j.func_name, j.args) for j in scheduled] == [("wxapp_backend.auth.linking.link_oa_user", (follower_id, 1))]
    assert link_oa_user(follower_id, linking.QUIET_TRIES) == "merged"  # the last try merges anyway
    assert _users() == 1 and _row(standin.oa_openid_for("ray")).id == mp_id
    with session_scope() as s:  # and a quiet follower is merged on the first try
        other, _ = upsert_chat_user(s, account="oa", openid=standin.oa_openid_for("sam"))
        s.get(User, other).last_message_at = utcnow() - timedelta(minutes=5)
    _login(client, "sam~1")  # unionid not known yet at this login: two rows
    assert link_oa_user(other) == "merged"
