"""Development only: rewrite migration 0001 from the current models.

Used while the schema is young and nothing is deployed: every model lives in one initial migration.
Once a release is deployed, add new revisions with `alembic revision --autogenerate` instead.
Later revisions (0002 ...) are set aside while 0001 is written and put back after; each must therefore cope with
a 0001 that already holds its change (create only what is missing, as 0002 does).
Run: .venv/bin/python migrations/regenerate_initial.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from alembic import command

    from wxapp_backend import create_app
    from wxapp_backend.cli import alembic_config
    from wxapp_backend.config import Settings

    versions = ROOT / "migrations" / "versions"
    for f in versions.glob("0001_*.py"):
        f.unlink()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as aside:
        later = [f for f in versions.glob("0*.py")]
        for f in later:  # 0001 is written against an empty database: the revisions after it would be missing it
            f.rename(Path(aside) / f.name)
        try:
            settings = Settings.from_env({"INSTANCE_PATH": tmp, "LOG_LEVEL": "WARNING"})
            app = create_app(settings)
            with app.app_context():
                command.revision(alembic_config(), message="initial schema", autogenerate=True, rev_id="0001")
            from wxapp_backend.kv import stop_embedded_redis

            stop_embedded_redis(settings.instance_path)
        finally:
            for f in later:
                (Path(aside) / f.name).rename(f)
    print("rewrote", next(versions.glob("0001_*.py")))


if __name__ == "__main__":
    main()
