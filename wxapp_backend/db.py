"""Database: engine, declarative Base, session_scope() and shared column types."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The database away for a moment (restarting, connection refused, the pool exhausted): what only records or helps is
# done without it, and the chat still answers what it can from memory and Redis.
DB_AWAY = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class Base(DeclarativeBase):
    """Declarative base for every model; constraint names are stable for migrations."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)



@dataclass(frozen=True)
class Refusal:
    """What the database said when it refused a write (an IntegrityError): `kind` is "unique", "foreign_key",
    "not_null", "check" or "" (not said); `table`, `columns` and `constraint` those it named, empty where it names
    none (SQLite names no foreign key, unless refusal() was given the session to ask it with; nor a table for a
    check)."""

    kind: str
    table: str = ""
    columns: tuple[str, ...] = ()
    constraint: str = ""


_SQLSTATE_KINDS = {"23505": "unique", "23503": "foreign_key", "23502": "not_null", "23514": "check"}
_SQLITE_REFUSAL = re.compile(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?::\s*(.*))?", re.S)


def refusal(exc: IntegrityError, session: Session | None = None) -> Refusal:
    """Which constraint an IntegrityError is about: on PostgreSQL from the error's fields (psycopg's `diag`, the
    constraint's name looked up in the models for its columns), on SQLite from the message's text. SQLite's
    message names no foreign key: given the `session` the write failed in, the statement is run again to find it
    (see _sqlite_foreign_key), as PostgreSQL would have named it."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        diag = orig.diag
        kind, table, name = _SQLSTATE_KINDS.get(sqlstate, ""), diag.table_name or "", diag.constraint_name or ""
        if kind == "not_null":
            return Refusal(kind, table, (diag.column_name,) if diag.column_name else (), name)
        return Refusal(kind, table, _constraint_columns(table, name), name)
    m = _SQLITE_REFUSAL.search(str(orig))
    if m is None:
        return Refusal("")
    kind, named = m.group(1).lower().replace(" ", "_"), (m.group(2) or "").strip()
    if kind in ("unique", "not_null") and named and not named.startswith("index "):
        # "enterprises.credit_code" or "t.a, t.b"
        pairs = [part.strip().split(".", 1) for part in named.split(",")]
        if all(len(p) == 2 for p in pairs):
            return Refusal(kind, pairs[0][0], tuple(p[1] for p in pairs))
    if named.startswith("index "):  # a unique index on an expression: "index 'ix_name'"
        named = named[len("index "):].strip("'\"")
    if kind in ("unique", "check") and named:
        for t in Base.metadata.tables.values():
            columns = _constraint_columns(t.name, named)
            if columns or any(c.name == named for c in t.constraints):
                return Refusal(kind, t.name, columns, named)
    if kind == "foreign_key" and session is not None:
        found = _sqlite_foreign_key(exc, session)
        if found is not None:
            return found
    return Refusal(kind, constraint=named)


_WRITTEN_TABLE = re.compile(r'^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE)\s+"?(\w+)"?', re.I)


def _sqlite_foreign_key(exc: IntegrityError, session: Session) -> Refusal | None:
    """The foreign key an SQLite INSERT or UPDATE was refused for: the statement run again with its parameters in
    a savepoint rolled back at once, its foreign keys deferred so that it goes through, and `PRAGMA
    foreign_key_check` asked which of the table's rows point at nothing now that did not before. On the session's
    connection while its transaction is still open (the write failed in a savepoint: the rows written before it
    are seen, and no second connection waits for the write lock it holds); otherwise on a connection of its own
    (the failed flush has rolled the session's transaction back). None when that does not tell."""
    m = _WRITTEN_TABLE.match(exc.statement or "")
    if m is None or exc.params is None:
        return None
    table = m.group(1)
    try:
        if session.is_active and session.in_transaction():
            return _foreign_key_check(session.connection(), table, exc.statement, exc.params)
        bind = session.get_bind()
        with bind.connect() as conn, conn.begin():
            return _foreign_key_check(conn, table, exc.statement, exc.params)
    except sa_exc.SQLAlchemyError:  # only a better message was at stake: say what the error said
        return None


def _foreign_key_check(conn: Connection, table: str, statement: str, params) -> Refusal | None:
    params = list(params) if isinstance(params, list) else tuple(params)
    probe = conn.begin_nested()
    try:
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        check = f'PRAGMA foreign_key_check("{table}")'
        before = set(map(tuple, conn.exec_driver_sql(check)))
        conn.exec_driver_sql(statement, params)
        dangling = {row[3] for row in map(tuple, conn.exec_driver_sql(check)) if row not in before}
        keys = conn.exec_driver_sql(f'PRAGMA foreign_key_list("{table}")').all()
    finally:
        probe.rollback()
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = OFF")  # (only a COMMIT or ROLLBACK turns it off)
    found = []
    for fk_id in dangling:
        columns = tuple(k[3] for k in sorted(keys, key=lambda k: k[1]) if k[0] == fk_id)
        found.append((_foreign_key_name(table, columns), columns))
    if not found:
        return None
    name, columns = min(found)  # PostgreSQL names the first it checks: in order of the constraints' names
    return Refusal("foreign_key", table, columns, name)


def _foreign_key_name(table: str, columns: tuple[str, ...]) -> str:
    t = Base.metadata.tables.get(table)
    for fk in t.foreign_key_constraints if t is not None else ():
        if tuple(fk.column_keys) == columns:
            return fk.name or ""
    return ""


def _constraint_columns(table: str, name: str) -> tuple[str, ...]:
    t = Base.metadata.tables.get(table)
    if t is None or not name:
        return ()
    for c in (*t.constraints, *t.indexes):
        if c.name == name:
            return tuple(col.name for col in getattr(c, "columns", ()))
    return ()


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine with the per-backend settings we rely on.

    `hide_parameters`: a database error's text (logged with its traceback, kept by RQ for a failed job) names
    the statement but not its values, which may be a password hash, a phone number or an ID-card number."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, echo=echo, hide_parameters=True,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        _sqlite_setup(engine, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
    else:
        # A server that takes the connection but never answers (stuck, or a half-dead proxy in front of it) held
        # /healthz, /metrics and every request waiting for ever: give up after 5 s unless the URL says otherwise.
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
        engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10,
                               connect_args=connect_args, hide_parameters=True)
    # A forked child (RQ work horse, gunicorn worker) must not reuse the parent's pooled connections.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


