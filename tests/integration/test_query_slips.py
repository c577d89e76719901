"""A misspelt query filter (`categroy=`, `Page=`) was dropped without a word and the list answered with everything."""

from __future__ import annotations

import pytest


@pytest.fixture
def two_categories(make_activity):
    make_activity(category="concert", title="楼宇音乐会")
    make_activity(category="vertical_marathon", title="垂直马拉松")


def _titles(resp) -> set[str]:
    assert resp.status_code == 200, resp.get_json()
    return {a["title"] for a in resp.get_json()["items"]}


def test_the_filter_spelt_right_filters(client, two_categories):
    assert _titles(client.get("/api/v1/activities?category=concert")) == {"楼宇音乐会"}


@pytest.mark.parametrize("slip", ["categroy", "Category", "catagory", "CATEGORY"])
def test_a_slip_of_a_filters_name_is_refused_naming_the_right_one(client, two_categories, slip):
    resp = client.get(f"/api/v1/activities?{slip}=concert")
    assert resp.status_code == 422
    body = resp.get_json()
    assert "category" in body["message"] and "活动类别" in body["message"] and slip in body["message"]
    assert slip in body["fields"]


def test_paging_parameters_with_a_slip_are_refused(client, two_categories):
    for slip in ("Page=2", "per-page=1", "perpage=1"):
        resp = client.get(f"/api/v1/activities?{slip}")
        assert resp.status_code == 422, slip
        assert "不认识" in resp.get_json()["message"]


def test_cache_busters_and_names_like_nothing_known_are_still_left_alone(client, two_categories):
    assert len(_titles(client.get("/api/v1/activities?t=1733500000000&_=1&from=share"))) == 2
    assert _titles(client.get("/api/v1/activities?category=concert&t=1")) == {"楼宇音乐会"}


def test_a_name_like_a_known_one_sent_beside_it_is_no_slip(client, two_categories):
    # the page sent the real filter; a look-alike next to it is not what the filter was meant to be
    assert _titles(client.get("/api/v1/activities?category=concert&categories=x")) == {"楼宇音乐会"}


def test_staff_lists_refuse_slips_too(client, make_staff, staff_headers):
    staff = make_staff(role="staff")
    resp = client.get("/api/v1/staff/appeals?stauts=closed", headers=staff_headers(staff))
    assert resp.status_code == 422
    assert "status" in resp.get_json()["message"]
