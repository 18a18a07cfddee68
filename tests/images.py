"""Small, valid test images built with the standard library only.

Every builder returns ``bytes``. The PNG and JPEG builders produce files that real
decoders accept (the JPEG is a flat grey baseline image). The WebP builders are
structurally correct (RIFF size, chunk sizes, the dimension fields of each kind)
but carry placeholder image data. The GIF is a real, decodable GIF89a.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib

__all__ = [
    "b64",
    "gif_bytes",
    "jpeg_bytes",
    "png_bytes",
    "svg_bytes",
    "truncated_jpeg",
    "truncated_png",
    "webp_bytes",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"


def _check_size(width: int, height: int, limit: int) -> None:
    if not (1 <= width <= limit and 1 <= height <= limit):
        raise ValueError(f"size {width}x{height} out of range 1..{limit}")


# --- PNG ---------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(
    width: int, height: int, *, alpha: bool = False, noise: bool = False, seed: int = 0
) -> bytes:
    """A valid 8-bit PNG: colour type 6 (RGBA) if ``alpha`` else 2 (RGB).

    ``noise=False`` draws a smooth gradient (compresses well). ``noise=True`` fills
    the pixels with ``random.Random(seed).randbytes`` so the file is about
    ``width * height * channels`` bytes and cannot be compressed.
    """
    _check_size(width, height, 2**31 - 1)
    channels = 4 if alpha else 3
    row_len = width * channels
    rows = bytearray()
    if noise:
        rng = random.Random(seed)
        for _ in range(height):
            rows.append(0)  # filter type None
            rows += rng.randbytes(row_len)
    else:
        xs = bytes(x * 255 // max(width - 1, 1) for x in range(width))
        row = bytearray(row_len)
        row[0::channels] = xs
        row[2::channels] = b"\x80" * width
        if alpha:
            row[3::channels] = b"\xff" * width
        for y in range(height):
            row[1::channels] = bytes((y * 255 // max(height - 1, 1),)) * width
            rows.append(0)
            rows += row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + _png_chunk(b"IEND", b"")
    )


def truncated_png(data: bytes) -> bytes:
    """``data`` without its IEND chunk (as if the download stopped early)."""
    if data.endswith(_PNG_IEND):
        return data[: -len(_PNG_IEND)]
    pos = data.rfind(b"IEND")
    if pos < 4:
        raise ValueError("no IEND chunk in data")
    return data[: pos - 4]


# --- JPEG --------------------------------------------------------------------


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_bytes(width: int, height: int) -> bytes:
    """A baseline greyscale JPEG (flat mid-grey) that real decoders accept.

    Layout: SOI, APP0 JFIF, DQT, SOF0 (carries height then width), DHT, SOS,
    entropy-coded data, EOI (FFD9 is always the last two bytes).
    """
    _check_size(width, height, 0xFFFF)
    app0 = b"JFIF\x00" + struct.pack(">BBBHHBB", 1, 1, 0, 1, 1, 0, 0)
    dqt = b"\x00" + b"\x01" * 64
    sof0 = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    # One 1-bit code "0" in each table: DC category 0 and AC symbol 0x00 (EOB).
    one_code = b"\x01" + b"\x00" * 15 + b"\x00"
    dht = b"\x00" + one_code + b"\x10" + one_code
    sos = b"\x01\x01\x00\x00\x3f\x00"
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    nbits = 2 * blocks  # per 8x8 block: DC diff 0, then EOB
    scan = bytearray(nbits // 8)
    rem = nbits % 8
    if rem:
        scan.append(0xFF >> rem)  # pad the final byte with 1-bits (never 0xFF here)
    return (
        b"\xff\xd8"
        + _jpeg_segment(0xE0, app0)
        + _jpeg_segment(0xDB, dqt)
        + _jpeg_segment(0xC0, sof0)
        + _jpeg_segment(0xC4, dht)
        + _jpeg_segment(0xDA, sos)
        + bytes(scan)
        + b"\xff\xd9"
    )


def truncated_jpeg(data: bytes) -> bytes:
    """``data`` without the final EOI marker FFD9."""
    if not data.endswith(b"\xff\xd9"):
        raise ValueError("data does not end in FFD9")
    return data[:-2]


# --- WebP --------------------------------------------------------------------


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + pad


def _vp8l_payload(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)  # alpha_is_used = 0, version = 0
    return b"\x2f" + struct.pack("<I", bits) + b"\x00\x00\x00\x00"


def webp_bytes(width: int, height: int, *, kind: str = "VP8X") -> bytes:
    """A WebP container of ``kind`` VP8X, VP8L or VP8 with the right header fields.

    * VP8X: canvas width-1 / height-1 as 24-bit little-endian at file offsets 24 and
      27, followed by a VP8L image chunk of the same size.
    * VP8L: signature 0x2F, then 14-bit width-1 and 14-bit height-1 (little-endian).
    * VP8: key-frame tag, start code 9D 01 2A, 16-bit width and height.

    The RIFF size field is ``len(data) - 8``. Image payloads are placeholders.
    """
    if kind == "VP8X":
        _check_size(width, height, 1 << 14)  # the embedded VP8L chunk limits it
        vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
        vp8x += (height - 1).to_bytes(3, "little")
        chunks = _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"VP8L", _vp8l_payload(width, height))
    elif kind == "VP8L":
        _check_size(width, height, 1 << 14)
        chunks = _riff_chunk(b"VP8L", _vp8l_payload(width, height))
    elif kind == "VP8":
        _check_size(width, height, 0x3FFF)
        first_part = b"\x00" * 10
        body = b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + first_part
        first_part_size = len(first_part)
        tag = (0 << 0) | (0 << 1) | (1 << 4) | (first_part_size << 5)  # key frame, shown
        chunks = _riff_chunk(b"VP8 ", tag.to_bytes(3, "little") + body)
    else:
        raise ValueError(f"unknown WebP kind {kind!r} (VP8X, VP8L or VP8)")
    payload = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


# --- GIF ---------------------------------------------------------------------


def gif_bytes(width: int, height: int) -> bytes:
    """A decodable GIF89a of one colour, ``width`` x ``height``, ending in 0x3B."""
    _check_size(width, height, 0xFFFF)
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x20\x60\xa0" + b"\xff\xff\xff"  # 2-entry global colour table
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    # LZW with minimum code size 2: clear=4, end=5, codes stay 3 bits wide because a
    # clear code is sent before every pair of literal pixels.
    acc = 0
    nacc = 0
    out = bytearray()

    def emit(code: int) -> None:
        nonlocal acc, nacc
        acc |= code << nacc
        nacc += 3
        while nacc >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nacc -= 8

    pixels = width * height
    for i in range(pixels):
        if i % 2 == 0:
            emit(4)
        emit(0)
    emit(5)
    if nacc:
        out.append(acc & 0xFF)
    blocks = bytearray()
    for pos in range(0, len(out), 255):
        part = out[pos : pos + 255]
        blocks.append(len(part))
        blocks += part
    blocks.append(0)
    return header + palette + descriptor + b"\x02" + bytes(blocks) + b"\x3b"


# --- SVG / base64 ------------------------------------------------------------


def svg_bytes(width: int, height: int) -> bytes:
    """A small SVG document with explicit width, height and viewBox."""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        f'<rect width="{width}" height="{height}" fill="#2060a0"/></svg>\n'
    )
    return text.encode("utf-8")


def b64(data: bytes) -> str:
    """Standard base64 (with padding, no ``data:`` prefix), as the API sends it."""
    return base64.b64encode(data).decode("ascii")
