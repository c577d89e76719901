"""Eighteenth QA pass (the enterprise's side of appeals, as a demanding user judges it): only one's own appeals on every
id-bearing route, no staff-only timeline rows in the API or the messages, the Idempotency-Key on submit, photos, bad
input, ratings; and a stored weekly report of a bad or never-stored week answered on the report's own page."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest

from tests.integration.test_appeals_qa_s8 import w  # noqa: F401 (a fixture)
from tests.integration.test_appeals_qa_s11 import world  # noqa: F401 (a fixture: the appeal API's people)
from tests.integration.test_photos3_qa_s16 import GPS_MARK, MODEL, _exif_tiff, _orientation_of, b64, jpeg, png
from tests.integration.test_weekly_qa_s18 import stored  # noqa: F401 (a fixture)


def _text(resp) -> str:
    return re.sub(r"\s+", " ", resp.get_data(as_text=True))


# --- the stored weekly report of a bad or never-stored week ------------------------------------------------------

@pytest.mark.parametrize(("week", "status", "words"), [
    ("2025-W99", 422, "没有这一周"),
    ("2020-W01", 404, "没有存档的周报"),
    ("0001-W01", 422, "年份"),
])
def test_a_stored_report_of_a_bad_or_unstored_week_says_so_on_the_report_page(stored, client, console_login, week,  # noqa: F811
                                                                             status, words):
    """The live report says a bad week on its own page, the week still in its box; the stored one fell to the bare
    error page, with no week box and no way to the 历史周报存档 but the browser's back button."""
    console_login(stored.make_staff(role="staff"))
    resp = client.get(f"/console/appeals/reports/{week}")
    body = _text(resp)
    assert resp.status_code == status
    assert 'id="report-week-error"' in body and words in body, body
    assert f'name="week" type="week" value="{week}"' in body  # to correct it where it was typed
    assert 'id="stored-reports-link"' in body and "历史周报存档" in body
    # A real week never stored: its live figures are one click away (the message says to look there).
    assert ('id="live-report-link"' in body) == (status == 404)
    if status == 404:
        assert f'href="/console/appeals/report?week={week}"' in body


# --- photos: the location is gone whatever the file's state, and a bomb is a bomb behind stray bytes ----------------

def _stored_photo(client, world, image: bytes) -> bytes:
    # Words of its own each time: the same words again within minutes are taken as the page's retry.
    body = world.submit(images=[b64(image)], content=f"楼下的路灯坏了，照片 {hashlib.sha256(image).hexdigest()[:8]}")
    resp = client.get(f"/api/v1/appeals/{body['id']}/images/{body['images'][0]}", headers=world.uh)
    assert resp.status_code == 200
    return resp.data


def _with_stray_bytes(data: bytes) -> bytes:
    """Bytes between two segments, which libjpeg (so every browser) skips with a warning and shows the photo."""
    at = data.index(b"\xff\xdb")
    return data[:at] + b"\x00\x00\x13\x37" + data[at:]


def _webp_cut_short() -> bytes:
    """An extended WebP with an EXIF chunk (the phone, the location), its picture chunk cut short."""
    def chunk(fourcc: bytes, payload: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")
    vp8x = bytes((0x08, 0, 0, 0)) + (63).to_bytes(3, "little") + (63).to_bytes(3, "little")
    body = chunk(b"VP8X", vp8x) + chunk(b"EXIF", _exif_tiff(1)) + b"VP8 " + struct.pack("<I", 400) + b"\x10" * 40
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


@pytest.mark.parametrize("image", [
    _with_stray_bytes(jpeg()),
    jpeg()[:jpeg().index(b"\xff\xdb") + 12],  # the file ends inside its header: a phone that saved half of it
    png()[:-20],  # cut short in its picture data, which a browser still shows the top of
    png()[:png().index(b"eXIf") + 20],  # cut short inside the EXIF chunk itself
    _webp_cut_short(),
], ids=["jpeg-stray-bytes", "jpeg-cut-in-header", "png-cut-in-picture", "png-cut-in-exif", "webp-cut-in-picture"])
def test_a_photo_whose_structure_breaks_later_still_loses_its_location(world, client, image):
    """A photo whose structure could not be followed to its end was kept exactly as it came, EXIF and all: the GPS
    position, the phone and the owner's name before the break were served to every department opening the appeal
    (a viewer reads a file from its start: the metadata before the break is as readable as in a sound file)."""
    assert GPS_MARK in image or MODEL in image
    stored = _stored_photo(client, world, image)
    assert GPS_MARK not in stored and MODEL not in stored, stored[:300]
    assert stored[:4] == image[:4]  # still the same kind of file


def test_the_picture_after_stray_bytes_is_kept(world, client):
    stored = _stored_photo(client, world, _with_stray_bytes(jpeg()))
    assert b"\x12\x34\xff\x00\x56\xff\xd0\x78" in stored and stored.endswith(b"\xff\xd9")
    assert _orientation_of(stored) == 6


def test_a_decompression_bomb_behind_stray_bytes_is_refused(world, client):
    """The declared size was read only from a file whose structure could be followed: a few stray bytes before the
    frame header hid a 50000 x 50000 picture that the staff's browser then tried to inflate."""
    resp = client.post("/api/v1/appeals", headers=world.uh, json={
        "content": "楼下的路灯坏了一个星期了", "contact_name": "张三", "contact_phone": "13800138000",
        "images": [b64(_with_stray_bytes(jpeg(width=50000, height=50000)))]})
    assert resp.status_code == 422 and "尺寸" in resp.get_json()["message"], resp.get_json()


def test_made_up_files_are_kept_as_they_came(world, client):
    """What the other tests send as photos (a signature and zeros) is stored byte for byte, as before."""
    for image in (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"\xff\xd8\xff\xe0" + b"\x00" * 64):
        assert _stored_photo(client, world, image) == image
