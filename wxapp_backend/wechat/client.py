"""WeChat API client: every call goes to WECHAT_API_BASE with a timeout and is counted in /metrics.

`get_api("oa")` / `get_api("wxa")` give a `WeChatAPI` for the Official Account or the mini-program, built
from the current application's settings, Redis and HTTP layer. Its calls add the shared access token
(`tokens.TokenStore`) and handle WeChat's answers in one place:

- 40001 / 40014 / 42001 (token invalid or expired): compare-and-expire the token that failed, fetch (or
  read) the current one, and retry the call exactly once; a second failure is raised, never looped. When the
  fetch hands back the very token refused, a forced refresh replaces it (`TokenStore.replace_refused`: once per
  refused token across processes, within WeChat's limits); when none is allowed, the error is raised at once.
- -1 (busy): retried after a short backoff, a bounded number of times.
- 45009 (daily quota): raised as `QuotaReached`; no retry, no clear_quota. The API is then left alone for that
  account until WeChat's midnight or a cool-down (settings.extra["wechat_quota_cooldown"], QUOTA_COOLDOWN s),
  whichever comes first: calls meanwhile raise `QuotaReached` (called=False) without reaching WeChat, and only
  the first 45009 of the WeChat day (China's) for that account and API is logged as an alert for a person
  (`alert=True`); later ones, when a cool-down ends on a quota still used up, are warnings. The mark is read with
  the token in the same Redis round trip.
- anything else: `WeChatAPIError` with `.errcode` and `.transient` (True for -1, transport failures and 45011,
  the per-minute frequency limit: the caller's queue tries again later).

wechatpy 1.8.18's own client is not used for API calls: it refetches tokens per process, unconditionally and
recursively on 40001 (see WECHAT.md). Its message bodies are plain JSON, built here directly.
`code_to_session` (jscode2session) needs no access token and stays a plain function.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from ..metrics import WECHAT_CALLS, WECHAT_LATENCY

if TYPE_CHECKING:
    import redis

    from ..config import Settings
    from .tokens import TokenStore

log = logging.getLogger(__name__)


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero errcode, or could not be reached (errcode -2 for transport)."""

    def __init__(self, errcode: int, errmsg: str, api: str = "") -> None:
        self.errcode, self.errmsg, self.api = errcode, errmsg, api
        super().__init__(f"{api}: {errcode} {errmsg}")

    @property
    def transient(self) -> bool:
        """Busy (-1), unreachable (-2) or too fast (45011, "retry next minute"): the same call may work later."""
        return self.errcode in {-1, -2, 45011}

    @property
    def credential(self) -> bool:
        """The account's credential, not the call: a token still refused after the one refresh, or a token fetch WeChat
        refused (40125 wrong AppSecret, 40164 address not whitelisted...; busy, unreachable and quota aside). Every
        other call fails the same way until a person fixes it: worth waiting for, never the recipient's fault."""
        return self.errcode in TOKEN_ERRORS or (
            self.api == "stable_token" and not self.transient and self.errcode != QUOTA_EXCEEDED)


class QuotaReached(WeChatAPIError):
    """45009: the API's daily quota is used up. `called` is False when WeChat was not called (the quota was known
    to be used up); `retry_in` is how many seconds the API is left alone."""

    def __init__(self, errmsg: str, api: str, *, retry_in: float, called: bool) -> None:
        super().__init__(QUOTA_EXCEEDED, errmsg, api)
        self.retry_in, self.called = retry_in, called


