"""Image sniffing and header reading (pure, standard library only).

Unit tests of ``sniff_image``, ``image_dimensions`` (PNG IHDR, JPEG SOF after any number of
segments, WebP VP8/VP8L/VP8X, GIF), ``png_has_alpha`` and ``image_is_complete``.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest

import generate_gateway_image as g
from tests.images import (
    gif_bytes,
    jpeg_bytes,
    png_bytes,
    svg_bytes,
    truncated_jpeg,
    truncated_png,
    webp_bytes,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(colour_type: int, *extra_chunks: bytes, width: int = 4, height: int = 3) -> bytes:
    """A structurally valid PNG of a given colour type, with extra chunks before IDAT."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    raw = b"".join(b"\x00" + b"\x00" * (width * channels) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    plte = chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff") if colour_type == 3 else b""
    return (
        PNG_SIG
        + chunk(b"IHDR", ihdr)
        + plte
        + b"".join(extra_chunks)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def dims(data: bytes, kind: str) -> tuple[int, int] | None:
    f = io.BytesIO(data)
    f.seek(len(data))  # "positioned anywhere": the reader must seek itself
    return g.image_dimensions(f, kind)


# --- sniff_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (png_bytes(8, 8), "png"),
        (png_bytes(8, 8, alpha=True), "png"),
        (jpeg_bytes(8, 8), "jpeg"),
        (webp_bytes(8, 8, kind="VP8X"), "webp"),
        (webp_bytes(8, 8, kind="VP8L"), "webp"),
        (webp_bytes(8, 8, kind="VP8"), "webp"),
        (gif_bytes(8, 8), "gif"),
        (b"GIF87a" + gif_bytes(8, 8)[6:], "gif"),
        (svg_bytes(8, 8), "svg"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "svg"),
        (b"\xef\xbb\xbf  \n<svg/>", "svg"),
        (b"<!-- drawn by hand -->\n<svg></svg>", "svg"),
        (b"<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN'>\n<svg/>", "svg"),
    ],
)
def test_sniff_image_kinds(data: bytes, kind: str) -> None:
    assert g.sniff_image(data) == kind
    assert g.sniff_image(data[:64]) == kind or kind == "svg"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"\x89PNG\r\n",  # cut signature
        b"RIFF\x10\x00\x00\x00WAVEfmt ",  # RIFF but not WebP
        b"<html><body>502 Bad Gateway</body></html>",
        b'<?xml version="1.0"?><rss></rss>',
        b'{"error": {"message": "nope"}}',
        b"\xff\xd8",  # SOI without a following marker
        b"BM\x00\x00",  # BMP is not accepted
    ],
)
def test_sniff_image_rejects_non_images(data: bytes) -> None:
    assert g.sniff_image(data) is None


# --- image_dimensions -------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h"), [(1, 1), (37, 21), (21, 37), (4000, 3)])
def test_png_dimensions(w: int, h: int) -> None:
    assert dims(png_bytes(w, h), "png") == (w, h)


@pytest.mark.parametrize(("w", "h"), [(1, 1), (37, 21), (640, 480), (65535, 2)])
def test_jpeg_dimensions(w: int, h: int) -> None:
    if w * h > 100_000:
        # the scan data of jpeg_bytes grows with the area; only the header matters here
        data = jpeg_bytes(8, 8)
        data = data.replace(struct.pack(">BHHB", 8, 8, 8, 1), struct.pack(">BHHB", 8, h, w, 1))
    else:
        data = jpeg_bytes(w, h)
    assert dims(data, "jpeg") == (w, h)


def test_jpeg_dimensions_after_a_large_app_segment() -> None:
    """An EXIF/XMP-sized APP1 segment (and an APP2, COM) before SOF: the reader must skip
    segments by their length, not look for SOF in the first bytes."""
    base = jpeg_bytes(123, 45)
    fake_sof = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03"  # "16x16" inside the EXIF data
    exif = b"Exif\x00\x00" + (bytes(range(256)) + fake_sof) * 240  # ~64 kB
    assert len(exif) + 2 <= 0xFFFF
    data = (
        base[:2]
        + jpeg_segment(0xE1, exif)
        + jpeg_segment(0xE2, b"ICC_PROFILE\x00" + b"\xff\xc0" * 1000)
        + jpeg_segment(0xFE, b"a comment")
        + base[2:]
    )
    assert data.index(b"\xff\xc0") < len(exif)  # a naive scan would find the fake SOF first
    assert dims(data, "jpeg") == (123, 45)


def test_jpeg_dimensions_skip_fill_bytes_and_dht_before_sof() -> None:
    base = jpeg_bytes(99, 77)
    sof_pos = base.index(b"\xff\xc0")
    # DHT (FFC4) and DAC-free tables before SOF, with FF fill bytes between segments
    dht = jpeg_segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")
    data = base[:sof_pos] + b"\xff\xff\xff" + dht + base[sof_pos:]
    assert dims(data, "jpeg") == (99, 77)


