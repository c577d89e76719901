"""Mini-program JSON API for buildings (public list) and staff JSON API for enterprises."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("enterprises_api", __name__, url_prefix="/api/v1")