class WeChatHTTP:
    """Thin HTTP layer shared by every WeChat API call."""

    def __init__(self, base_url: str, timeout: float = 5.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()

    def call(self, method: str, path: str, *, api: str, params: dict | None = None,
             json_body: dict | None = None, raw: bool = False, max_bytes: int | None = None) -> Any:
        """max_bytes (a file's answer): read no more than that; a longer file is refused (-3) unread."""
        started = time.perf_counter()
        errcode = "transport"
        try:
            data, headers = None, None
            if json_body is not None:
                # UTF-8, not requests' json= (\uXXXX escapes): WeChat shows an escape in a message as those six
                # characters, or refuses it (40033); wechatpy sends ensure_ascii=False for the same reason.
                # (A lone surrogate, which no UTF-8 text holds, becomes "?".)
                data = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode("utf-8", "replace")
                headers = {"Content-Type": "application/json; charset=utf-8"}
            resp = self.http.request(method, self.base_url + path, params=params, data=data, headers=headers,
                                     timeout=self.timeout, **({"stream": True} if max_bytes is not None else {}))
            if raw and not resp.headers.get("Content-Type", "").startswith(("application/json", "text/plain")):
                if resp.status_code != 200:  # a gateway's error page (502, 503 ...) is no file: try again later
                    errcode = "http_error"
                    raise WeChatAPIError(-2, f"HTTP {resp.status_code} instead of a file", api)
                if max_bytes is not None:
                    _read_at_most(resp, max_bytes, api)
                errcode = "0"
                return resp
            try:
                data = resp.json()
            except ValueError:
                errcode = "bad_response"
                raise WeChatAPIError(-2, f"non-JSON answer, HTTP {resp.status_code}", api) from None
            code = _errcode(data)
            if code is None:
                # A gateway's JSON with an errcode that is no number ({"errcode":"busy"}): WeChat never had the call.
                errcode = "bad_response"
                raise WeChatAPIError(-2, f"errcode is not a number, HTTP {resp.status_code}", api)
            if code == 0 and resp.status_code != 200:
                # WeChat answers every call with HTTP 200 (errors in errcode): JSON under another status comes from
                # a gateway in between, and WeChat never had the call. Not a success: try again later.
                errcode = "http_error"
                raise WeChatAPIError(-2, f"HTTP {resp.status_code} without an errcode", api)
            errcode = str(code)
            if code != 0:
                raise WeChatAPIError(code, str(data.get("errmsg", "")), api)
            return data
        except requests.RequestException as exc:
            raise WeChatAPIError(-2, f"transport error: {type(exc).__name__}", api) from None
        finally:
            WECHAT_CALLS.labels(api, errcode).inc()
            WECHAT_LATENCY.labels(api).observe(time.perf_counter() - started)


def _errcode(data: Any) -> int | None:
    """The answer's errcode (0 when there is none, as WeChat's successes mostly have); None when it is no number."""
    value = data.get("errcode", 0) if isinstance(data, dict) else 0
    if value is None or value == "" or value is False:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _read_at_most(resp: requests.Response, max_bytes: int, api: str) -> None:
    """Load a streamed file's body, refusing (-3, not worth trying again) one longer than max_bytes before more than
    that is read: a 100 MB answer is never held in memory."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        resp.close()
        raise WeChatAPIError(-3, f"file larger than {max_bytes} bytes", api)
    body = bytearray()
    for block in resp.iter_content(64 * 1024):
        body += block
        if len(body) > max_bytes:
            resp.close()
            raise WeChatAPIError(-3, f"file larger than {max_bytes} bytes", api)
    resp._content = bytes(body)  # what .content gives from now on


LOGIN_BUSY_BACKOFF = (0.1, 0.3)  # a user is waiting on the login screen: short waits, then a clear 503


def code_to_session(http: WeChatHTTP, appid: str, secret: str, code: str, *,
                    busy_backoff: Sequence[float] = LOGIN_BUSY_BACKOFF,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """jscode2session: needs no access token (unlike wechatpy's, which fetches one first); -1 (busy) is tried
    again after a short wait, as every other call is (a busy answer has not used the code)."""
    params = {"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"}
    return retry_busy(lambda: http.call("GET", "/sns/jscode2session", api="jscode2session", params=params),
                      busy_backoff, sleep)


# ------------------------------------------------------------------------------------------- API client

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
QUOTA_EXCEEDED = 45009
QUOTA_COOLDOWN = 1800.0  # seconds an API is left alone after its 45009 (at most until WeChat's midnight)
CHINA_OFFSET = 8 * 3600  # WeChat's daily quotas reset at midnight, China time
BUSY = -1
ACCOUNTS = ("oa", "wxa")

T = TypeVar("T")


def retry_busy(fn: Callable[[], T], backoff: Sequence[float], sleep: Callable[[float], None] = time.sleep) -> T:
    """Run fn; on -1 (WeChat busy) wait backoff[i] and try again, len(backoff) times at most."""
    for delay in (*backoff, None):
        try:
            return fn()
        except WeChatAPIError as exc:
            if exc.errcode != BUSY or delay is None:
                raise
            log.warning("WeChat busy (-1), retrying", extra={"api": exc.api, "delay": delay})
            sleep(delay)
    raise AssertionError("unreachable")


def first_quota_alert_today(client: redis.Redis, appid: str, api: str, now: float) -> bool:
    """True for the first 45009 of the WeChat day (China's) for this account and API, across all processes: that
    one alerts a person, later ones are warnings. Without Redis every caller alerts: an alert too many rather
    than none."""
    day = int((now + CHINA_OFFSET) // 86400)
    to_midnight = 86400 - (now + CHINA_OFFSET) % 86400
    try:
        return bool(client.set(f"wxapp:wechat:quota-alerted:{appid}:{api}:{day}", "1", nx=True,
                               ex=int(to_midnight) + 3600))
    except Exception:  # noqa: BLE001 - as said: better an alert too many
        return True


class WeChatAPI:
    """The API of one account (Official Account or mini-program) with a shared access token."""

    def __init__(self, http: WeChatHTTP, tokens: TokenStore, *, account: str, wxa_state: str = "formal",
                 busy_backoff: Sequence[float] = (0.2, 0.5), sleep: Callable[[float], None] = time.sleep,
                 tuning: dict[str, Any] | None = None) -> None:
        self.http, self.tokens, self.account = http, tokens, account
        self.appid = tokens.appid
        self.wxa_state = wxa_state
        self.busy_backoff = tuple(busy_backoff)
        self.sleep = sleep
        self.tuning = tuning if tuning is not None else {}  # settings.extra, read when used

    def access_token(self) -> str:
        """The current access token (cached in Redis; fetched by one process for all)."""
        return self.tokens.get()

    def quota_key(self, api: str) -> str:
        return f"wxapp:wechat:quota:{self.appid}:{api}"

    def quota_wait(self, api: str) -> float:
        """Seconds `api` is still left alone after a 45009 (0: call it)."""
        return _left(self.tokens.redis.get(self.quota_key(api)))

    def call(self, method: str, path: str, *, api: str, params: dict[str, Any] | None = None,
             json_body: dict[str, Any] | None = None, raw: bool = False, max_bytes: int | None = None) -> Any:
        """One authenticated call: one token refresh + retry on a token error, backoff on busy."""
        token, until = self.tokens.cached_with(self.quota_key(api))  # one round trip for both
        wait = _left(until)
        if wait:
            raise QuotaReached("daily quota used up: not called until the cool-down ends", api, retry_in=wait,
                               called=False)
        token = token or self.access_token()
        refreshed = False
        while True:
            query = {**(params or {}), "access_token": token}
            try:
                return retry_busy(lambda q=query: self.http.call(method, path, api=api, params=q,
                                                                 json_body=json_body, raw=raw,
                                                                 **({"max_bytes": max_bytes} if max_bytes else {})),
                                  self.busy_backoff, self.sleep)
            except WeChatAPIError as exc:
                if exc.errcode in TOKEN_ERRORS and not refreshed:
                    refreshed = True
                    dropped = self.tokens.invalidate(token)
                    log.info("access token refused, refreshing once",
                             extra={"api": api, "errcode": exc.errcode, "dropped": dropped})
                    fresh = self.tokens.get()
                    if fresh == token:
                        # stable_token's normal mode handed back the very token just refused: sending with it again
                        # would fail too, until it expires. Only a forced refresh replaces it (once, for everyone).
                        fresh = self.tokens.replace_refused(token)
                        if fresh is None:
                            raise
                    token = fresh
                    continue
                if exc.errcode == QUOTA_EXCEEDED:
                    raise self._quota_reached(api, exc) from None
                raise

    def _quota_reached(self, api: str, exc: WeChatAPIError) -> QuotaReached:
        """Leave `api` alone until WeChat's midnight or the cool-down; alert once a day, by whoever starts it."""
        now = time.time()
        to_midnight = 86400 - (now + CHINA_OFFSET) % 86400
        wait = max(0.05, min(float(self.tuning.get("wechat_quota_cooldown", QUOTA_COOLDOWN)), to_midnight))
        try:
            # Truncated to the millisecond: rounded up, the mark read back as longer than the cool-down itself.
            until = int((now + wait) * 1000) / 1000
            first = bool(self.tokens.redis.set(self.quota_key(api), f"{until:.3f}", nx=True,
                                               px=int(wait * 1000)))
        except Exception:  # noqa: BLE001 - without Redis every caller alerts: better than none
            first = True
        if first:
            # Each cool-down that ends on a quota still used up starts another: a person hears of it once a WeChat
            # day (China's), at its first 45009, not every half hour until midnight.
            first = first_quota_alert_today(self.tokens.redis, self.appid, api, now)
        if first:
            # A person decides whether to spend one of the 10 monthly clear_quota resets.
            log.error("WeChat daily API quota reached (45009); this API waits for the quota",
                      extra={"alert": True, "api": api, "appid": self.appid, "account": self.account,
                             "retry_in": round(wait)})
        else:
            log.warning("WeChat daily API quota reached (45009) again (alerted already today)",
                        extra={"api": api, "appid": self.appid, "retry_in": round(wait)})
        return QuotaReached(exc.errmsg, api, retry_in=wait, called=True)

    # ----------------------------------------------------------------------------- customer service

    def send_custom(self, openid: str, message: dict[str, Any]) -> dict[str, Any]:
        """Customer-service message: message is {"msgtype": ..., <msgtype>: {...}}."""
        return self.call("POST", "/cgi-bin/message/custom/send", api="custom_send",
                         json_body={"touser": openid, **message})

    def send_text(self, openid: str, text: str) -> dict[str, Any]:
        return self.send_custom(openid, {"msgtype": "text", "text": {"content": text}})

    def send_image(self, openid: str, media_id: str) -> dict[str, Any]:
        return self.send_custom(openid, {"msgtype": "image", "image": {"media_id": media_id}})

    def send_link(self, openid: str, title: str, description: str, url: str, thumb_url: str) -> dict[str, Any]:
        # The Official Account shows a link as a one-article "news" message; the mini-program has "link".
        if self.account == "oa":
            article = {"title": title, "description": description, "url": url, "picurl": thumb_url}
            return self.send_custom(openid, {"msgtype": "news", "news": {"articles": [article]}})
        return self.send_custom(openid, {"msgtype": "link", "link": {
            "title": title, "description": description, "url": url, "thumb_url": thumb_url}})

    def send_miniprogram_page(self, openid: str, title: str, pagepath: str, thumb_media_id: str,
                              appid: str | None = None) -> dict[str, Any]:
        card: dict[str, Any] = {"title": title, "pagepath": pagepath, "thumb_media_id": thumb_media_id}
        if appid:  # the Official Account must name the mini-program it links to
            card["appid"] = appid
        return self.send_custom(openid, {"msgtype": "miniprogrampage", "miniprogrampage": card})

    # ----------------------------------------------------------------------------- subscribe messages

    def send_subscribe(self, openid: str, template_id: str, data: dict[str, str], page: str = "", *,
                       kind_fields: dict[str, str] | None = None) -> dict[str, Any]:
        """Mini-program subscribe message; values are checked first (TemplateFieldError, no 47003).

        kind_fields maps template keys to keys of `data` (a notification kind's field mapping); without it
        `data` is keyed by template keys already.
        """
        from .templates import validate

        if kind_fields:
            missing = [src for src in kind_fields.values() if src not in data]
            if missing:
                from .templates import TemplateFieldError

                raise TemplateFieldError(missing[0], "缺少取值")
            data = {key: data[src] for key, src in kind_fields.items()}
        values = validate(data)
        body: dict[str, Any] = {"touser": openid, "template_id": template_id,
                                "data": {k: {"value": v} for k, v in values.items()},
                                "miniprogram_state": self.wxa_state, "lang": "zh_CN"}
        if page:
            body["page"] = page
        return self.call("POST", "/cgi-bin/message/subscribe/send", api="subscribe_send", json_body=body)

    # ----------------------------------------------------------------------------- users

    def user_info(self, openid: str) -> dict[str, Any]:
        """An Official Account user's basic information (cgi-bin/user/info): "subscribe" (0 when they no longer
        follow; then the profile is left out) and, when the account is bound to an open-platform account,
        "unionid" (given whether they follow or not), the same for this person in the mini-program."""
        return self.call("GET", "/cgi-bin/user/info", api="user_info", params={"openid": openid, "lang": "zh_CN"})

    # ----------------------------------------------------------------------------- QR codes

    def create_qrcode(self, scene_str: str) -> dict[str, Any]:
        """A permanent parametric QR code (QR_LIMIT_STR_SCENE, scene 1-64 characters): {"ticket", "url"}. A follow
        through it pushes subscribe with EventKey qrscene_<scene>, a follower's scan SCAN with EventKey <scene>."""
        return self.call("POST", "/cgi-bin/qrcode/create", api="qrcode_create", json_body={
            "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene_str}}})

    # ----------------------------------------------------------------------------- media

    def download_media(self, media_id: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        """A temporary media file (image, voice) a user sent: (bytes, content type). With max_bytes a longer file is
        a WeChatAPIError -3, refused before more than that is read."""
        resp = self.call("GET", "/cgi-bin/media/get", api="media_get", params={"media_id": media_id}, raw=True,
                         **({"max_bytes": max_bytes} if max_bytes else {}))
        if isinstance(resp, dict):  # a JSON answer without errcode is not a file
            raise WeChatAPIError(-2, "media/get answered JSON instead of a file", "media_get")
        ctype = resp.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
        return resp.content, ctype


def _left(until: bytes | str | None) -> float:
    """Seconds until the epoch time `until` (a quota mark), 0 when none or past."""
    if not until:
        return 0.0
    try:
        return max(0.0, float(until) - time.time())
    except ValueError:
        return 0.0


def build_api(account: str, settings: Settings, client: redis.Redis, http: WeChatHTTP, *,
              busy_backoff: Sequence[float] = (0.2, 0.5), sleep: Callable[[float], None] = time.sleep,
              use_lock: bool = True) -> WeChatAPI:
    """A WeChatAPI for account "oa" or "wxa" from explicit parts (scripts, benchmarks, other processes).

    use_lock=False exists only for the tests' negative control (every process fetches its own token).
    """
    from .tokens import TokenStore

    if account not in ACCOUNTS:
        raise ValueError(f"account must be one of {ACCOUNTS}, got {account!r}")
    appid, secret = ((settings.wechat_appid, settings.wechat_secret) if account == "oa"
                     else (settings.wxa_appid, settings.wxa_secret))
    tokens = TokenStore(client, http, appid, secret, busy_backoff=busy_backoff, sleep=sleep, use_lock=use_lock)
    return WeChatAPI(http, tokens, account=account, wxa_state=settings.wxa_state, busy_backoff=busy_backoff,
                     sleep=sleep, tuning=settings.extra)


def get_api(account: str) -> WeChatAPI:
    """The WeChatAPI of "oa" or "wxa" for the current application (cached on the app)."""
    from flask import current_app

    apis: dict[str, WeChatAPI] = current_app.extensions.setdefault("wxapp_wechat_apis", {})
    api = apis.get(account)
    if api is None:
        state = current_app.extensions["wxapp"]
        api = apis[account] = build_api(account, state.settings, state.redis, state.wechat_http)
    return api
