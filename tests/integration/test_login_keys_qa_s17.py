"""Login lock-out counters in Redis (session 17): the typed name is not kept as typed."""

from __future__ import annotations


def test_a_password_typed_into_the_name_field_is_not_kept_in_redis(app, client, settings):
    """The audit row masks an unknown name (“Se********”), but the lock-out counters held it in full, lower-cased,
    for the whole window: login:fail:user:secret-pass3. They hold a digest of it now, and still count."""
    r = app.extensions["wxapp"].redis
    for _ in range(settings.login_max_failures):
        resp = client.post("/api/v1/staff/login", json={"username": "Secret-Pass3", "password": "whatever-1"})
        assert resp.status_code == 401, resp.get_json()
    keys = [k.decode() if isinstance(k, bytes) else k for k in r.scan_iter("login:*", count=1000)]
    assert keys and not [k for k in keys if "secret-pass3" in k.lower()], keys
    # The counters still lock the name out (the same name in another case is the same name).
    resp = client.post("/api/v1/staff/login", json={"username": "SECRET-PASS3", "password": "whatever-1"})
    assert resp.status_code == 429, resp.get_json()


def test_forgetting_one_name_leaves_a_name_that_its_pattern_would_match(app, client, make_staff, settings):
    """forget() (a password reset) deleted keys by SCAN pattern on the name as typed: resetting an account named
    “a*” (names may hold *) also wiped the failures counted against every name starting with “a”, admin's too."""
    from wxapp_backend.auth.services import LoginThrottle

    r = app.extensions["wxapp"].redis
    victim = make_staff(role="admin")
    for _ in range(settings.login_max_failures):
        resp = client.post("/api/v1/staff/login", json={"username": victim.username, "password": "wrong-guess-1"})
        assert resp.status_code == 401, resp.get_json()
    throttle = LoginThrottle(r, settings.login_max_failures, 900)
    throttle.forget(victim.username[:1] + "*")
    resp = client.post("/api/v1/staff/login", json={"username": victim.username, "password": victim.plain_password})
    assert resp.status_code == 429, resp.get_json()
