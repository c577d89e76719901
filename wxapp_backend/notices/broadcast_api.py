"""Staff JSON API for notices: compose, reach estimate, test send, publish, progress."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("broadcast_api", __name__, url_prefix="/api/v1")


def register(app: Flask) -> None:
    app.register_blueprint(bp)
