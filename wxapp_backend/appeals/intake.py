"""Intake helpers shared by the mini-program API and the chat handler: photos and their storage.

Photos arrive as base64 strings (optionally `data:image/...;base64,` URLs). The type is decided by the
file's first bytes (JPEG, PNG, WebP), never by what the client declares; files get a random name.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from pathlib import Path

from ..errors import NotFound, PayloadTooLarge, ValidationError

MAX_IMAGES = 9
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_BODY_BYTES = 15 * 1024 * 1024  # nine compressed photos in base64 fit; the app-wide cap is 16 MB
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.I)
_NAME = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp)$")


def sniff(data: bytes) -> str | None:
    """'jpg', 'png' or 'webp' by magic bytes; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_images(items: list[str], *, field: str = "images") -> list[tuple[bytes, str]]:
    """Decode and check every photo before anything is written; the first bad one names its position."""
    if len(items) > MAX_IMAGES:
        raise ValidationError(f"照片最多 {MAX_IMAGES} 张。", fields={field: f"照片最多 {MAX_IMAGES} 张"})
    out = []
    for i, raw in enumerate(items, 1):
        text = _DATA_URL.sub("", raw.strip())
        if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 8:
            raise PayloadTooLarge(f"第 {i} 张照片太大了（每张不超过 2 MB）。",
                                  fields={field: f"第 {i} 张照片超过 2 MB"})
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError(f"第 {i} 张照片无法读取。", fields={field: f"第 {i} 张不是有效的图片数据"}) from None
        if len(data) > MAX_IMAGE_BYTES:
            raise PayloadTooLarge(f"第 {i} 张照片太大了（每张不超过 2 MB）。",
                                  fields={field: f"第 {i} 张照片超过 2 MB"})
        ext = sniff(data)
        if ext is None:
            raise ValidationError(f"第 {i} 张不是 JPG、PNG 或 WebP 图片。",
                                  fields={field: f"第 {i} 张只支持 JPG、PNG、WebP 图片"})
        out.append((data, ext))
    return out


def upload_dir(instance_path: Path) -> Path:
    d = Path(instance_path) / "uploads" / "appeals"
    d.mkdir(parents=True, exist_ok=True)
    return d


def store_images(instance_path: Path, decoded: list[tuple[bytes, str]]) -> list[dict]:
    """Write photos under instance/uploads/appeals with random names; returns their descriptions."""
    d = upload_dir(instance_path)
    stored = []
    for data, ext in decoded:
        name = f"{secrets.token_hex(16)}.{ext}"
        (d / name).write_bytes(data)
        stored.append({"name": name, "type": {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[ext],
                       "size": len(data)})
    return stored


def image_path(instance_path: Path, images: list[dict], name: str) -> tuple[Path, str]:
    """The file of one of this appeal's photos (404 for any other name)."""
    for img in images or []:
        if img.get("name") == name and _NAME.match(name):
            path = upload_dir(instance_path) / name
            if path.is_file():
                return path, img.get("type", "application/octet-stream")
    raise NotFound("没有这张照片。")
