"""Activity-category subscriptions before registering, a demanding user's QA pass (session 16, subs3): a category the
app has since retired, and what a subscription needs from WeChat to reach the worker at all."""

from __future__ import annotations

from sqlalchemy import select

URL = "/api/v1/me/subscriptions"


def _retired_subscription(db, user, category: str = "yoga") -> None:
    """A row left from a category the app once had (CATEGORIES lost it in a later release)."""
    from wxapp_backend.activities.models import CategorySubscription

    db.add(CategorySubscription(user_id=user.id, category=category))
    db.commit()


def test_a_retired_category_does_not_lock_the_worker_out_of_their_subscriptions(
    client, make_user, user_token, db
):
    """GET /me/subscriptions answered the retired “yoga” among the categories; the page sends back what it read plus
    the one the worker ticks, and every save was refused 422 “活动类别只能是……”: nobody could change anything. The
    list now holds only categories the app still has, and a save drops the retired row."""
    from wxapp_backend.activities.models import CategorySubscription

    user = make_user()
    headers = user_token(user)
    _retired_subscription(db, user)
    body = client.get(URL, headers=headers).get_json()
    assert body["categories"] == []
    assert set(body["categories"]) <= set(body["available"])
    resp = client.put(URL, headers=headers, json={"categories": [*body["categories"], "concert"]})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["categories"] == ["concert"]
    db.expire_all()
    assert db.scalars(
        select(CategorySubscription.category).where(CategorySubscription.user_id == user.id)
    ).all() == ["concert"]


def test_an_activity_of_a_retired_category_is_labelled_in_chinese(
    client, make_activity, make_user, user_token
):
    """An activity saved under a category since retired showed its code (“yoga”) as category_label in the list and on
    the detail page: the worker reads Chinese only."""
    a = make_activity(category="yoga")
    headers = user_token(make_user())
    item = client.get("/api/v1/activities", headers=headers).get_json()["items"][0]
    detail = client.get(f"/api/v1/activities/{a.id}", headers=headers).get_json()
    assert item["category_label"] == detail["category_label"] == "其他活动"
    assert client.get("/api/v1/activities?category=concert").get_json()["total"] == 0


def test_subscribing_to_a_category_says_which_template_to_ask_the_worker_for(client, make_user, user_token):
    """Subscribing promises “新活动发布时会第一时间通知您”, but the new-activity notice reaches WeChat only for a worker
    who allowed its template (kind notice), and the answer did not say so, unlike a registration's `subscribe`: the
    page asked for nothing, and subscribers got the notice in 消息 only. A save with categories now names the
    templates to request; unsubscribing from everything asks for none."""
    from wxapp_backend.notices.kinds import get_kind

    headers = user_token(make_user())
    resp = client.put(URL, headers=headers, json={"categories": ["concert", "fitness"]})
    assert resp.status_code == 200, resp.get_json()
    hint = resp.get_json()["subscribe"]
    assert hint["template_ids"] == [get_kind("notice").template_id]
    assert hint["kinds"] == ["notice"]
    resp = client.put(URL, headers=headers, json={"categories": []})
    assert resp.get_json()["subscribe"] == {"kinds": [], "template_ids": []}


def test_the_list_and_detail_grey_out_an_activity_the_workers_enterprise_has_filled(
    client, make_activity, make_user, user_token, make_enterprise
):
    """每家企业名额上限 2, two colleagues registered: the third saw 报名 open in the list and on the detail page
    (ineligible_reason null) and was refused 409 “您所在企业的报名人数已达上限” only after tapping it. The reason is now
    register()'s, before the tap; a worker of another enterprise may still register, and one colleague cancelling
    opens it again."""
    ent, other = make_enterprise(), make_enterprise()
    a = make_activity(capacity=10, per_enterprise_cap=2)
    first, second, third = (make_user(enterprise_id=ent.id, binding_state="verified") for _ in range(3))
    outsider = make_user(enterprise_id=other.id, binding_state="verified")
    regs = [
        client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=user_token(u))
        for u in (first, second)
    ]
    assert [r.status_code for r in regs] == [201, 201]

    def reasons(user):
        h = user_token(user)
        item = client.get("/api/v1/activities", headers=h).get_json()["items"][0]
        return item["ineligible_reason"], client.get(f"/api/v1/activities/{a.id}", headers=h).get_json()[
            "ineligible_reason"
        ]

    refused = client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=user_token(third))
    assert refused.status_code == 409
    assert reasons(third) == (refused.get_json()["message"],) * 2
    assert reasons(outsider) == (None, None)
    assert reasons(first)[0] == "您已报名这个活动了。"
    rid = regs[0].get_json()["id"]
    assert (
        client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=user_token(first)).status_code
        == 200
    )
    assert reasons(third) == (None, None)
