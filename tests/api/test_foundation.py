"""The application spine: health, metrics, errors, body limits, OpenAPI, request ids."""

from __future__ import annotations

import json

from wxapp_backend.openapi import build_spec


def test_healthz_reports_each_part(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "db": "ok", "redis": "ok"}


def test_healthz_names_the_failing_part(app, client, monkeypatch):
    import redis

    state = app.extensions["wxapp"]

    def boom():
        raise redis.ConnectionError("down")

    monkeypatch.setattr(state.health_redis, "ping", boom)  # the health check's own short-timeout client
    resp = client.get("/healthz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["redis"] == "error" and body["db"] == "ok" and body["failing"] == ["redis"]
    assert "Redis" in body["message"]


def test_healthz_names_a_failing_database(app, client, monkeypatch):
    state = app.extensions["wxapp"]

    def broken_connect(*a, **kw):
        raise RuntimeError("db down")

    monkeypatch.setattr(state.db, "health_connection", broken_connect)  # the checks' own connection
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.get_json()["failing"] == ["db"]


def test_metrics_counts_requests_by_endpoint(client):
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="ops.healthz",method="GET",status="200"}' in text
    assert "http_request_seconds_bucket" in text
    assert "job_queue_depth" in text


def test_unknown_api_route_is_json_404(client):
    resp = client.get("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"
    assert resp.get_json()["message"]


def test_wrong_method_is_json_405_with_allow(client):
    resp = client.get("/api/v1/auth/login")
    assert resp.status_code == 405
    assert "POST" in resp.headers["Allow"]


def test_unexpected_exception_is_500_without_internals(app, settings):
    from wxapp_backend import create_app

    fresh = create_app(settings)

    @fresh.get("/api/v1/_boom_for_test")
    def _boom():
        raise RuntimeError("secret internals: password=hunter2")

    resp = fresh.test_client().get("/api/v1/_boom_for_test", headers={"X-Request-Id": "abc123"})
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"] == "internal_error"
    assert "hunter2" not in resp.get_data(as_text=True)
    assert "abc123" in body["message"]
    assert resp.headers["X-Request-Id"] == "abc123"


def test_malformed_json_is_400(client):
    resp = client.post("/api/v1/auth/login", data="{not json", content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "malformed_json"


def test_wrong_content_type_is_400(client):
    resp = client.post("/api/v1/auth/login", data="code=abc", content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "unsupported_media_type"


def test_json_array_instead_of_object_is_400(client):
    resp = client.post("/api/v1/auth/login", data="[1,2]", content_type="application/json")
    assert resp.status_code == 400


def test_oversized_body_is_413(client):
    big = json.dumps({"code": "x" * (2 * 1024 * 1024)})
    resp = client.post("/api/v1/auth/login", data=big, content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "payload_too_large"


def test_body_over_global_limit_is_413(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    resp = client.post("/console/login", data=b"x" * (limit + 10), content_type="application/octet-stream")
    assert resp.status_code == 413


def test_openapi_describes_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    registered = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "openapi.spec" and "_for_test" not in rule.rule:
            path = rule.rule
            import re

            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
            for m in rule.methods - {"HEAD", "OPTIONS"}:
                registered.add((path, m.lower()))
    assert registered <= documented
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "_for_test" in path:
                continue
            assert op["summary"], f"{method.upper()} {path} has no summary: add @doc to the view"
            if method in {"post", "put", "patch"}:
                assert "requestBody" in op, f"{method.upper()} {path} has no request body schema"


def test_openapi_request_schema_comes_from_fields(app):
    spec = build_spec(app)
    body = spec["paths"]["/api/v1/me/enterprise"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"name", "credit_code"}
    assert body["properties"]["credit_code"]["maxLength"] == 18


def test_request_id_is_generated(client):
    resp = client.get("/healthz")
    assert len(resp.headers["X-Request-Id"]) == 16


def test_hostile_request_id_is_replaced(client):
    resp = client.get("/healthz", headers={"X-Request-Id": "<script>alert(1)</script>"})
    assert "<" not in resp.headers["X-Request-Id"]


def test_an_id_beyond_the_integer_columns_is_404_not_500(client, make_user, user_token):
    """Found by tests/api/test_api_fuzz.py: PostgreSQL refuses an INTEGER out of range (SQLite: overflow)."""
    headers = user_token(make_user())
    for path in ("/api/v1/appeals/2147483648", "/api/v1/activities/99999999999999999999999"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 404, (path, resp.get_data(as_text=True))
        assert resp.get_json()["error"] == "not_found"
    assert client.get("/api/v1/appeals/2147483647", headers=headers).status_code == 404  # largest id: looked up


def test_integer_and_date_fields_out_of_the_database_range_are_422(client, make_user, user_token):
    headers = user_token(make_user())
    resp = client.patch("/api/v1/me", json={"building_id": 2**31}, headers=headers)
    assert resp.status_code == 422 and "building_id" in resp.get_json()["fields"]
    resp = client.get("/api/v1/activities?date=0001-01-01", headers=headers)
    assert resp.status_code == 422 and "年份" in resp.get_json()["fields"]["date"]
    assert client.get("/api/v1/activities?date=2026-12-05", headers=headers).status_code == 200
