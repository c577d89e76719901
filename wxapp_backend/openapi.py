"""The OpenAPI 3 description of /api/v1, generated from the registered routes and their @doc facts."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from .validation import openapi_schema

bp = Blueprint("openapi", __name__)

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message", "fields"],
    "properties": {
        "error": {"type": "string", "description": "机器可读的错误代码"},
        "message": {"type": "string", "description": "给用户看的中文说明"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_STATUS_TEXT = {400: "请求有误", 401: "未登录或登录已过期", 403: "没有权限", 404: "不存在", 409: "状态冲突",
                413: "内容太大", 422: "填写有误", 429: "太频繁"}


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []

    def sub(m: re.Match[str]) -> str:
        conv, name = m.group(1), m.group(2)
        params.append({"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer" if conv == "int" else "string"}})
        return "{" + name + "}"

    return re.sub(r"<(?:(\w+):)?(\w+)>", sub, rule), params


def build_spec(app: Flask) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "openapi.spec":
            continue
        view = app.view_functions[rule.endpoint]
        facts = getattr(view, "__openapi__", None)
        path, path_params = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": facts["summary"] if facts else "",
                "parameters": list(path_params),
                "responses": {},
            }
            if facts:
                op["tags"] = list(facts["tags"])
                op["parameters"].extend(dict(h) for h in facts.get("headers", ()))
                for f in facts["params"]:
                    op["parameters"].append({"name": f.name, "in": "query", "required": f.required,
                                             "schema": openapi_schema([f])["properties"][f.name]})
                if facts["body"] is not None and method in {"POST", "PUT", "PATCH"}:
                    schema = openapi_schema(facts["body"])
                    if method == "PATCH":  # changes only the fields sent: none is required
                        schema.pop("required", None)
                    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
                for status, text in facts["responses"].items():
                    op["responses"][str(status)] = {"description": text}
                    if status >= 400:  # a view's own words for an error: the body is the Error all the same
                        op["responses"][str(status)]["content"] = {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                if facts["auth"] == "optional":
                    # Works without a login and gives more with one; a bad token is 401 invalid_token. The empty
                    # requirement is OpenAPI's way of saying "or none at all".
                    op["security"] = [{}, {"bearer": []}]
                    op["responses"].setdefault("401", {
                        "description": "带了已过期或无效的登录令牌（invalid_token，请重新登录）；不带令牌按未登录处理",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
                elif facts["auth"] != "none":
                    op["security"] = [{"bearer": []}]
            for status, text in _STATUS_TEXT.items():
                op["responses"].setdefault(str(status), {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "wxapp_backend 小程序接口", "version": "1",
                 "description": "营商服务中心小程序后端接口。错误统一为 {error, message, fields}。"
                                "登录可选的接口（security 为 [{}, {bearer}]）不带 Authorization 时按未登录处理，带了登录令牌时"
                                "多给本人的信息；带了已过期或无效的登录令牌则返回 401 invalid_token（请重新登录），"
                                "不会悄悄按未登录处理。没有 security 的接口不看登录令牌。"},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/api/v1/openapi.json")
def spec():
    # The same document for everyone: cached and revalidated by its ETag (a 304 while the code has not changed),
    # rather than fetched whole on every look like a person's data.
    resp = jsonify(build_spec(current_app))
    resp.add_etag()
    return resp.make_conditional(request)


spec.same_for_everyone = True  # type: ignore[attr-defined]  # read by the /api caching rule
