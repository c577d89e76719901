"""What a photo's bytes say, read without decoding a pixel: its size in pixels, and the same photo without the
metadata that is nobody else's business.

A phone writes where the photo was taken (GPS), the phone's make and model, the owner's name and often a second
picture (a thumbnail, a depth map) into the file. An appeal's photo is seen by staff and departments; a privacy-minded
intake keeps only what shows the picture right: the pixels, the colour profile and the orientation. The work is done
on the file's structure (JPEG segments, PNG chunks, WebP chunks), so the pixels are never re-encoded. Where the
structure breaks (a file cut short, a made-up one), what came before the break is stripped as in a sound file (a
viewer reads a file from its start: the EXIF of a photo cut short is as readable as any) and the rest is kept as it
came (no viewer gets past the break either), unless the break is inside a metadata block, whose tail is dropped.
"""

from __future__ import annotations

import struct
import zlib

# A phone's 50-megapixel photo passes; a 50000 x 50000 "bomb" (a few KB that a viewer inflates to gigabytes) does not.
MAX_PIXELS = 80_000_000
MAX_SIDE = 30_000

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class Unreadable(ValueError):
    """The structure cannot be followed (a truncated or made-up file) from `at` on, where a unit of type `kind` (a
    JPEG marker, a PNG or WebP chunk type; None when not even that could be read) begins."""

    def __init__(self, why: str, at: int = 0, kind: int | bytes | None = None) -> None:
        super().__init__(why)
        self.at, self.kind = at, kind


def dimensions(data: bytes, ext: str) -> tuple[int, int] | None:
    """(width, height) as the file declares them; None when it does not say (or cannot be read)."""
    try:
        if ext == "png":
            if data[12:16] == b"IHDR":
                return struct.unpack(">II", data[16:24])
        elif ext == "jpg":
            for marker, payload, _ in _jpeg_segments(data):
                if marker in _SOF and len(payload) >= 5:
                    height, width = struct.unpack(">HH", payload[1:5])
                    return width, height
        elif ext == "webp":
            for fourcc, payload in _webp_chunks(data):
                if fourcc == b"VP8X" and len(payload) >= 10:
                    return (int.from_bytes(payload[4:7], "little") + 1, int.from_bytes(payload[7:10], "little") + 1)
                if fourcc == b"VP8 " and len(payload) >= 10:
                    w, h = struct.unpack("<HH", payload[6:10])
                    return w & 0x3FFF, h & 0x3FFF
                if fourcc == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
                    bits = int.from_bytes(payload[1:5], "little")
                    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    except (Unreadable, struct.error):
        return None
    return None


def too_large(size: tuple[int, int] | None) -> bool:
    """A declared size no viewer should be asked to inflate."""
    if size is None:
        return False
    w, h = size
    return w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS


def strip_metadata(data: bytes, ext: str) -> bytes:
    """The photo without location, device, author, comments, embedded pictures or bytes after its end; the
    orientation is kept (a minimal EXIF with that one tag) so that it still shows the right way up."""
    try:
        if ext == "jpg":
            return _strip_jpeg(data)
        if ext == "png":
            return _strip_png(data)
        if ext == "webp":
            return _strip_webp(data)
    except struct.error:
        return data
    return data


# --- EXIF orientation ---------------------------------------------------------------------------------------

