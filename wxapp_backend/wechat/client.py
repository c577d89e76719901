"""WeChat API client: every call goes to WECHAT_API_BASE with a timeout and is counted in /metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from ..metrics import WECHAT_CALLS, WECHAT_LATENCY

log = logging.getLogger(__name__)


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero errcode, or could not be reached (errcode -2 for transport)."""

    def __init__(self, errcode: int, errmsg: str, api: str = "") -> None:
        self.errcode, self.errmsg, self.api = errcode, errmsg, api
        super().__init__(f"{api}: {errcode} {errmsg}")

    @property
    def transient(self) -> bool:
        return self.errcode in {-1, -2}


class WeChatHTTP:
    """Thin HTTP layer shared by every WeChat API call."""

    def __init__(self, base_url: str, timeout: float = 5.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()

    def call(self, method: str, path: str, *, api: str, params: dict | None = None,
             json_body: dict | None = None, raw: bool = False) -> Any:
        started = time.perf_counter()
        errcode = "transport"
        try:
            resp = self.http.request(method, self.base_url + path, params=params,
                                     json=json_body if json_body is not None else None, timeout=self.timeout)
            if raw and not resp.headers.get("Content-Type", "").startswith(("application/json", "text/plain")):
                errcode = "0"
                return resp
            try:
                data = resp.json()
            except ValueError:
                errcode = "bad_response"
                raise WeChatAPIError(-2, f"non-JSON answer, HTTP {resp.status_code}", api) from None
            code = int(data.get("errcode", 0) or 0) if isinstance(data, dict) else 0
            errcode = str(code)
            if code != 0:
                raise WeChatAPIError(code, str(data.get("errmsg", "")), api)
            return data
        except requests.RequestException as exc:
            raise WeChatAPIError(-2, f"transport error: {type(exc).__name__}", api) from None
        finally:
            WECHAT_CALLS.labels(api, errcode).inc()
            WECHAT_LATENCY.labels(api).observe(time.perf_counter() - started)


def code_to_session(http: WeChatHTTP, appid: str, secret: str, code: str) -> dict[str, Any]:
    """jscode2session: needs no access token (unlike wechatpy's, which fetches one first)."""
    return http.call("GET", "/sns/jscode2session", api="jscode2session", params={
        "appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"})
