"""Commands: create-staff and seed-demo."""

from __future__ import annotations

import re

from wxapp_backend.auth.models import StaffUser
from wxapp_backend.enterprises.models import Building, Enterprise, Grid
from wxapp_backend.validation import credit_code_problem


def test_create_staff(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-staff", "zhangsan", "--password", "Secret123", "--role", "dept",
                                 "--department", "市场监管所"])
    assert result.exit_code == 0, result.output
    staff = db.query(StaffUser).filter_by(username="zhangsan").one()
    assert staff.role == "dept" and staff.department == "市场监管所" and "Secret123" not in staff.password_hash


def test_create_staff_refuses_bad_input_in_chinese(app, db):
    runner = app.test_cli_runner()
    weak = runner.invoke(args=["create-staff", "lisi", "--password", "123", "--role", "admin"])
    assert weak.exit_code != 0 and "密码" in weak.output
    no_dept = runner.invoke(args=["create-staff", "wangwu", "--password", "Secret123", "--role", "dept"])
    assert no_dept.exit_code != 0 and "部门" in no_dept.output
    runner.invoke(args=["create-staff", "zhao", "--password", "Secret123", "--role", "staff"])
    again = runner.invoke(args=["create-staff", "zhao", "--password", "Secret123", "--role", "staff"])
    assert again.exit_code != 0 and "已存在" in again.output
    assert db.query(StaffUser).count() == 1


def test_seed_demo_is_idempotent_and_prints_a_working_password(app, client, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    password = re.search(r"密码：(\S+)", first.output).group(1)
    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0 and "已存在" in second.output
    assert db.query(Enterprise).count() == 5 and db.query(Building).count() == 4 and db.query(Grid).count() == 3
    assert all(credit_code_problem(e.credit_code) is None for e in db.query(Enterprise))
    login = client.post("/api/v1/staff/login", json={"username": "admin", "password": password})
    assert login.status_code == 200
