"""QA session 18, crash safety (second pass): the chat's appeal intake while the database is briefly away, and
real SIGKILLs (the live worker of test_crash_qa_s18) in the middle of a notice's fan-out and of an activity
reminder."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy.exc import OperationalError

from handlers import appeal_intake as intake
from tests.integration.test_crash_qa_s9 import chat  # noqa: F401  (the fixture)
from wxapp_backend import db as db_module
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope

# --------------------------------------------------------------------------- 1. appeal intake, database away

LONG = ("我们公司在新华大厦12楼，最近三个星期楼下餐厅的油烟一直往上飘，每天中午和傍晚办公室里都是油烟味，"
        "员工开窗也不行，已经找过物业两次，物业说要和餐厅协调但一直没有结果，希望中心帮忙协调处理。") * 3


@pytest.fixture
def db_away(monkeypatch):
    """`with db_away():` every new database session fails to connect, as when PostgreSQL restarts."""
    real = db_module.session_scope

    @contextlib.contextmanager
    def away(*a, **kw):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        yield  # pragma: no cover

    @contextlib.contextmanager
    def switch():
        monkeypatch.setattr(db_module, "session_scope", away)
        try:
            yield
        finally:
            monkeypatch.setattr(db_module, "session_scope", real)

    return switch


def test_a_problem_told_with_wo_yao_fan_ying_is_kept_while_the_database_is_away(chat, db_away, redis_client,  # noqa: F811
                                                                               make_building):
    """“我要反映：<long text>” reads the database only for what it can fill in for the user (their enterprise, the
    contact of an appeal filed today); with the database away that read raised, the user got “请稍后再发一次” and
    the text they typed was in no draft. The draft now starts without those, the text kept."""
    make_building(name="新华大厦")
    with db_away():
        reply = chat("我要反映：" + LONG[:1990])
    assert reply.startswith("好的，我来帮您登记诉求"), reply
    assert "您说的问题已记下" in reply
    # the enterprise step, the database still away: the answer is kept as said (matched once it is back)
    with db_away():
        assert chat("上海某某科技有限公司，新华大厦").startswith("请留下联系人姓名和手机号")
    assert chat("张三 13800138000").startswith("如有现场照片")
    summary = chat("跳过")
    assert summary.startswith("请核对您的诉求") and f"楼宇：{intake.PLACE_CHECKED_LATER}" in summary, summary
    assert chat("确认").startswith("诉求已提交")
    with session_scope() as s:
        appeal = s.query(Appeal).order_by(Appeal.id.desc()).first()
        assert appeal.content == LONG[:1990]
        assert appeal.enterprise_name == "上海某某科技有限公司"
        assert appeal.building_id is not None and appeal.contact_phone == "13800138000"


def test_restart_while_the_database_is_away_starts_a_new_draft(chat, db_away):  # noqa: F811
    assert chat("我要反映").startswith("好的")
    with db_away():
        assert chat("重新开始").startswith("好的，我来帮您登记诉求")
        assert chat("办公楼空调不制冷，物业一直不处理").startswith("请告诉我企业名称")
