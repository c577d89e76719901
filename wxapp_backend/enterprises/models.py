"""一企一档 / 一楼一档 / 网格化: enterprises, office buildings and the grid teams that serve them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, UTCDateTime, utcnow

# The note on a file made by a binding request with an unknown credit code, and what it becomes when staff decide
# that binding (the name and code the applicant typed are what staff check).
NOTE_BINDING_PENDING = "由企业联系人在小程序中申请绑定时创建，待核实"
NOTE_BINDING_VERIFIED = "由企业联系人在小程序中申请绑定时创建，绑定申请已通过，名称和信用代码已核实"
NOTE_BINDING_REJECTED = "由企业联系人在小程序中申请绑定时创建，绑定申请未通过，名称和信用代码未经核实"


class Grid(Base):
    __tablename__ = "grids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    specialist_name: Mapped[str] = mapped_column(String(32), default="")  # 服务专员
    specialist_phone: Mapped[str] = mapped_column(String(20), default="")
    specialist_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def to_public(self) -> dict:
        return {"id": self.id, "name": self.name, "specialist_name": self.specialist_name}

    def to_dict(self) -> dict:
        return {**self.to_public(), "specialist_phone": self.specialist_phone,
                "specialist_staff_id": self.specialist_staff_id, "note": self.note}


class Building(Base):
    __tablename__ = "buildings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    address: Mapped[str] = mapped_column(String(200), default="")
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id", ondelete="SET NULL"), index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    grid = relationship(Grid, lazy="joined")

    def to_public(self) -> dict:
        return {"id": self.id, "name": self.name, "address": self.address}

    def to_dict(self) -> dict:
        return {**self.to_public(), "grid": self.grid.to_public() if self.grid else None, "note": self.note}


class Enterprise(Base):
    __tablename__ = "enterprises"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)  # 统一社会信用代码
    industry: Mapped[str] = mapped_column(String(64), default="")
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"), index=True)
    floor_room: Mapped[str] = mapped_column(String(64), default="")
    tax_bracket: Mapped[str] = mapped_column(String(32), default="")  # e.g. 50万以上, 规模企业
    tags: Mapped[list] = mapped_column(JSON, default=list)
    contact_name: Mapped[str] = mapped_column(String(32), default="")
    contact_phone: Mapped[str] = mapped_column(String(20), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    # A duplicate file staff merged into another is retired, not deleted: it keeps its name and code for the
    # record and points at the file that carries on.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("enterprises.id", ondelete="SET NULL"), index=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    building = relationship(Building, lazy="joined")
    merged_into = relationship("Enterprise", remote_side=[id], lazy="select")

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    def to_public(self) -> dict:
        return {"id": self.id, "name": self.name, "credit_code": self.credit_code, "industry": self.industry}

    def to_dict(self) -> dict:
        """The full file, for staff."""
        return {
            **self.to_public(),
            "building": self.building.to_public() if self.building else None,
            "floor_room": self.floor_room,
            "tax_bracket": self.tax_bracket,
            "tags": list(self.tags or []),
            "contact_name": self.contact_name,
            "contact_phone": self.contact_phone,
            "note": self.note,
            "merged_into_id": self.merged_into_id,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
