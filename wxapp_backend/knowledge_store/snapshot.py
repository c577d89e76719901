"""A copy on local disk of the entries an index was last built from, so that a process starting while the database
is away (a restart of PostgreSQL, a gunicorn worker recycled in the middle of it) still answers from the knowledge
base instead of apologising for every question until the database is back.

One file per database (named by a digest of its address, so two databases sharing an instance folder never answer
from each other's entries): a first line with the rows' stamp (entries, sum of revisions: every change moves it),
then one JSON line per entry, gzip-compressed and written to a temporary file that replaces the old one in one step
(a crash mid-write leaves the previous copy). The entries are the knowledge base's public content: no user data,
no secret. The database stays the source of truth: an index loaded from here is rebuilt from the database as soon as
it answers again (KBRuntime)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import secrets
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from knowledge.schema import DATE_FIELDS, Entry

log = logging.getLogger(__name__)

FORMAT = 1


def snapshot_path(folder: Path, database_url: str) -> Path:
    """Where the copy of `database_url`'s entries is kept in `folder` (the instance folder)."""
    digest = hashlib.sha256(database_url.encode("utf-8")).hexdigest()[:16]
    return folder / f"kb-snapshot-{digest}.jsonl.gz"


def stamp_of(path: Path) -> tuple[int, int] | None:
    """The stamp the copy at `path` was written with; None when there is none (or it cannot be read)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            head = json.loads(f.readline())
        return int(head["stamp"][0]), int(head["stamp"][1])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError):
        return None


def write(path: Path, entries: Iterable[Entry], stamp: tuple[int, int]) -> bool:
    """Keep `entries` (built with `stamp`) at `path`; False (and a warning) when the folder refuses the write: the
    answers go on, only the copy is older."""
    # A name of its own (process and a random part: two runtimes of one process never share it); on disk before it
    # replaces the old copy, so that a power cut leaves the old copy or the new one, never a cut-off one.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as packed, \
                    io.TextIOWrapper(packed, encoding="utf-8") as f:
                f.write(json.dumps({"format": FORMAT, "stamp": list(stamp)}) + "\n")
                for entry in entries:
                    f.write(json.dumps(entry.to_dict(), ensure_ascii=False) + "\n")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("could not keep a copy of the knowledge base on disk (%s: %s)", type(exc).__name__, exc,
                    extra={"path": str(path)})
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


def _entry(item: dict) -> Entry:
    values = dict(item)
    for name in ("similar", "tags"):
        values[name] = tuple(values.get(name) or ())
    for name in DATE_FIELDS:
        if values.get(name):
            values[name] = date.fromisoformat(values[name])
    return Entry(**values)


def read(path: Path) -> tuple[list[Entry], tuple[int, int]] | None:
    """The entries kept at `path` and their stamp; None when there is no usable copy (missing, cut short, another
    format): a copy is taken whole or not at all."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            head = json.loads(f.readline())
            if head.get("format") != FORMAT:
                return None
            stamp = int(head["stamp"][0]), int(head["stamp"][1])
            entries = [_entry(json.loads(line)) for line in f]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:
        log.warning("the knowledge base's copy on disk is unusable (%s: %s)", type(exc).__name__, exc,
                    extra={"path": str(path)})
        return None
    if len(entries) != stamp[0]:
        return None
    return entries, stamp
