"""Eighteenth QA pass (the enterprise's side of appeals, as a demanding user judges it): only one's own appeals on every
id-bearing route, no staff-only timeline rows in the API or the messages, the Idempotency-Key on submit, photos, bad
input, ratings; and a stored weekly report of a bad or never-stored week answered on the report's own page."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from tests.api.appeals.conftest import api_helpers
from tests.integration.test_appeals_qa_s8 import w  # noqa: F401 (a fixture)
from tests.integration.test_weekly_qa_s18 import stored  # noqa: F401 (a fixture)


@pytest.fixture
def world(client, make_user, make_staff, make_building, make_grid, make_enterprise, user_token, staff_headers):
    """The appeal API's people (tests/api/appeals/conftest.py's world, which this folder cannot reach)."""
    admin = make_staff(role="admin")
    specialist = make_staff(role="staff")
    grid = make_grid(name="新华一网格", specialist_name="王专员", specialist_staff_id=specialist.id)
    building = make_building(name="新华大厦", grid_id=grid.id)
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    user = make_user(nickname="张三", enterprise_id=enterprise.id, binding_state="verified", building_id=building.id)
    other = make_user(nickname="李四")
    ns = SimpleNamespace(admin=admin, specialist=specialist, grid=grid, building=building, enterprise=enterprise,
                         user=user, other=other, uh=user_token(user), oh=user_token(other),
                         ah=staff_headers(admin), sh=staff_headers(specialist))
    return api_helpers(client, ns)


def _text(resp) -> str:
    return re.sub(r"\s+", " ", resp.get_data(as_text=True))


# --- the stored weekly report of a bad or never-stored week ------------------------------------------------------

@pytest.mark.parametrize(("week", "status", "words"), [
    ("2025-W99", 422, "没有这一周"),
    ("2020-W01", 404, "没有存档的周报"),
    ("0001-W01", 422, "年份"),
])
def test_a_stored_report_of_a_bad_or_unstored_week_says_so_on_the_report_page(stored, client, console_login, week,  # noqa: F811
                                                                             status, words):
    """The live report says a bad week on its own page, the week still in its box; the stored one fell to the bare
    error page, with no week box and no way to the 历史周报存档 but the browser's back button."""
    console_login(stored.make_staff(role="staff"))
    resp = client.get(f"/console/appeals/reports/{week}")
    body = _text(resp)
    assert resp.status_code == status
    assert 'id="report-week-error"' in body and words in body, body
    assert f'name="week" type="week" value="{week}"' in body  # to correct it where it was typed
    assert 'id="stored-reports-link"' in body and "历史周报存档" in body
    # A real week never stored: its live figures are one click away (the message says to look there).
    assert ('id="live-report-link"' in body) == (status == 404)
    if status == 404:
        assert f'href="/console/appeals/report?week={week}"' in body
