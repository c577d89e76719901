"""gunicorn settings; environment: BIND, WEB_CONCURRENCY, WEB_THREADS, WEB_TIMEOUT, WEB_WORKER_CLASS."""

import multiprocessing
import os
import shutil
import tempfile

from wxapp_backend.config import ConfigError, Settings, web_count

try:
    _settings = Settings.from_env()
except ConfigError as exc:
    # A wrong setting stops the master here with one line naming the variable; found in a worker instead, it
    # made gunicorn boot a new worker for ever.
    raise SystemExit(f"配置有误，未能启动：{exc}") from None


def _count(name: str, default: int, least: int = 1) -> int:
    try:
        return web_count(os.environ, name, default, least)
    except ConfigError as exc:
        raise SystemExit(f"配置有误，未能启动：{exc}") from None


bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = _count("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count() * 2))
# gthread, with keep-alive connections spread evenly over the workers (wxapp_backend/http_worker.py).
worker_class = os.environ.get("WEB_WORKER_CLASS") or "wxapp_backend.http_worker.BalancedThreadWorker"
threads = _count("WEB_THREADS", 4)
timeout = _count("WEB_TIMEOUT", 30, least=0)  # 0: no timeout, as gunicorn's own setting

if not _settings.redis_url:
    # The private Redis is started here, in the master: one that cannot start stops gunicorn with one line. Found
    # in a worker instead, it was a traceback from each worker and "Worker failed to boot". After the counts above:
    # a count refused after it left a redis-server running that nobody had asked for.
    from wxapp_backend.kv import EmbeddedRedisError, ensure_embedded_redis

    try:
        ensure_embedded_redis(_settings.instance_path)
    except EmbeddedRedisError as exc:
        raise SystemExit(f"内置 Redis 未能启动：{exc}") from None

graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
# The path without its query, and no Referer: a WeChat push's URL carries the sender's openid with the signature,
# timestamp and nonce, a search its question, a console search the phone number looked up.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(M)sms'
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn's own lines (starting, booting a worker, a worker timed out) in the same JSON as the application's,
# as LOG_JSON promises for every line on stderr; the access log keeps its own format and place. A logger class,
# not logconfig_dict: with any logconfig set gunicorn works out every request's access-log fields even with the
# access log off (~40 µs of CPU a request, a fifth of a bare request's cost; docs/bench/webhook.md, session 10).
if _settings.log_json:
    logger_class = "wxapp_backend.http_worker.JsonLogger"
# Load the app in each worker after fork: the database and Redis clients must not be shared.
preload_app = False
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Metrics from every worker are aggregated through files in one directory (prometheus_client's
# multiprocess mode); it is emptied when the master starts. Without one configured, a fresh private folder
# (mkdtemp, 0700): a name in /tmp that anyone can work out (the master's pid) is one someone else can make first.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="wxapp-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    os.makedirs(_metrics_dir, exist_ok=True)
    if "WXAPP_METRICS_SHARED" not in os.environ:  # `flask serve` prepares a directory shared with the worker
        # Emptied in place: removed and made again, the folder would be free for a moment for anyone to take.
        for entry in os.scandir(_metrics_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def pre_fork(server, worker):
    from wxapp_backend.http_worker import assign_slot

    assign_slot(server, worker)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    from wxapp_backend.http_worker import release_slot

    release_slot(server, worker)
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # Warm caches in the background so the first WeChat push is not the one that loads jieba.
    import threading

    from wxapp_backend import warm_up

    app = worker.wsgi
    threading.Thread(target=warm_up, args=(app,), daemon=True, name="warm-up").start()
