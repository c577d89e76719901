"""QA pass 18 (browser): this session's console pages in headless Chromium, as an admin at a desk and a department
account on a 390px phone: a duplicate building merged into another through its edit page (asked first, refused
until the grid is confirmed), and a stored weekly report opened from 历史周报存档 and its workbook downloaded.
With them, two small faults of the live weekly report found on the way: a week sent with a control character in it
(week=%00) was read as "no week" and answered with last week's report, and its workbook said which week but not
which days."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
from openpyxl import load_workbook
from sqlalchemy import text

from tests.e2e.conftest import BrowserLog, chromium_page
from tests.e2e.helpers import run_flask
from tests.e2e.test_browser3_qa_s16 import _login, _make_appeal

pytestmark = pytest.mark.e2e

PHONE = 390
DEPT_USER, DEPT_PASSWORD = "qa18dept", "Passw0rd!x"

FOCUS_OUTLINE = "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"


def _overview(data: bytes) -> list[tuple]:
    return list(load_workbook(io.BytesIO(data))["概览"].iter_rows(values_only=True))


def _fits(page, width: int = PHONE) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


def _errors(log: BrowserLog, *allowed: str) -> list[str]:
    """Console errors, less the status lines of answers the test itself provokes (a 409 refusal)."""
    return [m for m in log.console_errors if not any(f"status of {a}" in m for a in allowed)]


# --- 2. small faults of the live weekly report (the test client is enough) ---------------------------------------


@pytest.mark.parametrize("week", ["%00", "%1F", "%7F", "%0A", "2025-W4%003", "%C2%85"])
def test_a_week_with_a_control_character_in_it_is_a_mistyped_week_not_last_week(
    client, make_staff, console_login, staff_headers, week
):
    """`week=%00` was cleaned to nothing and answered 200 with last week's figures, as if no week had been asked."""
    admin = make_staff(role="admin")
    console_login(admin)
    page = client.get(f"/console/appeals/report?week={week}")
    assert page.status_code == 422 and "周次格式不对" in page.get_data(as_text=True), page.status_code
    assert client.get(f"/console/appeals/report.xlsx?week={week}").status_code == 422
    api = client.get(f"/api/v1/staff/reports/weekly?week={week}", headers=staff_headers(admin))
    assert api.status_code == 422 and "周次" in api.get_json()["message"], api.get_json()
    # Blank is still "no week" (last week), as an empty box is.
    assert client.get("/console/appeals/report?week=%20").status_code == 200


@pytest.mark.parametrize(("week", "days"), [("2025-W43", "2025年10月20日 至 10月26日"),
                                             ("2026-W01", "2025年12月29日 至 2026年1月4日")])
def test_the_weekly_workbook_says_which_days_the_week_is(client, make_staff, console_login, week, days):
    """The workbook sent upwards said “2025-W43” only: which Monday that is, nobody reading it knew."""
    console_login(make_staff(role="admin"))
    assert days in client.get(f"/console/appeals/report?week={week}").get_data(as_text=True)  # the page heading
    first = _overview(client.get(f"/console/appeals/report.xlsx?week={week}").data)[0]
    assert first[:2] == ("周次", week)
    assert any(isinstance(v, str) and days in v and "周一至周日" in v for v in first), first


# --- 1. the pages in Chromium --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored_week(live_server) -> str:
    """Last week stored by the Monday job (run as the CLI runs it), holding one appeal the 营商办 handled, and a
    营商办 department account to read it with."""
    from wxapp_backend.db import Database

    db = Database(live_server.service.database_url)
    try:
        appeal_id = _make_appeal(db, content="园区停车场收费标准不清楚，想问问怎么办月卡")
        with db.session_scope() as s:
            s.execute(text("UPDATE appeals SET submitted_at = :t, department = '营商办', given_to = '营商办' "
                           "WHERE id = :a"), {"t": datetime.now(UTC) - timedelta(days=7), "a": appeal_id})
    finally:
        db.engine.dispose()
    env = live_server.service.env
    done = run_flask(["appeals", "weekly"], env)
    run_flask(["create-staff", DEPT_USER, "--password", DEPT_PASSWORD, "--role", "dept", "--department", "营商办"],
              env)
    return done.split()[0]  # "2026-W49 周报已生成。"


@pytest.fixture
def phone(live_server, chromium_executable) -> Iterator[tuple[object, BrowserLog]]:
    with chromium_page(chromium_executable, width=PHONE, prefix="wxapp-e2e-s18-") as opened:
        yield opened


def _login_dept(page, server) -> None:
    page.goto(server.base_url + "/console/login")
    page.fill("#username", DEPT_USER)
    page.fill("#password", DEPT_PASSWORD)
    with page.expect_navigation():
        page.click("#login-submit")
    assert urlsplit(page.url).path == "/console/", page.url


