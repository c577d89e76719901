"""Industries are matched whole against the enterprise's industry, and standard names hold 、
(交通运输、仓储和邮政业; 信息传输、软件和信息技术服务业). The console split its industry boxes on 、, so such an
industry could never be targeted: it became two names no enterprise has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wxapp_backend.activities.models import Activity
from wxapp_backend.notices.broadcast_models import Notice

LOGISTICS, IT = "交通运输、仓储和邮政业", "信息传输、软件和信息技术服务业"


def test_the_notice_composer_keeps_an_industry_with_a_comma_of_its_own(client, make_staff, console_login, db):
    csrf = console_login(make_staff(role="staff"))
    resp = client.post("/console/notices/new", data={"csrf_token": csrf, "title": "物流企业座谈会",
                                                     "kind": "policy", "industries": f"{LOGISTICS}，{IT}\n制造业"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    notice = db.query(Notice).one()
    assert notice.audience["industries"] == [LOGISTICS, IT, "制造业"]
    refused = client.post("/console/notices/new", data={"csrf_token": csrf, "title": "", "kind": "policy",
                                                        "industries": f"{LOGISTICS}，{IT}"})
    assert refused.status_code == 422
    assert f"{LOGISTICS}，{IT}" in refused.get_data(as_text=True)  # shown back as it is read


def test_the_activity_editor_too(client, make_staff, console_login, db):
    csrf = console_login(make_staff(role="staff"))
    start = datetime.now(UTC) + timedelta(days=2, hours=8)
    resp = client.post("/console/activities/new", data={
        "csrf_token": csrf, "category": "cfo_salon", "title": "物流企业财务沙龙", "address": "服务中心 2 楼",
        "starts_at": start.strftime("%Y-%m-%dT%H:%M"), "ends_at": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
        "capacity": "20", "status": "published", "audience_industries": f"{LOGISTICS}, {IT}"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert db.query(Activity).one().audience_industries == [LOGISTICS, IT]
