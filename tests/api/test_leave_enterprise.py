"""A user may withdraw their enterprise binding application or end a binding themselves (DELETE /me/enterprise):
they had no way to, short of asking staff, after choosing the wrong company or changing jobs."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.audit import AuditLog

CODE = "91440300708461136T"


def _me(client, headers) -> dict:
    return client.get("/api/v1/me", headers=headers).get_json()


def test_withdraw_a_pending_application_then_end_a_verified_binding(client, make_user, user_token, make_enterprise,
                                                                    db):
    user = make_user()
    headers = user_token(user)
    resp = client.post("/api/v1/me/enterprise", json={"name": "上海测试科技有限公司", "credit_code": CODE},
                       headers=headers)
    assert resp.status_code == 200 and resp.get_json()["binding_state"] == "pending", resp.get_json()
    gone = client.delete("/api/v1/me/enterprise", headers=headers)
    assert gone.status_code == 200
    assert (gone.get_json()["binding_state"], gone.get_json()["enterprise"]) == ("none", None)
    assert _me(client, headers)["binding_state"] == "none"
    # Verified, then ended.
    enterprise = make_enterprise(name="另一家公司")
    verified = make_user(enterprise_id=enterprise.id, binding_state="verified")
    vh = user_token(verified)
    assert client.delete("/api/v1/me/enterprise", headers=vh).get_json()["binding_state"] == "none"
    actions = [a for (a,) in db.execute(select(AuditLog.action).where(AuditLog.action.like("binding.%"))
                                        .order_by(AuditLog.id))]
    assert actions == ["binding.requested", "binding.withdrawn", "binding.ended"]
    # Nothing to leave: still fine, nothing written.
    assert client.delete("/api/v1/me/enterprise", headers=vh).status_code == 200
    assert db.scalar(select(AuditLog.id).where(AuditLog.action == "binding.ended").order_by(AuditLog.id.desc())
                     .offset(1)) is None


def test_needs_a_login(client):
    assert client.delete("/api/v1/me/enterprise").status_code == 401
