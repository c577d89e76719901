"""Nineteenth QA pass, fresh-eyes review of the session's changes (PostgreSQL row locks).

building_to_point_at share-locks the building a row is pointed at, so that a merge of that building either waits for
the caller or the caller waits for the merge. A merge locks the duplicate building, then the enterprises, users,
activities and appeals in it. A caller that already held one of those rows (the user's row for the daily cap, the
activity or enterprise being edited, the user's row written by an autoflush) and then asked for the building locked
the other way round: the two waited for each other and PostgreSQL failed one of them (deadlock detected). Each test
holds one transaction at a chosen statement (the gates of test_bldrace_qa_s19) so the interleaving is the same on
every run; each fails on the code before the fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_bldrace_qa_s19 import (  # noqa: F401 - gates: a fixture
    ADMIN,
    WAIT,
    _merge,
    _run,
    gates,
)
from tests.integration.test_buildings_qa_s18 import _two_grids
from wxapp_backend.activities import services as activities
from wxapp_backend.activities.models import Activity
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.auth import services as auth
from wxapp_backend.auth.models import User
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Enterprise

pytestmark = pytest.mark.postgres


def _buildings(make_grid, make_building, make_staff):
    first, second = _two_grids(make_grid, make_staff)
    keep = make_building(name="环球港A座", grid_id=second.id)
    dup = make_building(name="环球港 A座", grid_id=first.id)
    return keep, dup


def _race(app, gates, who: str, held_at, fn, keep_id: int, dup_id: int) -> dict[str, Any]:
    """`fn` on thread `who`, held at `held_at` (after the row lock it takes first), while the merge of `dup_id` into
    `keep_id` runs as far as it can; then both are let go and their results returned."""
    held = gates(who, held_at, after=True)
    out: dict[str, Any] = {}
    caller = _run(app, who, fn, out)
    assert held.reached.wait(WAIT)
    merge = _run(app, "merge", _merge(keep_id, dup_id), out)
    merge.join(1)  # as far as it goes: on to the row the caller holds
    held.go.set()
    caller.join(WAIT)
    merge.join(WAIT)
    assert isinstance(out["merge"], dict), repr(out["merge"])
    return out


def _locks(table: str):
    return lambda sql: f"FROM {table}" in sql and "FOR UPDATE" in sql


def test_an_appeal_from_a_user_of_the_duplicate_building_does_not_deadlock_the_merge(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """A user whose building is the duplicate files an appeal (the building taken from their profile) as an admin
    merges it. Before: the submission held the user's row (the daily cap) and waited for the building, the merge held
    the building and waited for the user: one of them failed (DeadlockDetected; in the chat “系统繁忙”, on the
    console a 500). Now the user's building is share-locked before their row, as the merge takes them."""
    keep, dup = _buildings(make_grid, make_building, make_staff)
    user_id = make_user(building_id=dup.id).id

    def submit(s):
        appeal, _ = appeals.submit_appeal(s, user_id, appeals.Intake(
            content="楼道里的灯坏了好几天了，麻烦安排物业修一下", contact_name="王先生", contact_phone="13800138000"),
            daily_limit=appeals.MAX_APPEALS_PER_DAY)
        return appeal.id

    out = _race(app, gates, "user", _locks("users"), submit, keep.id, dup.id)
    assert isinstance(out["user"], int), repr(out["user"])
    db.expire_all()
    assert db.get(Appeal, out["user"]).building_id == keep.id
    assert db.get(User, user_id).building_id == keep.id


def test_an_activity_edited_at_the_duplicate_building_does_not_deadlock_the_merge(
    app, gates, make_grid, make_building, make_activity, make_staff, db
):
    """Staff edit an activity held in the duplicate building (the form sends its venue again, unchanged) as an admin
    merges it. Before: the edit held the activity and waited for the building, the merge the other way round. An
    unchanged venue is not re-pointed: nothing to lock, and the merge moves the activity after the edit's commit."""
    keep, dup = _buildings(make_grid, make_building, make_staff)
    activity_id = make_activity(building_id=dup.id).id

    def edit(s):
        return activities.update_activity(s, ADMIN, activity_id, {"title": "垂直马拉松（秋季）",
                                                                   "building_id": dup.id}).id

    out = _race(app, gates, "staff", _locks("activities"), edit, keep.id, dup.id)
    assert out["staff"] == activity_id, repr(out["staff"])
    assert activity_id in out["merge"]["moved"]["activities"]
    db.expire_all()
    a = db.get(Activity, activity_id)
    assert (a.title, a.building_id) == ("垂直马拉松（秋季）", keep.id)


def test_an_enterprise_edited_at_the_duplicate_building_does_not_deadlock_the_merge(
    app, gates, make_grid, make_building, make_enterprise, make_staff, db
):
    """The console's enterprise form (edited since `seen`: the file is locked for the edit) sends the building again,
    unchanged, as an admin merges that building: the same deadlock, the same cure."""
    keep, dup = _buildings(make_grid, make_building, make_staff)
    ent = make_enterprise(building_id=dup.id)

    def edit(s):
        return services.update_enterprise(s, ADMIN, ent.id, {"contact_phone": "021-63330000", "building_id": dup.id},
                                          seen=ent.updated_at).id

    out = _race(app, gates, "staff", _locks("enterprises"), edit, keep.id, dup.id)
    assert out["staff"] == ent.id, repr(out["staff"])
    assert ent.id in out["merge"]["moved"]["enterprises"]
    db.expire_all()
    e = db.get(Enterprise, ent.id)
    assert (e.contact_phone, e.building_id) == ("021-63330000", keep.id)


def test_a_profile_saved_with_its_building_unchanged_does_not_deadlock_the_merge(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """The mini-program's profile page saves the nickname with the building it shows (the duplicate) as an admin
    merges it. Before: the nickname's UPDATE (an autoflush) held the user's row while the building was share-locked:
    the deadlock again. An unchanged building is not re-pointed and needs no lock."""
    keep, dup = _buildings(make_grid, make_building, make_staff)
    user_id = make_user(building_id=dup.id).id

    def save(s):
        auth.update_profile(s, s.get(User, user_id), nickname="小王", building_id=dup.id)
        s.flush()
        return user_id

    out = _race(app, gates, "user", lambda sql: sql.lstrip().startswith("UPDATE users SET"), save, keep.id, dup.id)
    assert out["user"] == user_id, repr(out["user"])
    db.expire_all()
    u = db.get(User, user_id)
    assert (u.nickname, u.building_id) == ("小王", keep.id)