# How long a SQLite connection waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30000

# /healthz and /metrics: a PostgreSQL that takes the connection but never answers, or drops the packets, must be
# reported before a probe's or a scraper's own timeout (often 1-5 s) runs out, not after the shared engine's 5 s.
# psycopg's shortest connect timeout is 2 s; the query itself may take HEALTH_CHECK_TIMEOUT_MS. On SQLite the check
# waits HEALTH_CHECK_TIMEOUT_MS for a writer's lock, not the 30 s every request waits.
HEALTH_CONNECT_TIMEOUT = 2
HEALTH_CHECK_TIMEOUT_MS = 1500


def _make_health_engine(url: str) -> Engine:
    """The engine for the health checks only: a fresh connection each time (a pooled one may be the one that went
    dead). PostgreSQL: a short connect timeout, and unacknowledged packets give up after the same bound. SQLite:
    the same transactions as every request (BEGIN IMMEDIATE: a writer holding the file blocks them all, so the
    check must see it too) with a short busy timeout."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, poolclass=NullPool, hide_parameters=True,
                               connect_args={"timeout": HEALTH_CHECK_TIMEOUT_MS / 1000, "check_same_thread": False})
        _sqlite_setup(engine, busy_timeout_ms=HEALTH_CHECK_TIMEOUT_MS)
        return engine
    return create_engine(url, poolclass=NullPool, hide_parameters=True,
                         connect_args={"connect_timeout": HEALTH_CONNECT_TIMEOUT,
                                       "tcp_user_timeout": HEALTH_CHECK_TIMEOUT_MS})


def _sqlite_setup(engine: Engine, *, busy_timeout_ms: int) -> None:
    path = engine.url.database
    if path and path != ":memory:":
        # The file holds password hashes and phone numbers: this user's alone. Made beforehand, as sqlite3 would
        # make it with the umask's 0644 (SQLite gives its -wal and -shm files the database file's mode); files an
        # earlier version left readable are tightened.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            for name in (path, path + "-wal", path + "-shm"):
                with suppress(OSError):
                    if os.stat(name).st_mode & 0o077:
                        os.chmod(name, 0o600)

    # pysqlite's own transaction handling starts transactions late; we take the write lock up front
    # (BEGIN IMMEDIATE) so that concurrent writers queue instead of failing on a lock upgrade.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and session factory of one application."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, echo=echo)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._health_engine: Engine | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def health_connection(self) -> Iterator[Connection]:
        """A connection for /healthz and /metrics, bounded in time (see HEALTH_CHECK_TIMEOUT_MS); normal requests
        keep the shared engine and its timeouts."""
        if self.dialect not in ("postgresql", "sqlite") or self._in_memory:
            # An in-memory SQLite is one connection's own: another engine would see another, empty database.
            with self.engine.connect() as conn:
                yield conn
            return
        if self._health_engine is None:
            self._health_engine = _make_health_engine(self.url)
        with self._health_engine.connect() as conn:
            if self.dialect == "postgresql":
                # SET LOCAL: for this transaction only (safe behind a pooler such as PgBouncer).
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {HEALTH_CHECK_TIMEOUT_MS}")
            yield conn

    @property
    def _in_memory(self) -> bool:
        return self.dialect == "sqlite" and make_url(self.url).database in (None, "", ":memory:")

    @staticmethod
    def timed_out(exc: BaseException) -> bool:
        """Whether a health check failed because the database stayed busy past its bound (a writer holding SQLite's
        lock, PostgreSQL's statement timeout) rather than being unreachable or broken."""
        text = str(getattr(exc, "orig", None) or exc).lower()
        return "database is locked" in text or "database is busy" in text or "statement timeout" in text

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error, always close."""
        session = self.Session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def get_db() -> Database:
    from flask import current_app

    return current_app.extensions["wxapp"].db


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction on the current application's database."""
    with get_db().session_scope() as session:
        yield session
