"""Access tokens shared by every process and machine: cached in Redis, one refresher under a Redis lock.

- `get()` reads the cache; on a miss one caller (across all processes) takes the lock and fetches with
  ``POST /cgi-bin/stable_token`` (force_refresh false: repeated calls return the same token); the others
  wait for the cache to fill, at most `wait` seconds.
- `invalidate(token)` is compare-and-expire: the cached token is dropped only while it is still the one that
  failed, so a process holding a stale token cannot throw away the newer token another process cached.
- A failed fetch is remembered for ERROR_TTL seconds so that waiting callers, and callers arriving meanwhile,
  fail fast instead of queueing up to repeat it (the daily fetch quota is small). A 45009 (that quota used up)
  alerts a person at its first of the China day per account; later ones are warnings (client.py's day mark).
- `replace_refused(token)`: when the ordinary refetch hands back the very token WeChat just refused (normal mode
  returns the cached token while WeChat's token service thinks it valid), only ``force_refresh`` replaces it. That
  mode is allowed 20 times a day, 30 s apart (WeChat's docs), and it revokes the previous token for every process
  at once: one forced refresh per refused token across all processes (a Redis marker), none within
  FORCE_INTERVAL of the last one, at most FORCE_DAILY_MAX a day (China's day: WeChat's quotas reset at midnight
  there); the forcing caller holds the fetch lock, the others wait for its token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence

import redis

from .client import WeChatAPIError, WeChatHTTP, first_quota_alert_today, retry_busy

ERROR_TTL = 2  # seconds a failed fetch answers every caller
CHINA_OFFSET = 8 * 3600  # WeChat's days (daily quotas) are China's

log = logging.getLogger(__name__)

# KEYS[1] = the cache key; ARGV[1] = the token that failed.
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: the refused token's marker, the interval key, today's count; ARGV: marker ttl, interval ms, daily max,
# count ttl. 1: this caller forces; 0: another caller has (or is doing) it for this token; -1/-2: interval/day limit.
_FORCE_GATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[3]) then return -2 end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""


class TokenStore:
    """The access token of one appid, shared through Redis."""

    FORCE_INTERVAL = 30  # seconds between two forced refreshes (WeChat does not refresh sooner)
    FORCE_DAILY_MAX = 20  # WeChat's daily allowance of forced refreshes
    FORCE_MARK_TTL = 7200  # a refused token is forced away once in its lifetime

    def __init__(self, client: redis.Redis, http: WeChatHTTP, appid: str, secret: str, *,
                 wait: float | None = None, poll: float = 0.05, busy_backoff: Sequence[float] = (0.2, 0.5),
                 use_lock: bool = True, sleep: Callable[[float], None] = time.sleep) -> None:
        if not appid or not secret:
            raise WeChatAPIError(41002, "appid or secret not configured", "stable_token")
        self.redis, self.http, self.appid, self._secret = client, http, appid, secret
        # The lock outlives the longest fetch (busy retries included); waiters give up a little later.
        self.lock_ttl = http.timeout * (len(busy_backoff) + 1) + sum(busy_backoff) + 2
        self.wait = wait if wait is not None else self.lock_ttl + 1
        self.poll = poll
        self.busy_backoff = tuple(busy_backoff)
        self.use_lock = use_lock  # False only in tests: the negative control that shows the lock matters
        self.sleep = sleep
        self.error_ttl = ERROR_TTL
        self.key = f"wxapp:wechat:access_token:{appid}"
        self.lock_key = self.key + ":lock"
        self.error_key = self.key + ":error"
        self.force_interval_key = self.key + ":force:interval"
        self._cad = client.register_script(_COMPARE_AND_DELETE)
        self._force_gate = client.register_script(_FORCE_GATE)

    def cached(self) -> str | None:
        raw = self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def cached_with(self, other: str) -> tuple[str | None, bytes | None]:
        """The cached token and the value of another key, in one round trip."""
        raw, value = self.redis.mget(self.key, other)
        return (raw.decode() if isinstance(raw, bytes) else raw), value

    def get(self) -> str:
        """A valid token: from the cache, or fetched by exactly one caller while the others wait."""
        token = self.cached()
        if token:
            return token
        if not self.use_lock:
            return self._fetch()
        deadline = time.monotonic() + self.wait
        owner = secrets.token_hex(8)
        while True:
            self._raise_recent_failure()
            if self.redis.set(self.lock_key, owner, nx=True, px=int(self.lock_ttl * 1000)):
                try:
                    token = self.cached()  # filled between our miss and our lock
                    if token:
                        return token
                    # A fetch that failed between our check above and our lock: it set the error before it let
                    # go of the lock, so we see it here (CI caught a waiter fetching again in that window).
                    self._raise_recent_failure()
                    return self._fetch()
                finally:
                    self._cad(keys=[self.lock_key], args=[owner])
            self.sleep(self.poll)
            token = self.cached()
            if token:
                return token
            if time.monotonic() > deadline:
                raise WeChatAPIError(-2, f"no access token after waiting {self.wait:.0f}s", "stable_token")

    def _raise_recent_failure(self) -> None:
        """A fetch that just failed (remembered ERROR_TTL seconds) answers every caller, including one that
        arrives after it ended, instead of each trying WeChat again at once."""
        failed = self.redis.get(self.error_key)
        if failed is not None:
            raise WeChatAPIError(int(failed), "access token fetch failed in another process", "stable_token")

    def invalidate(self, token: str) -> bool:
        """Drop the cached token only if it is still `token`; True when it was dropped."""
        return bool(self._cad(keys=[self.key], args=[token]))

    def replace_refused(self, refused: str) -> str | None:
        """A token other than `refused`, which WeChat refused and stable_token's normal mode still hands out: forced
        out once (by one caller across all processes, within WeChat's limits), or the one another caller got. None
        when no other token can be had now (limits reached, or the forced refresh gave nothing new)."""
        deadline = time.monotonic() + self.wait
        owner = secrets.token_hex(8)
        while True:
            current = self.cached()
            if current and current != refused:
                return current
            if self.redis.set(self.lock_key, owner, nx=True, px=int(self.lock_ttl * 1000)):
                try:
                    return self._force_once(refused)
                finally:
                    self._cad(keys=[self.lock_key], args=[owner])
            if time.monotonic() > deadline:
                return None
            self.sleep(self.poll)

    def _force_once(self, refused: str) -> str | None:
        """Under the fetch lock: the forced refresh, unless another caller did it for this token already."""
        current = self.cached()
        if current and current != refused:  # cached by another process meanwhile
            return current
        marker = f"{self.key}:force:{hashlib.sha1(refused.encode()).hexdigest()[:16]}"
        day = time.strftime("%Y%m%d", time.gmtime(time.time() + CHINA_OFFSET))
        verdict = int(self._force_gate(
            keys=[marker, self.force_interval_key, f"{self.key}:force:day:{day}"],
            args=[self.FORCE_MARK_TTL, int(self.FORCE_INTERVAL * 1000), self.FORCE_DAILY_MAX, 2 * 86400]))
        if verdict == 0:  # forced away already: its successor, unless the cache lost it meanwhile (then fetch it)
            token = current or self._fetch()
            return token if token != refused else None
        if verdict < 0:
            log.warning("access token refused again, but no forced refresh is allowed now",
                        extra={"appid": self.appid, "limit": "interval" if verdict == -1 else "daily"})
            return None
        log.warning("access token refused but handed back by stable_token: forcing a refresh",
                    extra={"appid": self.appid})
        try:
            token = self._fetch(force=True)
        except WeChatAPIError:
            self.redis.delete(marker)  # nothing was replaced: a later refusal may try (the interval still paces it)
            raise
        return token if token != refused else None

    def _fetch(self, force: bool = False) -> str:
        body = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret,
                "force_refresh": force}
        try:
            data = retry_busy(lambda: self.http.call("POST", "/cgi-bin/stable_token", api="stable_token",
                                                     json_body=body), self.busy_backoff, self.sleep)
        except WeChatAPIError as exc:
            self.redis.set(self.error_key, str(exc.errcode), px=max(1, int(self.error_ttl * 1000)))
            if exc.errcode == 45009:
                # Every caller after ERROR_TTL fetches again and meets the same 45009 until midnight: a person
                # hears of it once a WeChat day (China's) per account, as for the other APIs' quotas.
                if first_quota_alert_today(self.redis, self.appid, "stable_token", time.time()):
                    log.error("WeChat daily quota reached while fetching the access token (45009)",
                              extra={"alert": True, "api": "stable_token", "appid": self.appid})
                else:
                    log.warning("WeChat daily quota reached while fetching the access token (45009) again "
                                "(alerted already today)", extra={"api": "stable_token", "appid": self.appid})
            raise
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatAPIError(-2, "stable_token answer without access_token", "stable_token")
        expires_in = int(data.get("expires_in") or 7200)
        # Stop using a token a bit before WeChat does: 5 minutes for a full-life token, a fifth of a short one.
        ttl = max(1, expires_in - min(300, expires_in // 5))
        self.redis.set(self.key, token, ex=ttl)
        self.redis.delete(self.error_key)
        log.info("access token fetched", extra={"appid": self.appid, "expires_in": expires_in})
        return token
