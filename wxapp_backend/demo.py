"""Demo data for a newcomer's first run: buildings, grids, enterprises and an admin account."""

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
                                 tax_bracket=bracket, tags=tags, contact_name="联系人", note="演示数据"))
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
            report.lines.append("管理员账号 admin 已存在，密码未改动。")
    for hook in SEED_HOOKS:
        report.lines.extend(hook() or [])
    return report


# Domains append callables that load their demo data and return report lines.
SEED_HOOKS: list = []
