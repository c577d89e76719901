"""Double taps on the activity API at once (PostgreSQL: SQLite serialises writers)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from wxapp_backend.activities.models import Registration


def _parallel(app, n, fn):
    barrier = threading.Barrier(n)
    out: list = []
    guard = threading.Lock()

    def one(i):
        with app.app_context():
            c = app.test_client()
            barrier.wait()
            try:
                r = fn(c, i)
            except Exception as exc:  # noqa: BLE001
                r = repr(exc)
            with guard:
                out.append(r)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


@pytest.mark.postgres
def test_double_tap_subscriptions_never_500(app, app_ctx, make_user, user_token):
    u = make_user()
    h = user_token(u)
    codes = _parallel(app, 8, lambda c, i: c.put("/api/v1/me/subscriptions", json={"categories": ["concert", "fitness"]},
                                                  headers=h).status_code)
    assert Counter(codes) == Counter({200: 8}), Counter(codes)


@pytest.mark.postgres
def test_double_tap_register_one_row(app, app_ctx, make_user, user_token, make_activity, db):
    aid = make_activity(category="concert", title="音乐会", capacity=5).id
    u = make_user()
    h = user_token(u)
    codes = _parallel(app, 8, lambda c, i: c.post(f"/api/v1/activities/{aid}/registrations", json={},
                                                   headers={**h, "Idempotency-Key": "tap-1"}).status_code)
    db.expire_all()
    assert db.query(Registration).count() == 1
    assert 500 not in codes, Counter(codes)