def _orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 of a TIFF/EXIF block, if any and not the default 1."""
    if tiff[:2] == b"II":
        order = "<"
    elif tiff[:2] == b"MM":
        order = ">"
    else:
        return None
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:
            (value,) = struct.unpack(order + "H", entry[8:10])
            return value if 2 <= value <= 8 else None
    return None


def _orientation_tiff(value: int) -> bytes:
    """A TIFF block holding the orientation and nothing else."""
    return b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, value, 0) + b"\x00\x00\x00\x00"


def _kept_orientation(tiff: bytes) -> int | None:
    try:
        return _orientation(tiff)
    except struct.error:
        return None


# --- JPEG ---------------------------------------------------------------------------------------------------

def _jpeg_segments(data: bytes, *, whole: bool = False):
    """(marker, payload, scan) of each segment, in file order: the one walk of a JPEG's structure.

    By default only the header, up to the first scan (what `dimensions` reads). With `whole`, every marker to the
    picture's end: a standalone one (a restart, TEM) with payload None, a scan (SOS) with its entropy-coded data as
    `scan`, and the EOI last with payload None; a file cut short inside a scan ends after that scan, without EOI.
    Anything else that does not follow the structure raises Unreadable."""
    if data[:2] != b"\xff\xd8":
        raise Unreadable("no SOI")
    pos = 2
    while True:
        start = pos
        # Bytes that are not a marker where one should be are skipped to the next one, as libjpeg (every browser)
        # skips them with a warning and shows the picture: so must the reading of its size and metadata.
        while True:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise Unreadable("no marker", start)
            while pos < len(data) and data[pos] == 0xFF:
                pos += 1
            if pos >= len(data):
                raise Unreadable("truncated", start)
            if data[pos] != 0x00:  # FF 00 is a stuffed byte, not a marker
                break
        marker = data[pos]
        at = pos - 1  # where this segment's marker begins (stray bytes before it are dropped)
        pos += 1
        if marker == 0xD9 or (marker == 0xDA and not whole):
            if whole:
                yield marker, None, b""
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            if whole:
                yield marker, None, b""
            continue
        if pos + 2 > len(data):
            raise Unreadable("truncated", at, marker)
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > len(data):
            raise Unreadable("bad segment length", at, marker)
        payload = data[pos + 2:pos + length]
        pos += length
        scan = b""
        if marker == 0xDA:
            end = _scan_end(data, pos)
            scan, pos = data[pos:end], end
        yield marker, payload, scan
        if marker == 0xDA and pos >= len(data):  # cut short in the picture (an upload broken off)
            return


def _strip_jpeg(data: bytes) -> bytes:
    out = [b"\xff\xd8"]
    orientation = None
    segments = _jpeg_segments(data, whole=True)
    while True:
        try:
            marker, payload, scan = next(segments)
        except StopIteration:
            break
        except Unreadable as exc:
            if exc.at < 2:
                return data
            # Cut short or broken from here: what could be followed is stripped; the rest goes as it came, unless
            # it is the tail of a metadata block (and a file ended with no picture at all ends there).
            if exc.kind is None or not _jpeg_metadata(exc.kind, data[exc.at + 4:exc.at + 20]):
                out.append(data[exc.at:])
            return b"".join(out)
        if marker == 0xD9:
            break  # whatever follows the end (a second picture, a polyglot's other half) is dropped
        if payload is None:
            out.append(bytes((0xFF, marker)))
            continue
        if marker == 0xE1:
            if payload[:6] == b"Exif\x00\x00" and orientation is None:
                orientation = _kept_orientation(payload[6:])
                if orientation:
                    tiff = b"Exif\x00\x00" + _orientation_tiff(orientation)
                    out.append(b"\xff\xe1" + struct.pack(">H", len(tiff) + 2) + tiff)
            continue  # XMP (which can hold the location too) and any other APP1
        if _jpeg_metadata(marker, payload):
            continue
        out.append(bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload + scan)
    out.append(b"\xff\xd9")  # the EOI, or the end of a picture cut short: what there is, ended
    return b"".join(out)


def _jpeg_metadata(marker: int, payload: bytes) -> bool:
    """A segment _strip_jpeg drops (given the start of its payload)."""
    return marker == 0xE1 or marker == 0xFE or (0xE0 <= marker <= 0xEF and not _kept_app(marker, payload))


def _kept_app(marker: int, payload: bytes) -> bool:
    """JFIF (APP0), the colour profile (APP2 ICC_PROFILE, not the multi-picture index) and Adobe's colour transform
    (APP14): what draws the picture right."""
    return marker == 0xE0 or marker == 0xEE or (marker == 0xE2 and payload[:12] == b"ICC_PROFILE\x00")


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at pos ends: at the next marker that is not a restart or a stuffed 0
    (the file's end when it was cut short)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1
            continue
        return pos


# --- PNG ----------------------------------------------------------------------------------------------------

_PNG_DROPPED = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}


def _strip_png(data: bytes) -> bytes:
    out = [data[:8]]
    pos = 8
    while True:
        if pos + 8 > len(data):
            return _png_broken(out, data, pos, None)
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data) or not kind.isalpha():
            return _png_broken(out, data, pos, kind if kind.isalpha() else None)
        if kind == b"eXIf":
            orientation = _kept_orientation(data[pos + 8:pos + 8 + length])
            if orientation:
                tiff = _orientation_tiff(orientation)
                out.append(struct.pack(">I4s", len(tiff), b"eXIf") + tiff
                           + struct.pack(">I", zlib.crc32(b"eXIf" + tiff)))
        elif kind not in _PNG_DROPPED:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)


def _png_broken(out: list[bytes], data: bytes, pos: int, kind: bytes | None) -> bytes:
    """A PNG cut short or broken at `pos`: the chunks before it, stripped, then the rest as it came (a browser shows
    the top of a picture cut short) unless the break is inside a metadata chunk."""
    if pos <= 8:
        return data  # not one chunk could be read: nothing to strip
    if kind not in _PNG_DROPPED:
        out.append(data[pos:])
    return b"".join(out)


# --- WebP ---------------------------------------------------------------------------------------------------

def _webp_chunks(data: bytes):
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise Unreadable("no RIFF")
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        if pos + 8 + size > len(data):
            raise Unreadable("truncated", pos, fourcc)
        yield fourcc, data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)


def _strip_webp(data: bytes) -> bytes:
    chunks = []
    orientation = None
    rest = b""  # the file from where its structure broke, kept as it came (not a metadata chunk's tail)
    walk = _webp_chunks(data)
    while True:
        try:
            fourcc, payload = next(walk)
        except StopIteration:
            break
        except Unreadable as exc:
            if exc.at <= 12:
                return data
            rest = b"" if exc.kind in (b"EXIF", b"XMP ") else data[exc.at:]
            break
        if fourcc == b"EXIF":
            orientation = _kept_orientation(payload[6:] if payload[:6] == b"Exif\x00\x00" else payload)
            continue
        if fourcc == b"XMP ":
            continue
        chunks.append([fourcc, payload])
    for chunk in chunks:
        if chunk[0] == b"VP8X":
            flags = chunk[1][0] & ~0x0C  # neither EXIF (0x08) nor XMP (0x04) any more
            if orientation:
                flags |= 0x08
            chunk[1] = bytes((flags,)) + chunk[1][1:]
            break
    else:
        orientation = None  # a simple WebP has no place for EXIF
    if orientation:
        chunks.append([b"EXIF", _orientation_tiff(orientation)])
    body = b"".join(c[0] + struct.pack("<I", len(c[1])) + c[1] + (b"\x00" if len(c[1]) & 1 else b"")
                    for c in chunks) + rest
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
