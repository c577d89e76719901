"""Appeal photos live under UPLOADS_PATH when it is set: with several machines a folder they all mount, since a
photo stored by one (a web machine for the mini-program, a worker for the chat) is served by another. They were
always written under each machine's own instance/, so another machine answered 404."""

from __future__ import annotations

import base64

from wxapp_backend import create_app
from wxapp_backend.kv import stop_embedded_redis

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


def test_a_photo_stored_by_one_machine_is_served_by_another(app, settings, tmp_path, make_user, user_token):
    shared = tmp_path / "shared-uploads"
    state = app.extensions["wxapp"]
    # Two machines: one database and one Redis, each its own instance folder, the uploads on a shared mount.
    common = {"database_url": settings.resolved_database_url, "redis_url": state.redis_url, "uploads_path": shared}
    first = create_app(settings.with_overrides(instance_path=tmp_path / "machine-a", **common))
    second = create_app(settings.with_overrides(instance_path=tmp_path / "machine-b", **common))
    try:
        _one_stores_the_other_serves(first, second, shared, tmp_path, make_user, user_token)
    finally:
        for name in ("machine-a", "machine-b"):  # whatever a part of the app started there
            stop_embedded_redis(tmp_path / name)


def _one_stores_the_other_serves(first, second, shared, tmp_path, make_user, user_token):
    user = make_user()
    headers = user_token(user)
    resp = first.test_client().post("/api/v1/appeals", headers=headers, json={
        "content": "楼下的路灯坏了一个星期了", "contact_name": "张三", "contact_phone": "13800138000", "images": [PNG]})
    assert resp.status_code == 201, resp.get_json()
    appeal = resp.get_json()
    name = appeal["images"][0]
    assert (shared / "appeals" / name).is_file()
    assert not (tmp_path / "machine-a" / "uploads").exists()
    photo = second.test_client().get(f"/api/v1/appeals/{appeal['id']}/images/{name}", headers=headers)
    assert photo.status_code == 200 and photo.data.startswith(b"\x89PNG")


def test_uploads_path_from_the_environment(tmp_path):
    from wxapp_backend.config import Settings

    assert Settings.from_env({"INSTANCE_PATH": str(tmp_path)}).uploads_path is None
    assert Settings.from_env({"INSTANCE_PATH": str(tmp_path), "UPLOADS_PATH": "/srv/wxapp-uploads"}).uploads_path \
        .as_posix() == "/srv/wxapp-uploads"
