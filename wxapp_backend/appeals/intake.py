"""Intake helpers shared by the mini-program API and the chat handler: photos and their storage.

Photos arrive as base64 strings (optionally `data:image/...;base64,` URLs). The type is decided by the
file's first bytes (JPEG, PNG, WebP), never by what the client declares; a declared size in pixels no viewer should
inflate is refused; location, device and other metadata are removed before a photo is stored (photos.py); files get
a random name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import current_app, has_app_context

from knowledge.smalltalk import has_no_content, without_faces

from ..errors import NotFound, PayloadTooLarge, ValidationError
from ..validation import strip_invisible
from . import photos

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
    """Decode and check every photo before anything is written; the first bad one names its position. The same
    photo twice (a double pick in the album) is kept once (distinct_photos) and not counted against the nine."""
    texts: dict[str, int] = {}  # each distinct photo's text -> its position in the upload
    for i, raw in enumerate(items, 1):
        texts.setdefault(_DATA_URL.sub("", raw.strip()), i)
    if len(texts) > MAX_IMAGES:
        raise ValidationError(f"照片最多 {MAX_IMAGES} 张。", fields={field: f"照片最多 {MAX_IMAGES} 张"})
    out = []
    for text, i in texts.items():
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
        if photos.too_large(photos.dimensions(data, ext)):
            raise ValidationError(f"第 {i} 张照片的尺寸太大了，请截图或压缩后再上传。",
                                  fields={field: f"第 {i} 张照片尺寸超过上限"})
        out.append((photos.strip_metadata(data, ext), ext))
    return distinct_photos(out)  # the same bytes written another way (another data: prefix, say)


def photo_key(data: bytes) -> str:
    """What tells a photo from another: the sha256 of its bytes as stored (metadata removed, photos.py)."""
    return hashlib.sha256(data).hexdigest()


def distinct_photos(decoded: list[tuple[bytes, str]], seen: set[str] | None = None) -> list[tuple[bytes, str]]:
    """`decoded` (photos as stored: bytes, type) without those already in `seen` (photo_keys: of the photos an appeal
    already has, say) or earlier in the list; `seen` takes the ones kept. The one dedupe of the upload form, the chat
    and the supplement: the same photo sent twice is stored once and not counted against the nine."""
    seen = set() if seen is None else seen
    out = []
    for data, ext in decoded:
        key = photo_key(data)
        if key not in seen:
            seen.add(key)
            out.append((data, ext))
    return out


def stored_keys(instance_path: Path, images: list[dict] | None) -> set[str]:
    """photo_key of each of an appeal's stored photos (a file gone missing counts for nothing)."""
    d = upload_dir(instance_path)
    keys = set()
    for img in images or []:
        name = str(img.get("name") or "")
        if _NAME.match(name):
            try:
                keys.add(photo_key((d / name).read_bytes()))
            except OSError:
                continue
    return keys


def upload_dir(instance_path: Path) -> Path:
    """<UPLOADS_PATH, default instance/uploads>/appeals, for the service's user alone (0700; photos are 0600): they
    show business licences and ID cards. Web and worker machines must all see the same folder (a worker stores the
    photos sent in the chat, a web machine serves them): with several machines, UPLOADS_PATH names a mount they
    share."""
    root = None
    if has_app_context():
        state = current_app.extensions.get("wxapp")
        root = getattr(getattr(state, "settings", None), "uploads_path", None)
    d = Path(root or Path(instance_path) / "uploads") / "appeals"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if d.stat().st_mode & 0o077:  # made readable to all by an earlier version
        d.chmod(0o700)
    return d


