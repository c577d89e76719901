"""Demo data for a newcomer's first run: buildings, grids, enterprises, an admin account, and the activities,
notices and appeals (in several states) that make every console page show something."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from .audit import SYSTEM, audit
from .auth.services import create_staff, find_staff_by_username, set_staff_password
from .db import session_scope
from .enterprises.models import Building, Enterprise, Grid
from .validation import credit_code_check_char

GRIDS = [
    ("新华路网格", "王敏"), ("番禺路网格", "李强"), ("法华镇路网格", "张丽"),
]
BUILDINGS = [
    ("上生·新所", "延安西路 1262 号", 0), ("新华路 669 号园区", "新华路 669 号", 0),
    ("番禺路商务楼", "番禺路 200 号", 1), ("法华创意园", "法华镇路 500 号", 2),
]
ENTERPRISES = [
    ("上海示例信息科技有限公司", "91310105", "信息技术", 0, "规模企业", ["专精特新", "高新技术企业"]),
    ("上海示例文化传媒有限公司", "91310105", "文化创意", 1, "50万以上", ["重点企业"]),
    ("上海示例咨询管理有限公司", "91310105", "商务服务", 2, "小微企业", []),
    ("上海示例生物医药有限公司", "91310105", "生物医药", 3, "规模企业", ["高新技术企业"]),
    ("上海示例餐饮管理有限公司", "91310105", "餐饮", 1, "小微企业", []),
]


# Each demo enterprise's contact (a name a newcomer reads as a person, not the word 联系人).
CONTACTS = ["陈经理", "刘女士", "王先生", "周先生", "赵经理"]


def demo_credit_code(prefix: str, serial: int) -> str:
    """A syntactically valid code with a correct check digit (the demo enterprises are fictional)."""
    body = f"{prefix}MA1{serial:06d}"[:17]
    return body + credit_code_check_char(body)


@dataclass
class SeedReport:
    lines: list[str] = field(default_factory=list)
    admin_password: str = ""


def seed(*, admin_password: str, reset_admin_password: bool = False) -> SeedReport:
    report = SeedReport()
    with session_scope() as s:
        grids = []
        for name, specialist in GRIDS:
            g = s.scalar(select(Grid).where(Grid.name == name))
            if g is None:
                g = Grid(name=name, specialist_name=specialist)
                s.add(g)
            grids.append(g)
        s.flush()
        buildings = []
        for name, address, gi in BUILDINGS:
            b = s.scalar(select(Building).where(Building.name == name))
            if b is None:
                b = Building(name=name, address=address, grid_id=grids[gi].id)
                s.add(b)
            buildings.append(b)
        s.flush()
        created = 0
        for i, (name, prefix, industry, bi, bracket, tags) in enumerate(ENTERPRISES):
            code = demo_credit_code(prefix, 100 + i)
            if s.scalar(select(Enterprise.id).where(Enterprise.credit_code == code)) is None:
                s.add(Enterprise(name=name, credit_code=code, industry=industry, building_id=buildings[bi].id,
                                 tax_bracket=bracket, tags=tags, contact_name=CONTACTS[i], note="演示数据"))
                created += 1
        audit(s, SYSTEM, "demo.seeded", None, enterprises=created)
        report.lines.append(f"演示数据：网格 {len(grids)} 个，楼宇 {len(buildings)} 栋，新增企业 {created} 家。")
        admin = find_staff_by_username(s, "admin")  # also an `Admin` made by hand: names are one whatever the case
        if admin is None:
            create_staff(s, username="admin", password=admin_password + "a1", role="admin", display_name="管理员")
            report.admin_password = admin_password + "a1"
        elif reset_admin_password:
            set_staff_password(s, admin, admin_password + "a1", SYSTEM, by="system")
            report.admin_password = admin_password + "a1"
            if not admin.active:
                report.lines.append("注意：admin 账号已停用，新密码要等其他管理员在“账号管理”里重新启用后才能登录。")
        else:
            report.lines.append("管理员账号 admin 已存在，密码未改动；如果忘记了密码，请运行 "
                                "flask --app wsgi seed-demo --reset-admin-password 生成新密码。")
    report.lines.extend(_seed_work())
    for hook in SEED_HOOKS:
        report.lines.extend(hook() or [])
    return report


# Realistic content after the street's own papers (seeds: 服务经济工作实施方案, 企业服务调研, 提案答复).
DEMO_USERS = [  # (openid, nickname, phone, enterprise index or None)
    ("demo-enterprise-1", "陈经理", "13800000001", 0),
    ("demo-enterprise-2", "刘女士", "13800000002", 1),
    ("demo-enterprise-3", "周先生", "13800000003", 3),
    ("demo-worker-1", "小林", "13800000004", None),
]
DEMO_ACTIVITIES = [  # (category, title, building index, days ahead, hour, capacity, summary)
    ("lunch_hour", "午间一小时：稳岗补贴和社保政策宣讲", 0, 3, 12, 40,
     "人社部门讲解稳岗补贴、培训补贴的申报条件和流程，现场答疑。"),
    ("concert", "楼宇音乐会：午后弦乐四重奏", 1, 6, 12, 80, "在园区大堂，和同事一起听一场半小时的弦乐。"),
    ("forum", "营商论坛：重点楼宇企业服务座谈会", 2, 9, 14, 30,
     "街道领导与楼宇企业面对面，听取企业诉求，介绍“店小二”服务和惠企政策。"),
    ("cfo_salon", "财务经理沙龙：研发费用加计扣除实务", 3, 12, 15, 25, "税务所专家讲解加计扣除的口径与常见问题。"),
]
DEMO_APPEALS = [  # (user index, category, content, staff actions in order)
    (0, "tax", "公司新招了几名研发人员，想了解研发费用加计扣除怎么申报，电子税务局里找不到入口。", []),
    (1, "registration", "公司准备从番禺路搬到新华路 669 号园区，营业执照地址变更需要准备哪些材料？能否帮办？",
     [("accept", {})]),
    (2, "talent", "我们引进了一名博士研究员，想咨询人才引进落户的办理流程和所需时间。",
     [("accept", {}), ("assign", {"note": "交办人才服务中心"})]),
    (0, "property", "楼宇中央空调周末不供冷，加班员工反映闷热，和物业沟通多次没有结果，希望街道协调。",
     [("accept", {}), ("assign", {}), ("start", {})]),
    (1, "traffic", "园区门口早高峰车辆排队严重，员工停车困难，希望协调周边错峰停车位。",
     [("accept", {}), ("assign", {}), ("start", {}),
      ("resolve", {"resolution": "已协调周边公共停车场提供 30 个错峰停车位，工作日 8:00-19:00 可用。"})]),
    (2, "labour", "想申请稳岗补贴，不清楚今年的申报时间和条件。",
     [("accept", {}), ("assign", {}), ("start", {}),
      ("resolve", {"resolution": "已电话说明申报条件，并协助企业在“一网通办”完成稳岗补贴申报。"})]),
]


def _seed_work() -> list[str]:
    """Users, activities, a draft notice and appeals in several states: once (skipped when the demo users exist)."""
    from datetime import timedelta

    from .activities.services import create_activity
    from .appeals.services import Intake, perform, rate, submit_appeal
    from .audit import Actor
    from .auth.models import User
    from .db import utcnow
    from .notices.broadcast import create_notice

    with session_scope() as s:
        if s.scalar(select(User.id).where(User.openid == DEMO_USERS[0][0])) is not None:
            return []
        admin = find_staff_by_username(s, "admin")
        actor = Actor("staff", admin.id, role="admin")
        enterprises = [s.scalar(select(Enterprise).where(Enterprise.credit_code == demo_credit_code(p, 100 + i)))
                       for i, (_n, p, *_rest) in enumerate(ENTERPRISES)]
        buildings = [s.scalar(select(Building).where(Building.name == b[0])) for b in BUILDINGS]
        users = []
        for openid, nickname, phone, ei in DEMO_USERS:
            e = enterprises[ei] if ei is not None else None
            u = User(openid=openid, nickname=nickname, phone=phone, enterprise_id=e.id if e else None,
                     role="enterprise_contact" if e else "white_collar",
                     binding_state="verified" if e else "none")
            s.add(u)
            users.append(u)
        s.flush()
        day0 = utcnow().replace(minute=0, second=0, microsecond=0)
        for category, title, bi, days, hour, capacity, summary in DEMO_ACTIVITIES:
            start = (day0 + timedelta(days=days)).replace(hour=hour - 8)  # Shanghai time
            create_activity(s, actor, {"category": category, "title": title, "summary": summary,
                                       "building_id": buildings[bi].id, "address": buildings[bi].address,
                                       "starts_at": start.isoformat(),
                                       "ends_at": (start + timedelta(hours=1)).isoformat(),
                                       "capacity": capacity, "waitlist_enabled": True})
        create_notice(s, actor, {"title": "稳岗补贴申报开始", "summary": "符合条件的企业可在一网通办申报，街道可帮办。",
                                 "audience": {"all": True}})
        for ui, category, content, actions in DEMO_APPEALS:
            u = users[ui]
            e = s.get(Enterprise, u.enterprise_id)
            appeal, _ = submit_appeal(s, u.id, Intake(content=content, contact_name=u.nickname,
                                                       contact_phone=u.phone, category=category,
                                                       enterprise_id=e.id, building_id=e.building_id))
            for action, data in actions:
                perform(s, actor, appeal.id, action, data)
        last = appeal
        rate(s, users[DEMO_APPEALS[-1][0]].id, last.id, resolved=True, satisfaction=5, comment="办得很快，谢谢！")
        audit(s, SYSTEM, "demo.seeded", None, users=len(users), activities=len(DEMO_ACTIVITIES), notices=1,
              appeals=len(DEMO_APPEALS))
    return [f"演示业务：用户 {len(DEMO_USERS)} 位，活动 {len(DEMO_ACTIVITIES)} 个，通知草稿 1 条，"
            f"诉求 {len(DEMO_APPEALS)} 件（待受理、已受理、已交办、办理中、已办结、已评价）。"]


# Domains append callables that load their demo data and return report lines.
SEED_HOOKS: list = []
