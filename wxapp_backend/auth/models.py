"""Users of the mini-program / Official Account, and staff accounts of the console."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, UTCDateTime, utcnow


class UserRole(enum.StrEnum):
    ENTERPRISE_CONTACT = "enterprise_contact"
    WHITE_COLLAR = "white_collar"


class BindingState(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"


BINDING_LABELS = {"none": "未绑定", "pending": "待核实", "verified": "已核实", "rejected": "已驳回"}


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    DEPT = "dept"


ROLE_RANK = {StaffRole.DEPT: 1, StaffRole.STAFF: 2, StaffRole.ADMIN: 3}
# What the console calls each role (the account pages, the header, the messages about roles).
STAFF_ROLE_NAMES = {StaffRole.ADMIN.value: "管理员", StaffRole.STAFF.value: "工作人员", StaffRole.DEPT.value: "部门"}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role in ('enterprise_contact','white_collar')", name="role"),
        CheckConstraint("binding_state in ('none','pending','verified','rejected')", name="binding_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), unique=True)  # mini-program openid
    oa_openid: Mapped[str | None] = mapped_column(String(64), unique=True)  # Official Account openid
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    nickname: Mapped[str] = mapped_column(String(64), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    role: Mapped[str] = mapped_column(String(20), default=UserRole.WHITE_COLLAR.value)
    enterprise_id: Mapped[int | None] = mapped_column(ForeignKey("enterprises.id", ondelete="SET NULL"), index=True)
    # indexed: the dashboard's 待核实 count and the users list filter on it (with pending_enterprise_id) on every load
    binding_state: Mapped[str] = mapped_column(String(10), default=BindingState.NONE.value, index=True)
    # A verified contact applying to another enterprise: the application waits here, and the verified binding
    # (enterprise_id) stays until staff approve the new one. Users without a verified binding apply through
    # enterprise_id with binding_state pending, as before.
    pending_enterprise_id: Mapped[int | None] = mapped_column(ForeignKey("enterprises.id", ondelete="SET NULL"),
                                                              index=True)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"), index=True)
    followed: Mapped[bool] = mapped_column(Boolean, default=False)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    no_show_count: Mapped[int] = mapped_column(Integer, default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    enterprise = relationship("Enterprise", foreign_keys=[enterprise_id], lazy="joined")
    building = relationship("Building", foreign_keys=[building_id], lazy="joined")
    pending_enterprise = relationship("Enterprise", foreign_keys=[pending_enterprise_id], lazy="select")

    @property
    def awaiting_check(self) -> bool:
        """Staff have an application of this user's to decide (a first binding or a switch)."""
        return self.binding_state == BindingState.PENDING.value or self.pending_enterprise_id is not None

    @property
    def applied_enterprise_id(self) -> int | None:
        """The enterprise the user's open application names (None without one)."""
        if self.pending_enterprise_id is not None:
            return self.pending_enterprise_id
        return self.enterprise_id if self.binding_state == BindingState.PENDING.value else None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "nickname": self.nickname,
            "phone": self.phone,
            "role": self.role,
            "binding_state": self.binding_state,
            "binding_state_label": BINDING_LABELS.get(self.binding_state, self.binding_state),
            "enterprise": self.enterprise.to_public() if self.enterprise else None,
            "building": self.building.to_public() if self.building else None,
            # The enterprise a verified contact has applied to switch to, while staff check it.
            "pending_enterprise": self.pending_enterprise.to_public() if self.pending_enterprise else None,
        }


class StaffUser(Base):
    __tablename__ = "staff_users"
    __table_args__ = (CheckConstraint("role in ('admin','staff','dept')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10))
    department: Mapped[str] = mapped_column(String(64), default="")
    display_name: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def rank(self) -> int:
        return ROLE_RANK[StaffRole(self.role)]

    def to_dict(self) -> dict:
        return {"id": self.id, "username": self.username, "role": self.role, "department": self.department,
                "display_name": self.display_name, "active": self.active}


# A username is one name whatever its case (login, lock-out, creation): the database holds to it too (migration 0006).
Index("uq_staff_users_lower_username", func.lower(StaffUser.username), unique=True)
