"""Console pages for appeals."""

from flask import Blueprint

bp = Blueprint("appeals_console", __name__, url_prefix="/console")