@pytest.mark.parametrize("who", ["admin", "dept"])
def test_a_stored_weekly_report_is_opened_from_the_list_and_its_workbook_downloads(
    live_server, chromium_executable, stored_week, who
):
    width = 1280 if who == "admin" else PHONE
    with chromium_page(chromium_executable, width=width, prefix="wxapp-e2e-s18-") as (page, log):
        (_login if who == "admin" else _login_dept)(page, live_server)
        page.goto(live_server.base_url + "/console/appeals/report")
        with page.expect_navigation():
            page.click("#stored-reports-link")
        assert urlsplit(page.url).path == "/console/appeals/reports"
        _fits(page, width)
        with page.expect_navigation():
            page.locator(f"#stored-{stored_week} a", has_text=stored_week).click()
        assert urlsplit(page.url).path == f"/console/appeals/reports/{quote(stored_week)}"
        heading = page.inner_text("h1")
        assert "存档" in heading and stored_week in heading and "至" in heading, heading
        assert "为当时的数据" in page.inner_text("#stored-note")
        if who == "dept":
            assert "营商办" in page.inner_text("#report-scope")
        _fits(page, width)
        with page.expect_download() as got:
            page.click("#stored-xlsx")
        download = got.value
        assert download.failure() is None
        with open(download.path(), "rb") as fh:
            overview = _overview(fh.read())
        assert overview[0][:2] == ("周次", stored_week) and "至" in (overview[0][2] or ""), overview[0]
        assert overview[1][0] == "存档"
        assert ("本周新增", 1) in [r[:2] for r in overview]
        # The link back to the live figures of the same week answers.
        with page.expect_navigation():
            page.get_by_role("link", name="看这一周的实时统计").click()
        assert page.inner_text("h1").startswith("诉求周报 "), page.inner_text("h1")
        assert not _errors(log), log.console_errors


def _building_ids(database_url: str) -> dict[str, int]:
    from wxapp_backend.db import Database

    db = Database(database_url)
    try:
        with db.session_scope() as s:
            return {name: bid for bid, name in s.execute(text("SELECT id, name FROM buildings"))}
    finally:
        db.engine.dispose()


def test_an_admin_merges_a_duplicate_building_from_its_edit_page_on_a_phone(live_server, phone):
    page, log = phone
    sent: list[str] = []
    page.on("request", lambda r: sent.append(urlsplit(r.url).path) if r.method == "POST" else None)
    before = _building_ids(live_server.service.database_url)
    keep, same_grid, other_grid = before["上生·新所"], before["新华路 669 号园区"], before["番禺路商务楼"]
    _login(page, live_server)
    page.goto(f"{live_server.base_url}/console/buildings/{keep}/edit")
    _fits(page)
    # The merge form's parts stand one under the other, as the edit form's do: on a phone the checkbox and its long
    # sentence sat on the select's line, the button squeezed in after them.
    select = page.locator("#f-duplicate").bounding_box()
    checkbox = page.locator("#f-confirm_grid").bounding_box()
    button = page.locator("#merge-submit").bounding_box()
    assert checkbox["y"] >= select["y"] + select["height"], (select, checkbox)
    assert button["y"] >= checkbox["y"] + checkbox["height"], (checkbox, button)

    # Asked first; 取消 sends nothing.
    page.select_option("#f-duplicate", str(same_grid))
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    sent.clear()
    page.click("#merge-submit")
    page.wait_for_function("() => true")
    assert asked and "新华路 669 号园区" not in asked[0] and "上生·新所" in asked[0], asked
    assert not [p for p in sent if p.endswith("/merge")], sent
    assert "新华路 669 号园区" in _building_ids(live_server.service.database_url)

    # Another grid's building: refused until the grid is confirmed, and the refusal names the box by its words.
    page.select_option("#f-duplicate", str(other_grid))
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click("#merge-submit")
    refusal = page.inner_text("#merge-error")
    assert "网格" in refusal and "番禺路商务楼" in _building_ids(live_server.service.database_url)
    named = refusal.split("勾选“", 1)[1].split("”", 1)[0] if "勾选“" in refusal else ""
    label = page.locator("label", has=page.locator("#f-confirm_grid")).inner_text()
    assert named and named in label, (named, label)
    assert page.evaluate("document.activeElement.id") == "f-confirm_grid"
    assert page.locator("#f-duplicate").input_value() == str(other_grid)  # still chosen, to confirm and send
    _fits(page)
    page.keyboard.press("Tab")  # keyboard focus is visible on the button it moves to
    assert page.evaluate("document.activeElement.id") == "merge-submit"
    style, width = page.evaluate(FOCUS_OUTLINE)
    assert style != "none" and width != "0px", (style, width)

    page.check("#f-confirm_grid")
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click("#merge-submit")
    assert urlsplit(page.url).path == f"/console/buildings/{keep}/edit"
    done = page.locator(".flash[role=status]").all_inner_texts()
    assert done and "番禺路商务楼" in done[0] and "已删除" in done[0], done
    assert "番禺路商务楼" not in _building_ids(live_server.service.database_url)
    assert "番禺路商务楼" not in page.locator("#f-duplicate").inner_text()
    _fits(page)
    assert not _errors(log, "409"), log.console_errors