def test_jpeg_dimensions_progressive_sof2() -> None:
    base = jpeg_bytes(300, 200)
    data = base.replace(b"\xff\xc0", b"\xff\xc2", 1)
    assert dims(data, "jpeg") == (300, 200)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0\x00",
        b"\xff\xd8\xff\xe1\xff\xf0Exif",  # segment longer than the file
        b"\xff\xd8\xff\xda\x00\x08",  # scan before any SOF
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00",  # SOF cut in the middle
    ],
)
def test_jpeg_dimensions_truncated_is_none(data: bytes) -> None:
    assert dims(data, "jpeg") is None


@pytest.mark.parametrize("kind", ["VP8X", "VP8L", "VP8"])
@pytest.mark.parametrize(("w", "h"), [(1, 1), (37, 21), (1024, 1536), (16383, 2)])
def test_webp_dimensions(kind: str, w: int, h: int) -> None:
    assert dims(webp_bytes(w, h, kind=kind), "webp") == (w, h)


def test_webp_vp8x_large_canvas() -> None:
    assert dims(webp_bytes(16384, 16384, kind="VP8X"), "webp") == (16384, 16384)


@pytest.mark.parametrize("kind", ["VP8X", "VP8L", "VP8"])
def test_webp_dimensions_truncated_header_is_none(kind: str) -> None:
    assert dims(webp_bytes(50, 60, kind=kind)[:20], "webp") is None


@pytest.mark.parametrize(("w", "h"), [(1, 1), (37, 21), (640, 480)])
def test_gif_dimensions(w: int, h: int) -> None:
    assert dims(gif_bytes(w, h), "gif") == (w, h)


def test_dimensions_of_truncated_headers_are_none() -> None:
    assert dims(png_bytes(10, 10)[:16], "png") is None
    assert dims(b"GIF89a\x01", "gif") is None


# --- png_has_alpha ----------------------------------------------------------------------------


def test_png_rgba_has_alpha() -> None:
    assert g.png_has_alpha(io.BytesIO(png_bytes(8, 8, alpha=True))) is True


def test_png_rgb_has_no_alpha() -> None:
    assert g.png_has_alpha(io.BytesIO(png_bytes(8, 8))) is False


def test_png_grey_alpha_has_alpha() -> None:
    assert g.png_has_alpha(io.BytesIO(png_with(4))) is True


@pytest.mark.parametrize("colour_type", [0, 2, 3])
def test_png_without_alpha_types(colour_type: int) -> None:
    assert g.png_has_alpha(io.BytesIO(png_with(colour_type))) is False


@pytest.mark.parametrize(
    ("colour_type", "trns"),
    [(2, b"\x00\x00\x00\x00\x00\x00"), (3, b"\x00"), (0, b"\x00\x00")],
)
def test_png_trns_chunk_counts_as_alpha(colour_type: int, trns: bytes) -> None:
    data = png_with(colour_type, chunk(b"tEXt", b"Comment\x00hi"), chunk(b"tRNS", trns))
    assert g.png_has_alpha(io.BytesIO(data)) is True


def test_png_has_alpha_on_truncated_file_is_false() -> None:
    assert g.png_has_alpha(io.BytesIO(png_bytes(8, 8)[:20])) is False


# --- image_is_complete ------------------------------------------------------------------------


def complete(data: bytes, kind: str) -> bool:
    return g.image_is_complete(io.BytesIO(data), kind, len(data))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (png_bytes(16, 16), "png"),
        (png_bytes(300, 200, noise=True), "png"),
        (jpeg_bytes(16, 16), "jpeg"),
        (jpeg_bytes(16, 16) + b"\r\n", "jpeg"),  # trailing padding some encoders add
        (gif_bytes(16, 16), "gif"),
        (webp_bytes(16, 16, kind="VP8X"), "webp"),
        (webp_bytes(16, 16, kind="VP8L"), "webp"),
        (webp_bytes(16, 16, kind="VP8"), "webp"),
        (svg_bytes(16, 16), "svg"),
    ],
)
def test_complete_images(data: bytes, kind: str) -> None:
    assert complete(data, kind) is True


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (truncated_png(png_bytes(16, 16)), "png"),
        (png_bytes(300, 200, noise=True)[:5000], "png"),
        (png_bytes(16, 16)[:-1], "png"),
        (truncated_jpeg(jpeg_bytes(16, 16)), "jpeg"),
        (jpeg_bytes(64, 64)[:-5], "jpeg"),
        (gif_bytes(16, 16)[:-1], "gif"),
        (gif_bytes(64, 64)[:40], "gif"),
        (webp_bytes(16, 16, kind="VP8X")[:-4], "webp"),
        (webp_bytes(16, 16, kind="VP8")[:-1], "webp"),
        (svg_bytes(16, 16)[:60], "svg"),
        (b"", "png"),
        (b"", "jpeg"),
    ],
)
def test_truncated_images_are_incomplete(data: bytes, kind: str) -> None:
    assert complete(data, kind) is False
