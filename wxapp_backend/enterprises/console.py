"""Console pages for enterprises, buildings, grids and users."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("enterprises_console", __name__, url_prefix="/console")
