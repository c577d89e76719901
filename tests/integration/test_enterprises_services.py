"""Enterprise, building and grid services on a real database: uniqueness, credit codes, search, bindings."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import BindingState, User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Building, Enterprise
from wxapp_backend.errors import Conflict, NotFound, ValidationError

ACTOR = Actor("staff", 7, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def _audits(db, action: str) -> list[AuditLog]:
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_create_grid_building_enterprise_with_audit(app_ctx, db):
    with session_scope() as s:
        grid = services.create_grid(s, ACTOR, {"name": "新华一网格", "specialist_name": "王专员",
                                               "specialist_phone": "13800000000"})
        building = services.create_building(s, ACTOR, {"name": "新华大厦", "address": "新华路 1 号",
                                                       "grid_id": grid.id})
        e = services.create_enterprise(s, ACTOR, {"name": "上海甲有限公司", "credit_code": code(1).lower(),
                                                  "building_id": building.id, "tags": "高新技术、专精特新|高新技术"})
    assert e.credit_code == code(1)  # upper-cased
    assert e.tags == ["高新技术", "专精特新"]
    assert e.industry == ""
    for action in ("grid.created", "building.created", "enterprise.created"):
        rows = _audits(db, action)
        assert len(rows) == 1 and rows[0].actor_id == "7"


def test_duplicate_names_and_codes_are_409_naming_the_conflict(app_ctx, make_grid, make_building, make_enterprise):
    make_grid(name="新华一网格")
    make_building(name="新华大厦")
    make_enterprise(name="已有企业有限公司", credit_code=code(2))
    with pytest.raises(Conflict, match="新华一网格"), session_scope() as s:
        services.create_grid(s, ACTOR, {"name": "新华一网格"})
    with pytest.raises(Conflict, match="新华大厦"), session_scope() as s:
        services.create_building(s, ACTOR, {"name": "新华大厦"})
    with pytest.raises(Conflict) as info, session_scope() as s:
        services.create_enterprise(s, ACTOR, {"name": "新企业有限公司", "credit_code": code(2)})
    assert "已有企业有限公司" in info.value.message and code(2) in info.value.message
    assert info.value.status == 409


def test_wrong_check_digit_is_refused(app_ctx):
    bad = code(3)[:-1] + ("0" if code(3)[-1] != "0" else "1")
    with pytest.raises(ValidationError) as info, session_scope() as s:
        services.create_enterprise(s, ACTOR, {"name": "校验位企业", "credit_code": bad})
    assert "校验位" in info.value.fields["credit_code"]


def test_update_changes_only_given_fields_and_audits_changes(app_ctx, db, make_enterprise, make_building):
    e = make_enterprise(industry="餐饮", contact_name="张三")
    b = make_building()
    with session_scope() as s:
        services.update_enterprise(s, ACTOR, e.id, {"building_id": b.id, "contact_phone": "021-63211234"})
    got = db.get(Enterprise, e.id)
    assert (got.industry, got.contact_name, got.building_id, got.contact_phone) == ("餐饮", "张三", b.id,
                                                                                   "021-63211234")
    [row] = _audits(db, "enterprise.updated")
    assert set(row.data["changes"]) == {"building_id", "contact_phone"}


def test_update_to_another_enterprises_code_is_409(app_ctx, make_enterprise):
    a = make_enterprise(credit_code=code(4))
    make_enterprise(name="乙公司", credit_code=code(5))
    with pytest.raises(Conflict, match="乙公司"), session_scope() as s:
        services.update_enterprise(s, ACTOR, a.id, {"credit_code": code(5)})
    with session_scope() as s:  # keeping its own code is fine
        services.update_enterprise(s, ACTOR, a.id, {"credit_code": code(4), "name": "甲公司"})


def test_unknown_building_and_missing_rows(app_ctx):
    with pytest.raises(ValidationError), session_scope() as s:
        services.create_enterprise(s, ACTOR, {"name": "某公司", "credit_code": code(6), "building_id": 999})
    with pytest.raises(NotFound), session_scope() as s:
        services.update_enterprise(s, ACTOR, 999, {"name": "x公司"})


def test_delete_building_with_enterprises_is_refused(app_ctx, db, make_building, make_enterprise):
    b = make_building(name="有企业的楼")
    make_enterprise(building_id=b.id)
    with pytest.raises(Conflict, match="1 家企业"), session_scope() as s:
        services.delete_building(s, ACTOR, b.id)
    empty = make_building()
    with session_scope() as s:
        services.delete_building(s, ACTOR, empty.id)
    assert db.get(Building, empty.id) is None
    assert len(_audits(db, "building.deleted")) == 1


def test_delete_grid_with_buildings_is_refused(app_ctx, make_grid, make_building):
    g = make_grid()
    make_building(grid_id=g.id)
    with pytest.raises(Conflict, match="1 栋楼宇"), session_scope() as s:
        services.delete_grid(s, ACTOR, g.id)


def test_delete_enterprise_unbinds_its_users(app_ctx, db, make_enterprise, make_user):
    e = make_enterprise()
    u = make_user(enterprise_id=e.id, binding_state="verified", role="enterprise_contact")
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, e.id)
    user = db.get(User, u.id)
    assert user.enterprise_id is None and user.binding_state == BindingState.NONE
    [row] = _audits(db, "enterprise.deleted")
    assert row.data["unbound_users"] == [u.id]


def test_search_filters_and_paginates(app_ctx, make_grid, make_building, make_enterprise):
    g1, g2 = make_grid(name="一网格"), make_grid(name="二网格")
    b1, b2 = make_building(name="甲楼", grid_id=g1.id), make_building(name="乙楼", grid_id=g2.id)
    for i in range(25):
        make_enterprise(name=f"新华科技{i:02d}有限公司", credit_code=code(100 + i), building_id=b1.id,
                        industry="信息技术", tags=["高新技术"] if i % 5 == 0 else [])
    make_enterprise(name="100%_纯餐饮公司", credit_code=code(200), building_id=b2.id, industry="餐饮",
                    tags=["重点企业", "高新技术企业"])
    with session_scope() as s:
        page = services.search_enterprises(s, q="科技", per_page=10, page=3)
        assert (page.total, len(page.items), page.pages, page.has_next) == (25, 5, 3, False)
        assert services.search_enterprises(s, q=code(200)[-7:].lower()).total == 1
        assert services.search_enterprises(s, building_id=b2.id).total == 1
        assert services.search_enterprises(s, grid_id=g1.id).total == 25
        assert services.search_enterprises(s, industry="餐饮").total == 1
        # A tag matches whole tags only, and LIKE wildcards in the query are literal.
        assert services.search_enterprises(s, tag="高新技术").total == 5
        assert services.search_enterprises(s, tag="高新技术企业").total == 1
        assert services.search_enterprises(s, q="100%_").total == 1
        assert services.search_enterprises(s, q="%").total == 1
        assert services.industries(s) == sorted(["信息技术", "餐饮"])


def test_list_users_by_binding_state_and_decide(app_ctx, db, make_enterprise, make_user):
    e = make_enterprise()
    pending = make_user(enterprise_id=e.id, binding_state="pending", nickname="待核实的人")
    make_user(binding_state="none")
    with session_scope() as s:
        page = services.list_users(s, state="pending")
        assert [u.id for u in page.items] == [pending.id]
        assert services.list_users(s).total == 2
        services.decide_binding(s, ACTOR, pending.id, approve=True)
    with pytest.raises(Conflict), session_scope() as s:
        services.decide_binding(s, ACTOR, pending.id, approve=False)
    assert db.get(User, pending.id).binding_state == "verified"
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "binding.verified")) == 1


def test_tag_with_separator_is_split_not_stored_whole(app_ctx):
    with session_scope() as s:
        e = services.create_enterprise(s, ACTOR, {"name": "标签公司", "credit_code": code(300),
                                                  "tags": ["a|b", " c "]})
    assert e.tags == ["a", "b", "c"]


def _race(app, decide_first, decide_second) -> list[str]:
    """A decides and holds its transaction open while B decides the same binding; returns the outcomes."""
    import threading

    locked, outcomes = threading.Event(), []

    def first():
        with app.app_context(), session_scope() as s:
            decide_first(s)
            outcomes.append("first ok")
            locked.set()
            threading.Event().wait(0.5)  # keep the row locked a while

    def second():
        locked.wait(5)
        with app.app_context():
            try:
                with session_scope() as s:
                    decide_second(s)
                outcomes.append("second ok")
            except Conflict:
                outcomes.append("second 409")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return outcomes


@pytest.mark.postgres
def test_two_staff_deciding_at_once_one_gets_409(app, app_ctx, db, make_enterprise, make_user):
    u = make_user(enterprise_id=make_enterprise().id, binding_state="pending")
    outcomes = _race(app, lambda s: services.decide_binding(s, ACTOR, u.id, approve=True),
                     lambda s: services.decide_binding(s, ACTOR, u.id, approve=False))
    assert sorted(outcomes) == ["first ok", "second 409"]
    assert db.get(User, u.id).binding_state == "verified"


@pytest.mark.postgres
def test_negative_control_without_the_row_lock_both_decisions_pass(app, app_ctx, make_enterprise, make_user):
    u = make_user(enterprise_id=make_enterprise().id, binding_state="pending")

    def unlocked(s, state):
        user = s.get(User, u.id)
        if user.binding_state != "pending":
            raise Conflict()
        user.binding_state = state

    outcomes = _race(app, lambda s: unlocked(s, "verified"), lambda s: unlocked(s, "rejected"))
    assert sorted(outcomes) == ["first ok", "second ok"]  # the race the lock prevents
