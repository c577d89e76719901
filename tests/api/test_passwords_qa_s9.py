"""Passwords are checked whole and read alike by every login."""

from __future__ import annotations

import re

import pytest

from wxapp_backend.auth.services import validate_password


def _login(client, username: str, password: str):
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/console/login", data={"username": username, "password": password, "csrf_token": token})


def test_the_console_does_not_cut_a_long_password(client, make_staff):
    """The form's password was cut at 128 characters: the right 128-character password followed by anything
    logged in."""
    password = "Ab1" + "x" * 125
    staff = make_staff(password=password)
    assert _login(client, staff.username, password + "anything").status_code == 401
    assert _login(client, staff.username, password).status_code == 302


@pytest.mark.parametrize("password", [" Passw0rd!x", "Passw0rd!x ", "Pass\tw0rd!x", "Passw0rd\n1"])
def test_a_password_the_scripted_login_would_read_differently_is_refused(password):
    """The JSON login trims fields and drops control characters, so such a password, accepted at creation,
    logged in at the console and never by API."""
    assert validate_password(password)


def test_an_ordinary_password_with_inner_spaces_is_fine(client, make_staff):
    staff = make_staff(password="correct horse 42")
    resp = client.post("/api/v1/staff/login", json={"username": staff.username, "password": "correct horse 42"})
    assert resp.status_code == 200, resp.get_json()
