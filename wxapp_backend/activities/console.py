"""Console pages for activities: list, editor, registrations (XLSX), check-in, attendance statistics."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("activities_console", __name__, url_prefix="/console")
