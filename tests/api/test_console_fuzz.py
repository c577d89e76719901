"""Property-based posts to every console form: whatever a browser (or someone with a staff login and a
script) sends, a console POST never answers with a server error.

Logged in as an admin through the real login form, with the CSRF token; every POST route of /console is
tried with generated forms: the field names the console uses, values that are text of any kind, digits,
numbers far beyond the id columns, dates in and out of range, flags, lists; path ids that exist, that do
not and that cannot; files of random bytes where an upload is expected.
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import AnyConverter, IntegerConverter

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
NAMES = sorted(set("""
accept action active activity_id address answer approve audience_all audience_building_ids audience_industries
audience_tags benefit building_id building_ids cancel_deadline capacity categories category code conditions
contact_name contact_phone content cover_image credit_code day delete_id department description eligibility
ends_at enterprise_id entry_id escalated extension_id floor_room from_unanswered grid_id handler_id id industries
industry is_workday issuer keywords kind master name nickname note password per_enterprise_cap phone
promised_days q question questions reason registration_closes_at registration_opens_at required_fields
requires_approval resolution result retire return_id role similar specialist_name specialist_phone
specialist_staff_id starts_at state status summary tag tags task_days task_department task_description task_id
task_required template_fields text title user_id username valid_from valid_until verified_only version
waitlist_enabled where_to_apply window working_days
""".split()))
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
_value = st.one_of(
    _text, st.just(""), st.text("0123456789", min_size=1, max_size=30), st.sampled_from(
        ["1", "0", "-1", "2147483647", "2147483648", "9" * 40, "²", "１２", "١٢", "true", "false", "on", "2026-12-05", "0001-01-01",
         "9999-12-31T23:59:59", "2026-12-05T09:30", "营业执照", "a,b,c", "[1, 2]", '{"a": 1}', "x" * 3000]))
_form = st.dictionaries(st.sampled_from(NAMES), st.one_of(_value, st.lists(_value, max_size=3)), max_size=8)


def _routes(app, method: str, skip: tuple[str, ...]):
    return [rule for rule in app.url_map.iter_rules()
            if rule.rule.startswith("/console") and method in rule.methods and rule.endpoint not in skip]


class _Tally:
    """Status codes seen, and the requests that got a server error."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.problems: list[str] = []

    def record(self, what: str, status: int) -> None:
        self.seen[status] = self.seen.get(status, 0) + 1
        if status >= 500:
            self.problems.append(f"{what} -> {status}")


def _fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _path_values(rule, ids):
    """A strategy for the rule's URL arguments: existing, missing and impossible ids, any listed choice."""
    parts = {}
    for arg, conv in rule._converters.items():
        if isinstance(conv, AnyConverter):
            parts[arg] = st.sampled_from(sorted(conv.items) if hasattr(conv, "items") else ["test"])
        elif isinstance(conv, IntegerConverter):
            parts[arg] = st.sampled_from([*ids, 1, 999999, 2147483647])
        else:
            parts[arg] = st.one_of(st.sampled_from(["kb-0001", "none", "x" * 200]),
                                   st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20))
    return st.fixed_dictionaries(parts)


@pytest.fixture
def ids(make_user, make_grid, make_building, make_enterprise) -> list[int]:
    """Ids of rows that exist: a grid, a building, an enterprise and a user."""
    grid = make_grid(name="网格甲")
    building = make_building(name="甲大厦", grid_id=grid.id)
    enterprise = make_enterprise(name="上海甲科技有限公司", building_id=building.id)
    user = make_user(nickname="甲", enterprise_id=enterprise.id, building_id=building.id)
    return sorted({grid.id, building.id, enterprise.id, user.id})


def test_no_console_form_answers_with_a_server_error(app, client, make_staff, ids, console_login):
    csrf = console_login(make_staff(role="admin"))
    tally = _Tally()
    routes = _routes(app, "POST", ("console.login", "console.logout"))
    assert len(routes) >= 25  # every console form was walked

    def fuzz(rule) -> None:
        @_fuzz_settings(EXAMPLES)
        @given(path=_path_values(rule, ids), form=_form, upload=st.one_of(st.none(), st.binary(max_size=2000)))
        def run(path, form, upload):
            url = rule.build(path, append_unknown=False)[1]
            data = {**form, "csrf_token": csrf}
            if upload is not None:
                data["file"] = (io.BytesIO(upload), "upload.xlsx")
            resp = client.post(url, data=data, content_type="multipart/form-data")
            tally.record(f"POST {url} {sorted(form)}", resp.status_code)

        run()

    for rule in routes:
        fuzz(rule)
    assert not tally.problems, "\n".join(tally.problems[:30])
    # The forms were handled, not turned away at the door (a lost login or CSRF token would give 400/403 only).
    assert tally.seen.get(302, 0) + tally.seen.get(200, 0) > len(routes), tally.seen


def test_digits_that_python_reads_as_digits_but_not_as_numbers(client, make_staff, console_login):
    """"²".isdigit() is True but int("²") fails: console forms parse ids with validation.row_id instead."""
    csrf = console_login(make_staff(role="admin"))
    for path, data in (("/console/notices/test-recipient", {"user_id": "²"}),
                       ("/console/notices/new", {"title": "通知", "kind": "policy", "registrants_of": "²",
                                                 "activity_id": "³", "building_ids": "²"}),
                       ("/console/activities/new", {"title": "活动", "audience_building_ids": "²"})):
        resp = client.post(path, data={"csrf_token": csrf, **data})
        assert resp.status_code < 500, (path, resp.status_code)


def test_no_console_page_answers_with_a_server_error(app, client, make_staff, ids, console_login):
    """Every console GET page with generated query strings (filters, page numbers, dates, search text)."""
    console_login(make_staff(role="admin"))
    tally = _Tally()
    rules = _routes(app, "GET", ("console.logout",))
    assert len(rules) >= 25

    def fuzz(rule) -> None:
        @_fuzz_settings(max(5, EXAMPLES // 2))
        @given(path=_path_values(rule, ids), query=st.dictionaries(st.sampled_from(NAMES + ["page", "date", "from",
                                                                                          "to", "sort", "format"]),
                                                                    _value, max_size=5))
        def run(path, query):
            url = rule.build(path, append_unknown=False)[1]
            tally.record(f"GET {url} {query!r}", client.get(url, query_string=query).status_code)

        run()

    for rule in rules:
        fuzz(rule)
    assert not tally.problems, "\n".join(tally.problems[:30])
    assert tally.seen.get(200, 0) > len(rules), tally.seen  # the pages were rendered, not refused at the door
