"""A notice to 100,000 subscribers: 4 RQ worker processes, the global rate limiter, the loopback WeChat stand-in.

The script creates its own PostgreSQL database (dropped first if it exists) and a private redis-server,
starts the stand-in (record=False) in this process, makes N users who subscribe to one category and hold one
credit each for the notice template, publishes a notice to that category and starts W `rq` workers (each a
forking worker with the application's settings and the rate limit). It polls the progress until the notice is
done and checks: every outbox row terminal, sends seen by the stand-in == rows marked sent (nothing twice),
observed rate within the limit (overall and in every 1-second window); prints the time to finish, when the
expansion was done, sends/s over the sending span and from publish to done. Run:

    .venv/bin/python bench/fanout.py [--users 100000] [--workers 4] [--rate 500] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _settings(extra: dict):
    from wxapp_backend.config import Settings

    return Settings.from_env().with_overrides(extra=extra)


def _worker(extra: dict) -> None:
    """One RQ worker process (forks a work horse per job), like `flask --app wsgi worker`."""
    from wxapp_backend import create_app
    from wxapp_backend.jobs_runtime import run_worker

    app = create_app(_settings(extra))
    with app.app_context():
        run_worker([app.extensions["wxapp"].settings.queue_name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=500.0, help="subscribe sends per second, all workers together")
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--db", default="wxapp_fanout_bench")
    ap.add_argument("--latency", type=float, default=0.0, help="stand-in answer delay in seconds")
    args = ap.parse_args()

    from registration_burst import _recreate_database, start_private_redis

    from wxapp_backend.wechat.standin import WeChatStandIn

    db_url = _recreate_database(args.pg, args.db)
    redis_proc, redis_url = start_private_redis()
    standin = WeChatStandIn(latency=args.latency, record=False).start()
    os.environ.update({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "APP_ENV": "development",
                       "SECRET_KEY": secrets.token_urlsafe(24), "LOG_LEVEL": "WARNING",
                       "WECHAT_API_BASE": standin.base_url, "WXA_APPID": "wxabench0000000001",
                       "WXA_SECRET": "bench-secret", "INSTANCE_PATH": str(ROOT / "instance" / "bench")})
    extra = {"fanout_rate": args.rate, "fanout_burst": args.burst, "fanout_jobs": args.workers}
    from sqlalchemy import func, insert, select, text

    from wxapp_backend import create_app
    from wxapp_backend.activities.models import CategorySubscription
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.models import User
    from wxapp_backend.cli import upgrade_database
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    app = create_app(_settings(extra))
    procs = []
    try:
        with app.app_context():
            upgrade_database()
            template = get_kind("notice").template_id
            t0 = time.perf_counter()
            chunk = 10_000
            for start in range(0, args.users, chunk):
                with session_scope() as s:
                    ids = list(s.scalars(insert(User).returning(User.id),
                                         [{"openid": f"obench{i:08d}"} for i in range(start, min(start + chunk, args.users))]))
                    s.execute(insert(CategorySubscription), [{"user_id": u, "category": "fitness"} for u in ids])
                    s.execute(insert(SubscribeCredit), [{"user_id": u, "template_id": template, "credits": 1}
                                                        for u in ids])
            print(f"setup: {args.users} users with credit in {time.perf_counter() - t0:.1f} s")
            actor = Actor("staff", None, role="admin")
            with session_scope() as s:
                notice = broadcast.create_notice(s, actor, {"title": "健身季：午间健身课开放报名",
                                                            "summary": "本周五午间开放报名，名额有限。",
                                                            "page": "pages/activity/list",
                                                            "audience": {"categories": ["fitness"]}})
                nid = notice.id
                print("reach estimate:", broadcast.reach(s, notice))
            ctx = multiprocessing.get_context("spawn")
            for _ in range(args.workers):
                p = ctx.Process(target=_worker, args=(extra,))
                p.start()
                procs.append(p)
            time.sleep(3)
            started = time.perf_counter()
            with session_scope() as s:
                broadcast.publish(s, actor, nid)
            last = None
            expanded_at = None
            while True:
                time.sleep(1)
                with session_scope() as s:
                    prog = broadcast.progress(s, nid)
                if expanded_at is None and prog["status"] != "expanding":
                    expanded_at = time.perf_counter() - started
                line = (f"[{time.perf_counter() - started:6.1f} s] {prog['status_label']} inbox {prog['inbox']} "
                        f"subscribe {prog['subscribe_done']}/{prog['subscribe_total']} {prog['subscribe']}")
                if line != last:
                    print(line, flush=True)
                    last = line
                if prog["finished"]:
                    break
                if time.perf_counter() - started > 3600:
                    raise SystemExit("did not finish within an hour")
            finished = time.perf_counter() - started
            with session_scope() as s:
                statuses = Counter(dict(s.execute(select(OutboxRow.status, func.count()).where(
                    OutboxRow.notice_id == nid).group_by(OutboxRow.status)).all()))
                first, last_sent = s.execute(select(func.min(OutboxRow.sent_at), func.max(OutboxRow.sent_at)).where(
                    OutboxRow.notice_id == nid, OutboxRow.channel == "subscribe")).one()
                per_second = s.execute(text(
                    "SELECT date_trunc('second', sent_at) AS sec, count(*) FROM notice_outbox "
                    "WHERE notice_id = :n AND channel = 'subscribe' AND status = 'sent' GROUP BY sec "
                    "ORDER BY count(*) DESC LIMIT 1"), {"n": nid}).first()
                sent_rows = s.scalar(select(func.count()).where(OutboxRow.notice_id == nid,
                                                                OutboxRow.channel == "subscribe",
                                                                OutboxRow.status == "sent"))
                inbox_items = s.scalar(text("SELECT count(*) FROM inbox_items WHERE ref = :r"), {"r": f"notice:{nid}"})
        sends = standin.count(SUBSCRIBE)
        span = (last_sent - first).total_seconds() if first and last_sent else 0
        rate = sent_rows / span if span else 0
        print(f"finished in {finished:.1f} s (expansion done by {expanded_at:.1f} s; sending overlaps it); "
              f"outbox {dict(statuses)}; inbox items {inbox_items}")
        print(f"sends/s publish to done: {sent_rows / finished:.1f}")
        print(f"stand-in subscribe sends {sends}; rows sent {sent_rows}; duplicates {sends - sent_rows}")
        print(f"observed rate {rate:.1f}/s over {span:.1f} s (limit {args.rate:g}/s, burst {args.burst}); "
              f"busiest second {per_second[1] if per_second else 0}")
        non_terminal = sum(n for st, n in statuses.items() if st not in ("sent", "failed", "skipped"))
        ok = (non_terminal == 0 and sends == sent_rows == args.users and inbox_items == args.users
              and rate <= args.rate * 1.02 and (per_second[1] if per_second else 0) <= args.rate + args.burst)
        print("RESULT:", "OK" if ok else "FAILED")
        raise SystemExit(0 if ok else 1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        standin.stop()
        redis_proc.terminate()


if __name__ == "__main__":
    main()