def store_images(instance_path: Path, decoded: list[tuple[bytes, str]]) -> list[dict]:
    """Write photos under instance/uploads/appeals with random names; returns their descriptions."""
    d = upload_dir(instance_path)
    stored = []
    for data, ext in decoded:
        name = f"{secrets.token_hex(16)}.{ext}"
        with os.fdopen(os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        stored.append({"name": name, "type": {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[ext],
                       "size": len(data)})
    return stored


def remove_images(instance_path: Path, images: list[dict]) -> None:
    """Delete stored photos that no appeal names (a submission answered with an earlier appeal)."""
    d = upload_dir(instance_path)
    for img in images:
        (d / img["name"]).unlink(missing_ok=True)


@contextmanager
def images_kept_if_committed(instance_path: Path) -> Iterator[Callable[[list[tuple[bytes, str]]], list[dict]]]:
    """A `store` for photos written inside a transaction that may still be refused (a 409, a 422 of the service,
    a failed commit): the files it wrote are removed again then, so nothing stays on disk that no appeal names.
    Open it outside `session_scope()`, so that the commit is inside."""
    written: list[dict] = []

    def store(decoded: list[tuple[bytes, str]]) -> list[dict]:
        stored = store_images(instance_path, decoded) if decoded else []
        written.extend(stored)
        return stored

    try:
        yield store
    except BaseException:
        remove_images(instance_path, written)
        raise


def image_path(instance_path: Path, images: list[dict], name: str) -> tuple[Path, str]:
    """The file of one of this appeal's photos (404 for any other name)."""
    for img in images or []:
        if img.get("name") == name and _NAME.match(name):
            path = upload_dir(instance_path) / name
            if path.is_file():
                return path, img.get("type", "application/octet-stream")
    raise NotFound("没有这张照片。")


def send_photo(path: Path, mimetype: str):
    """A stored photo, shown inline under the type its bytes were found to be. Opened on its own in a browser tab
    it runs nothing and loads nothing (a file that is also something else stays a picture)."""
    from flask import send_file

    resp = send_file(path, mimetype=mimetype)
    resp.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return resp


# --- chat intake (handlers/appeal_intake.py calls these; the handler itself holds no SQL) ------------------

def chat_profile(session, user_id: int) -> dict:
    """What we already know about the chat user: their verified enterprise and building."""
    from ..auth.models import User

    user = session.get(User, user_id)
    if user is None:
        return {}
    out: dict = {}
    enterprise = user.enterprise if user.enterprise_id and user.binding_state == "verified" else None
    if enterprise is not None and enterprise.retired:  # bound before a merge finished: the file carrying on
        from ..enterprises.services import carrying_on

        enterprise = carrying_on(session, enterprise)
    if enterprise is not None:
        out["enterprise_id"] = enterprise.id
        out["enterprise_name"] = enterprise.name
        if enterprise.building is not None:
            out["building_id"], out["building_name"] = enterprise.building.id, enterprise.building.name
    if "building_id" not in out and user.building is not None:
        out["building_id"], out["building_name"] = user.building.id, user.building.name
    if user.phone:
        out["phone"] = user.phone
    return out


LAST_DETAILS_HOURS = 24


def last_details(session, user_id: int, *, now=None) -> dict:
    """The enterprise, building and contact of the user's own latest appeal submitted in the last 24 hours ({} when
    there is none): a second appeal minutes after the first asked for all of them again."""
    from datetime import timedelta

    from sqlalchemy import select

    from ..db import utcnow
    from ..enterprises.models import Building
    from .models import Appeal

    since = (now or utcnow()) - timedelta(hours=LAST_DETAILS_HOURS)
    row = session.execute(
        select(Appeal.contact_name, Appeal.contact_phone, Appeal.enterprise_id, Appeal.enterprise_name,
               Appeal.building_id)
        .where(Appeal.user_id == user_id, Appeal.submitted_at >= since)
        .order_by(Appeal.submitted_at.desc(), Appeal.id.desc()).limit(1)).first()
    if row is None:
        return {}
    out: dict = {}
    if row.contact_name and row.contact_phone:
        out["contact_name"], out["contact_phone"] = row.contact_name, row.contact_phone
    if row.enterprise_name:
        out["enterprise_name"] = row.enterprise_name
        if row.enterprise_id is not None:
            out["enterprise_id"] = row.enterprise_id
        building = session.get(Building, row.building_id) if row.building_id is not None else None
        if building is not None:
            out["building_id"], out["building_name"] = building.id, building.name
    return out


NO_WORDS = "请用文字描述一下问题（至少 5 个字），只有表情或符号的话，工作人员没法办理哦。"
NO_CONTENT = "请具体说说遇到了什么问题：发生了什么、在哪里、持续多久（至少 5 个字），只有语气词的话，工作人员没法办理哦。"


def description_problem(text: str) -> str | None:
    """Why `text` cannot stand as an appeal's description, or None: at least 5 characters (checked by the caller's
    own limit) of which some are words: “🙂🙂🙂🙂🙂” or “？？？？？” (or WeChat's faces as text, “[发怒][发怒]”) reached
    staff as an appeal to handle; so did “啊啊啊啊啊” (fillers, one character over and over: has_no_content)."""
    if sum(ch.isalnum() for ch in without_faces(text)) < 2:
        return NO_WORDS
    return NO_CONTENT if has_no_content(text) else None


NO_SUPPLEMENT_WORDS = "请用文字写明补充的内容（至少 2 个字），只有表情或符号的话，工作人员没法据此办理哦。"


def supplement_problem(text: str) -> str | None:
    """Why `text` cannot stand as the material staff asked for, or None: the chat's rule (at least 2 characters of
    words); “？” or “👌” resumed the clock in the mini-program with nothing for staff to go on, and so did WeChat's
    faces written as text (“[微笑][微笑]”)."""
    return NO_SUPPLEMENT_WORDS if sum(ch.isalnum() for ch in without_faces(text)) < 2 else None


# Spaces and dots in a building's name are written (and transcribed) as people please: “上生·新所” is “上生新所”,
# “新华路 669 号园区” is “新华路669号园区” (not found, the appeal went in without its building).
_SEPARATOR = r"[\s·•・．.\-－—]"
_LOOSE = re.compile(_SEPARATOR + "+")


# As the appeal's column and the mini-program's form take it (appeals.api): a longer name is refused, never cut.
ENTERPRISE_NAME_MAX = 200


def match_place(session, text: str) -> dict:
    """Find a known building (and an enterprise by exact name) in free text like '某某公司，新华大厦'. The enterprise's
    name is as said, however long: the caller refuses one over ENTERPRISE_NAME_MAX."""
    from sqlalchemy import select

    from ..enterprises.models import Building, Enterprise
    from ..enterprises.services import carrying_on, name_key, normalized_name

    # Invisible characters pasted with the name (a zero-width space) are in no name on file: see strip_invisible.
    text = strip_invisible(text).strip()
    out: dict = {"enterprise_name": text}
    best, best_key = None, ""
    loose = _LOOSE.sub("", text)
    for b in session.scalars(select(Building)):
        key = _LOOSE.sub("", b.name or "")
        if key and key in loose and len(key) > len(best_key):
            best, best_key = b, key
    if best is not None:
        out["building_id"], out["building_name"] = best.id, best.name
        rest = re.sub(f"{_SEPARATOR}*".join(map(re.escape, best_key)), " ", text, count=1)
        name = re.split(r"[，,、/\s]+", rest.strip())
        out["enterprise_name"] = " ".join(n for n in name if n) or text
    # A retired duplicate's name (the name the enterprise went by before staff merged its two files) stands for
    # the file it was merged into; a current file of that name comes first.
    enterprise = None
    # Brackets and blanks are typed as they come (“（集团）” or “(集团)”): compared folded, the exact name first.
    said = out["enterprise_name"]
    for named in session.scalars(select(Enterprise).where(name_key(Enterprise.name) == normalized_name(said))
                                 .order_by(Enterprise.name != said, Enterprise.retired_at.is_not(None),
                                           Enterprise.id).limit(5)):
        enterprise = carrying_on(session, named)
        if enterprise is not None:
            break
    if enterprise is not None:
        out["enterprise_id"] = enterprise.id
        if best is None and enterprise.building is not None:
            out["building_id"], out["building_name"] = enterprise.building.id, enterprise.building.name
    return out


def submit_from_chat(session, user_id: int, draft: dict, *, account: str, now=None):
    """The confirmed chat draft becomes an appeal (idempotent per draft); photos are fetched by a job. `now`: the
    clock it is made on (default the real one), its `photos_pending` row's included."""
    from . import services

    appeal, created = services.submit_appeal(session, user_id, services.Intake(
        content=draft["content"], contact_name=draft["contact_name"], contact_phone=draft["contact_phone"],
        enterprise_id=draft.get("enterprise_id"), enterprise_name=draft.get("enterprise_name", ""),
        building_id=draft.get("building_id"), images=[], channel="chat"),
        idempotency_key=f"chat:{draft['id']}", daily_limit=services.MAX_APPEALS_PER_DAY, now=now)
    media = [m for m in draft.get("media", []) if isinstance(m, str)][:MAX_IMAGES]
    if created and media:
        queue_chat_photos(session, appeal, account, media, job_id=f"appeal-{appeal.id}-chat-images", now=now)
    return appeal


def queue_chat_photos(session, appeal, account: str, media: list[str], *, job_id: str, now=None) -> None:
    """Fetch photos sent in the chat (WeChat media ids) after the commit, and record in the same transaction that
    they are due (a `photos_pending` event): the job's arguments are not their only trace, so a lost enqueue or a
    job Redis lost is picked up by `jobs.sweep_chat_photos` while WeChat still keeps the media (3 days).

    The row is stamped `now` (default the real clock): the sweep compares its time with the `now` it is run on, so
    a row on the real clock under a travelled one was never (or always) due. A `now` given goes to the job too, for
    its `photos_attached` row."""
    from ..audit import SYSTEM
    from ..queue import enqueue_after_commit
    from . import services

    services._event(session, appeal, SYSTEM, "photos_pending", media=list(media), account=account,
                    job_id=job_id, note=f"对话中发送的照片 {len(media)} 张待保存", at=now)
    enqueue_after_commit(session, "wxapp_backend.appeals.jobs.fetch_chat_images", appeal.id, account, list(media),
                         job_id=job_id, retries=2, **({"now": now} if now is not None else {}))


def decode_raw(data: bytes) -> tuple[bytes, str]:
    """A downloaded photo: the same size and type checks as an uploaded one."""
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge("照片太大了（每张不超过 2 MB）。")
    ext = sniff(data)
    if ext is None:
        raise ValidationError("不是 JPG、PNG 或 WebP 图片。")
    if photos.too_large(photos.dimensions(data, ext)):
        raise ValidationError("照片的尺寸太大了。")
    return photos.strip_metadata(data, ext), ext
