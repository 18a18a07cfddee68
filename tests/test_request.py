"""The request: option validation (``build_job``), the JSON body (``build_payload``,
``encode_body``, ``display_payload``) and the size rules (``size_problems``,
``nearest_legal_size``, ``larger_known_size``), with hypothesis properties for the sizes.

Nearly everything here is pure: no gateway, no network. Options come from the real argument
parser (``build_parser`` + ``job_options``) so the tests see what the CLI would pass to
``build_job``. A few end-to-end runs check input the parser cannot see: prompts that are not
UTF-8 and timeouts that are not finite.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import generate_gateway_image as g
from tests.conftest import decode_data_url, report, run_cli
from tests.gateway import Gateway
from tests.images import gif_bytes, jpeg_bytes, png_bytes, svg_bytes, webp_bytes

PROMPT = "a red fox in fresh snow, watercolour"


# --- helpers ------------------------------------------------------------------------------------


def cli_opts(*argv: str) -> dict[str, Any]:
    """The options dict the CLI builds for ``build_job`` from these arguments."""
    args = g.build_parser().parse_args(list(argv))
    return g.job_options(args, args.prompt, {})


def job_from(*argv: str) -> g.Job:
    if "--prompt" not in argv:
        argv = ("--prompt", PROMPT, *argv)
    return g.build_job(cli_opts(*argv))


def wire(job: g.Job, *, stream: bool | None = None, force_tool: bool = True) -> dict[str, Any]:
    """The body exactly as it goes on the wire, parsed back; checks ``Body.length`` too."""
    payload = g.build_payload(
        job, stream=job.stream if stream is None else stream, size=job.size, force_tool=force_tool
    )
    body = g.encode_body(payload)
    raw = b"".join(body.chunks())
    assert body.length == len(raw)
    parsed: dict[str, Any] = json.loads(raw.decode("utf-8"))
    return parsed


def image_file(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def usage_error(*argv: str) -> g.UsageError:
    with pytest.raises(g.UsageError) as err:
        job_from(*argv)
    assert err.value.exit_code == g.EXIT_USAGE == 2
    return err.value


def walk(obj: Any) -> list[Any]:
    """Every value in a JSON document (dict values, list items), recursively."""
    found = [obj]
    if isinstance(obj, dict):
        for value in obj.values():
            found += walk(value)
    elif isinstance(obj, list):
        for value in obj:
            found += walk(value)
    return found


def legal(w: int, h: int) -> bool:
    """The gpt-image-2 rules, written independently of the script."""
    return (
        w % 16 == 0
        and h % 16 == 0
        and max(w, h) <= 3840
        and max(w, h) <= 3 * min(w, h)
        and 655_360 <= w * h <= 8_294_400
    )


# --- the body -----------------------------------------------------------------------------------


def test_minimal_body_is_exact(tmp_path: Path) -> None:
    job = job_from("--out", str(tmp_path / "fox.png"))
    assert wire(job) == {
        "model": "gpt-5.5",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}
        ],
        "tools": [
            {
                "type": "image_generation",
                "action": "auto",
                "size": "1024x1024",
                "output_format": "png",
            }
        ],
        "tool_choice": {"type": "image_generation"},
        "store": False,
        "stream": True,
    }


def test_minimal_body_from_a_plain_dict() -> None:
    job = g.build_job({"prompt": "  a cat  ", "out": "cat.png"})
    body = wire(job)
    assert body["input"][0]["content"] == [{"type": "input_text", "text": "a cat"}]
    assert body["tools"] == [
        {"type": "image_generation", "action": "auto", "size": "1024x1024", "output_format": "png"}
    ]
    assert body["model"] == "gpt-5.5" and body["stream"] is True and body["store"] is False


def test_every_option_is_sent_exactly(tmp_path: Path) -> None:
    job = job_from(
        "--out",
        str(tmp_path / "x.png"),
        "--model",
        "my-responses-model",
        "--image-model",
        "gpt-image-2",
        "--size",
        "1536x1024",
        "--action",
        "generate",
        "--quality",
        "high",
        "--background",
        "transparent",
        "--format",
        "webp",
        "--compression",
        "85",
        "--moderation",
        "low",
        "--input-fidelity",
        "high",
        "--no-stream",
    )
    body = wire(job)
    assert body["model"] == "my-responses-model"
    assert body["stream"] is False
    assert body["tools"] == [
        {
            "type": "image_generation",
            "action": "generate",
            "size": "1536x1024",
            "model": "gpt-image-2",
            "quality": "high",
            "background": "transparent",
            "output_format": "webp",
            "output_compression": 85,
            "moderation": "low",
            "input_fidelity": "high",
        }
    ]
    assert body["tool_choice"] == {"type": "image_generation"}
    assert body["store"] is False


def test_no_unrequested_keys_and_no_nulls(tmp_path: Path) -> None:
    image = image_file(tmp_path / "ref.png", png_bytes(32, 32))
    body = wire(job_from("--out", str(tmp_path / "o.png"), "--image", image))
    assert None not in walk(body)
    assert set(body) == {"model", "input", "tools", "tool_choice", "store", "stream"}
    assert "n" not in body["tools"][0]
    assert set(body["tools"][0]) == {"type", "action", "size", "output_format"}


def test_compression_zero_is_sent(tmp_path: Path) -> None:
    job = job_from("--out", str(tmp_path / "o.jpg"), "--compression", "0")
    tool = wire(job)["tools"][0]
    assert tool["output_compression"] == 0
    assert tool["output_format"] == "jpeg"


@pytest.mark.parametrize("value", ["0", "100", "50"])
def test_compression_bounds_accepted(tmp_path: Path, value: str) -> None:
    job = job_from("--out", str(tmp_path / "o.webp"), "--compression", value)
    assert wire(job)["tools"][0]["output_compression"] == int(value)


@pytest.mark.parametrize(
    ("out", "fmt", "expected"),
    [
        ("o.png", None, "png"),
        ("o.jpg", None, "jpeg"),
        ("o.JPG", None, "jpeg"),
        ("o.jpeg", None, "jpeg"),
        ("o.webp", None, "webp"),
        ("o.gif", None, "gif"),
        ("o.svg", None, "svg"),
        ("o.bin", None, "png"),
        ("noext", None, "png"),
        ("o.png", "jpeg", "jpeg"),
        ("o.png", "jpg", "jpeg"),
        ("o.jpg", "webp", "webp"),
        ("o.jpg", "png", "png"),
    ],
)
def test_output_format(tmp_path: Path, out: str, fmt: str | None, expected: str) -> None:
    argv = ["--out", str(tmp_path / out)] + (["--format", fmt] if fmt else [])
    job = job_from(*argv)
    assert job.output_format == expected
    assert wire(job)["tools"][0]["output_format"] == expected


def test_output_format_without_out() -> None:
    job = g.build_job({"prompt": "p", "out": None})
    assert wire(job)["tools"][0]["output_format"] == "png"


@pytest.mark.parametrize("stream", [True, False])
def test_stream_flag(tmp_path: Path, stream: bool) -> None:
    job = job_from("--out", str(tmp_path / "o.png"), *([] if stream else ["--no-stream"]))
    assert job.stream is stream
    assert wire(job)["stream"] is stream
    assert wire(job, stream=not stream)["stream"] is (not stream)


def test_tool_choice_forced_or_auto(tmp_path: Path) -> None:
    job = job_from("--out", str(tmp_path / "o.png"))
    assert wire(job)["tool_choice"] == {"type": "image_generation"}
    relaxed = wire(job, force_tool=False)
    assert relaxed["tool_choice"] == "auto"
    assert "image_generation" in relaxed["instructions"]


@pytest.mark.parametrize(("size", "sent"), [("auto", "auto"), (" 1024X1536 ", "1024x1536")])
def test_size_is_normalised(tmp_path: Path, size: str, sent: str) -> None:
    job = job_from("--out", str(tmp_path / "o.png"), "--size", size)
    assert wire(job)["tools"][0]["size"] == sent


def test_input_images_are_data_urls_with_sniffed_mime(tmp_path: Path) -> None:
    files = {
        # deliberately misleading extensions: the MIME type comes from the bytes
        "image/png": (tmp_path / "a.jpg", png_bytes(40, 30, noise=True)),
        "image/jpeg": (tmp_path / "b.png", jpeg_bytes(33, 17)),
        "image/webp": (tmp_path / "c.webp", webp_bytes(20, 10, kind="VP8L")),
        "image/gif": (tmp_path / "d.bin", gif_bytes(9, 7)),
    }
    argv = ["--out", str(tmp_path / "o.png"), "--detail", "high"]
    for path, data in files.values():
        argv += ["--image", image_file(path, data)]
    remote = "https://cdn.example.test/ref.png?sig=a&b=c"
    inline = "data:image/png;base64,iVBORw0KGgo="
    argv += ["--image-url", remote, "--image-url", inline]
    content = wire(job_from(*argv))["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": PROMPT}
    assert len(content) == 1 + len(files) + 2
    for part, (mime, (_, data)) in zip(content[1:], files.items()):
        assert set(part) == {"type", "image_url", "detail"}
        assert part["type"] == "input_image"
        assert part["detail"] == "high"
        assert decode_data_url(part["image_url"], mime) == data
    assert content[-2:] == [
        {"type": "input_image", "image_url": remote, "detail": "high"},
        {"type": "input_image", "image_url": inline, "detail": "high"},
    ]


def test_detail_defaults_to_auto(tmp_path: Path) -> None:
    image = image_file(tmp_path / "r.png", png_bytes(8, 8))
    job = job_from("--out", str(tmp_path / "o.png"), "--image", image, "--image-url", "http://x/y")
    content = wire(job)["input"][0]["content"]
    assert [part.get("detail") for part in content[1:]] == ["auto", "auto"]


def test_mask_is_a_png_data_url_in_the_tool(tmp_path: Path) -> None:
    image_data = jpeg_bytes(64, 48)
    mask_data = png_bytes(64, 48, alpha=True)
    image = image_file(tmp_path / "photo.jpg", image_data)
    mask = image_file(tmp_path / "mask.png", mask_data)
    job = job_from("--out", str(tmp_path / "o.png"), "--image", image, "--mask", mask)
    body = wire(job)
    tool = body["tools"][0]
    assert set(tool["input_image_mask"]) == {"image_url"}
    assert decode_data_url(tool["input_image_mask"]["image_url"], "image/png") == mask_data
    content = body["input"][0]["content"]
    assert len(content) == 2  # the mask is not a reference image
    assert decode_data_url(content[1]["image_url"], "image/jpeg") == image_data


def test_mask_with_only_an_image_url(tmp_path: Path) -> None:
    mask_data = png_bytes(16, 16, alpha=True)
    mask = image_file(tmp_path / "mask.png", mask_data)
    job = job_from(
        "--out", str(tmp_path / "o.png"), "--image-url", "https://x.test/a.png", "--mask", mask
    )
    url = wire(job)["tools"][0]["input_image_mask"]["image_url"]
    assert decode_data_url(url, "image/png") == mask_data


# --- encode_body --------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 1, 2])  # file sizes of every residue mod 3
def test_encode_body_length_and_bytes(tmp_path: Path, extra: int) -> None:
    big = png_bytes(700, 400, noise=True)  # ~840 kB: several read blocks
    big += b"\x00" * ((3 - len(big) % 3 + extra) % 3)  # trailing bytes after IEND are harmless
    assert len(big) % 3 == extra
    small = jpeg_bytes(10, 10)
    prompt = 'café 🦊 "quoted" \\ back\nslash / tab\t \u2028 <script>'
    job = g.build_job(
        {
            "prompt": prompt,
            "out": str(tmp_path / "o.png"),
            "images": [
                image_file(tmp_path / "big.png", big),
                image_file(tmp_path / "s.jpg", small),
            ],
            "mask": image_file(tmp_path / "m.png", png_bytes(700, 400, alpha=True)),
        }
    )
    payload = g.build_payload(job, stream=True, size=job.size)
    body = g.encode_body(payload)
    raw = b"".join(body.chunks())
    assert body.length == len(raw)
    parsed = json.loads(raw.decode("utf-8"))
    assert parsed["input"][0]["content"][0]["text"] == prompt
    assert decode_data_url(parsed["input"][0]["content"][1]["image_url"], "image/png") == big
    assert decode_data_url(parsed["input"][0]["content"][2]["image_url"], "image/jpeg") == small
    mask_url = parsed["tools"][0]["input_image_mask"]["image_url"]
    assert decode_data_url(mask_url, "image/png") == (tmp_path / "m.png").read_bytes()
    # the body can be produced again (a retry re-sends it from disk)
    assert b"".join(body.chunks()) == raw


def test_encode_body_same_file_twice(tmp_path: Path) -> None:
    data = png_bytes(20, 20)
    path = image_file(tmp_path / "r.png", data)
    job = job_from("--out", str(tmp_path / "o.png"), "--image", path, "--image", path)
    content = wire(job)["input"][0]["content"]
    assert [decode_data_url(p["image_url"], "image/png") for p in content[1:]] == [data, data]


def test_encode_body_prompt_that_looks_like_the_internal_marker(tmp_path: Path) -> None:
    """The prompt is user text: whatever it contains, it must come back unchanged and the
    image must stay in the image slot."""
    data = png_bytes(12, 12)
    prompt = "before \x1eIMG0\x1e after \\u001eIMG0\\u001e"
    job = g.build_job(
        {
            "prompt": prompt,
            "out": str(tmp_path / "o.png"),
            "images": [image_file(tmp_path / "r.png", data)],
        }
    )
    body = wire(job)
    assert body["input"][0]["content"][0]["text"] == prompt
    assert decode_data_url(body["input"][0]["content"][1]["image_url"], "image/png") == data


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(min_size=1, max_size=200).filter(lambda s: s.strip()))
def test_encode_body_any_prompt_round_trips(prompt: str) -> None:
    job = g.build_job(
        {"prompt": prompt, "out": "o.png", "image_urls": ["data:image/png;base64,AA"]}
    )
    payload = g.build_payload(job, stream=True, size=job.size)
    body = g.encode_body(payload)
    raw = b"".join(body.chunks())
    assert body.length == len(raw)
    parsed = json.loads(raw.decode("utf-8"))
    assert parsed["input"][0]["content"][0]["text"] == prompt.strip()


# --- display_payload ----------------------------------------------------------------------------


def test_display_payload_shortens_base64(tmp_path: Path) -> None:
    data = png_bytes(200, 100, noise=True)
    image = image_file(tmp_path / "ref.png", data)
    mask = image_file(tmp_path / "mask.png", png_bytes(200, 100, alpha=True))
    long_data_url = (
        "data:image/png;base64," + base64.b64encode(png_bytes(80, 80, noise=True)).decode()
    )
    short_data_url = "data:image/png;base64,iVBORw0KGgo="
    job = job_from(
        "--out",
        str(tmp_path / "o.png"),
        "--image",
        image,
        "--mask",
        mask,
        "--image-url",
        long_data_url,
        "--image-url",
        short_data_url,
    )
    text = g.display_payload(g.build_payload(job, stream=True, size=job.size))
    shown = json.loads(text)  # still JSON
    assert len(text) < 3000
    assert re.search(r"[A-Za-z0-9+/]{200,}", text) is None
    assert base64.b64encode(data)[:100].decode() not in text
    content = shown["input"][0]["content"]
    assert content[0]["text"] == PROMPT
    assert content[1]["image_url"].startswith("data:image/png;base64,")
    assert str(len(data)) in content[1]["image_url"] and "ref.png" in content[1]["image_url"]
    assert content[2]["image_url"].startswith("data:image/png;base64,")
    assert str(len(long_data_url)) in content[2]["image_url"]
    assert content[3]["image_url"] == short_data_url  # short ones are shown whole
    assert "mask.png" in shown["tools"][0]["input_image_mask"]["image_url"]
    assert shown["tools"][0]["size"] == "1536x1024"  # the 200x100 reference's shape


# --- validation: each a UsageError (exit 2) before anything is sent ----------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t\n"])
def test_empty_prompt(prompt: str) -> None:
    err = usage_error("--prompt", prompt, "--out", "o.png")
    assert "prompt" in err.message


def test_missing_image(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.png")
    err = usage_error("--out", "o.png", "--image", missing)
    assert missing in err.message and "--image" in err.message


def test_image_is_a_directory(tmp_path: Path) -> None:
    err = usage_error("--out", "o.png", "--image", str(tmp_path))
    assert str(tmp_path) in err.message


def test_unreadable_image(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import SCRIPT, clean_env, permissions_bind

    prefix = permissions_bind()
    path = tmp_path / "locked.png"
    path.write_bytes(png_bytes(8, 8))
    path.chmod(0)
    args = ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--image", str(path)]
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, str(SCRIPT), *args, "--base-url", "http://127.0.0.1:9/v1"],
            env=clean_env(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
    finally:
        path.chmod(0o600)
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr


@pytest.mark.parametrize(
    "data",
    [b"", b"just some text\n", b"%PDF-1.7\n", b"BM" + b"\x00" * 60, b"\x89PNG\r\n"],
    ids=["empty", "text", "pdf", "bmp", "cut-signature"],
)
def test_non_image(tmp_path: Path, data: bytes) -> None:
    path = image_file(tmp_path / "thing.png", data)
    err = usage_error("--out", "o.png", "--image", path)
    assert path in err.message and "not an image" in err.message


def test_svg_input_is_refused(tmp_path: Path) -> None:
    path = image_file(tmp_path / "logo.svg", svg_bytes(64, 64))
    err = usage_error("--out", "o.png", "--image", path)
    assert "SVG" in err.message


def sparse_png(path: Path, size: int) -> str:
    """A file of ``size`` bytes that starts like a real PNG (sparse: cheap to create)."""
    with open(path, "wb") as f:
        f.write(png_bytes(64, 64)[:64])
        f.truncate(size)
    return str(path)


def test_image_over_50_mb(tmp_path: Path) -> None:
    path = sparse_png(tmp_path / "huge.png", 50 * 1024 * 1024 + 1)
    err = usage_error("--out", "o.png", "--image", path)
    assert "50 MB" in err.message and path in err.message


def test_image_of_exactly_50_mib_is_accepted(tmp_path: Path) -> None:
    path = sparse_png(tmp_path / "big.png", 50 * 1024 * 1024)
    job = job_from("--out", "o.png", "--image", path)
    assert job.images[0].size == 50 * 1024 * 1024
    assert job.images[0].dims == (64, 64)


def test_more_than_16_images(tmp_path: Path) -> None:
    path = image_file(tmp_path / "r.png", png_bytes(8, 8))
    err = usage_error("--out", "o.png", *["--image", path] * 17)
    assert "17" in err.message and "16" in err.message


def test_16_images_are_accepted(tmp_path: Path) -> None:
    path = image_file(tmp_path / "r.png", png_bytes(8, 8))
    job = job_from("--out", "o.png", *["--image", path] * 10, *["--image-url", "https://x/y"] * 6)
    assert len(wire(job)["input"][0]["content"]) == 17


def test_images_and_urls_count_together(tmp_path: Path) -> None:
    path = image_file(tmp_path / "r.png", png_bytes(8, 8))
    err = usage_error("--out", "o.png", *["--image", path] * 10, *["--image-url", "https://x"] * 7)
    assert "16" in err.message


@pytest.mark.parametrize(
    ("data", "kind"),
    [(jpeg_bytes(16, 16), "JPEG"), (gif_bytes(16, 16), "GIF"), (webp_bytes(16, 16), "WEBP")],
)
def test_mask_must_be_png(tmp_path: Path, data: bytes, kind: str) -> None:
    image = image_file(tmp_path / "i.png", png_bytes(16, 16))
    mask = image_file(tmp_path / "mask.png", data)
    err = usage_error("--out", "o.png", "--image", image, "--mask", mask)
    assert "PNG" in err.message and mask in err.message


def test_mask_without_alpha(tmp_path: Path) -> None:
    image = image_file(tmp_path / "i.png", png_bytes(16, 16))
    mask = image_file(tmp_path / "mask.png", png_bytes(16, 16, alpha=False))
    err = usage_error("--out", "o.png", "--image", image, "--mask", mask)
    assert "alpha" in err.message


def test_mask_size_differs_from_first_image(tmp_path: Path) -> None:
    first = image_file(tmp_path / "first.jpg", jpeg_bytes(64, 48))
    second = image_file(tmp_path / "second.png", png_bytes(32, 32))
    mask = image_file(tmp_path / "mask.png", png_bytes(32, 32, alpha=True))
    err = usage_error("--out", "o.png", "--image", first, "--image", second, "--mask", mask)
    assert "32x32" in err.message and "64x48" in err.message


@pytest.mark.parametrize("kind", ["VP8X", "VP8L", "VP8"])
def test_mask_size_checked_against_webp(tmp_path: Path, kind: str) -> None:
    first = image_file(tmp_path / "first.webp", webp_bytes(100, 50, kind=kind))
    mask = image_file(tmp_path / "mask.png", png_bytes(50, 100, alpha=True))
    err = usage_error("--out", "o.png", "--image", first, "--mask", mask)
    assert "100x50" in err.message
    ok = image_file(tmp_path / "ok.png", png_bytes(100, 50, alpha=True))
    assert job_from("--out", "o.png", "--image", first, "--mask", ok).mask is not None


def test_mask_without_an_image(tmp_path: Path) -> None:
    mask = image_file(tmp_path / "mask.png", png_bytes(16, 16, alpha=True))
    err = usage_error("--out", "o.png", "--mask", mask)
    assert "--mask" in err.message


def test_missing_mask(tmp_path: Path) -> None:
    image = image_file(tmp_path / "i.png", png_bytes(16, 16))
    err = usage_error("--out", "o.png", "--image", image, "--mask", str(tmp_path / "no.png"))
    assert "--mask" in err.message


def test_edit_needs_an_image() -> None:
    err = usage_error("--out", "o.png", "--action", "edit")
    assert "edit" in err.message


def test_edit_with_an_image_url_is_fine() -> None:
    job = job_from("--out", "o.png", "--action", "edit", "--image-url", "https://x.test/a.png")
    assert wire(job)["tools"][0]["action"] == "edit"


@pytest.mark.parametrize(
    "size", ["abc", "10x", "x10", "0x5", "5x0", "-5x5", "10x10x10", "1024*1024", "1e3x1e3", "²x2"]
)
def test_malformed_size(size: str) -> None:
    err = usage_error("--out", "o.png", "--size", size)
    assert "--size" in err.message


def test_any_well_formed_size_passes_without_an_image_model() -> None:
    assert wire(job_from("--out", "o.png", "--size", "100x37"))["tools"][0]["size"] == "100x37"


@pytest.mark.parametrize(
    ("size", "words"),
    [
        ("1000x1000", ["16"]),
        ("4096x2304", ["3840"]),
        ("3840x1024", ["3:1"]),
        ("512x512", ["655,360"]),
        ("3840x2400", ["8,294,400"]),
        ("2048x256", ["3:1", "655,360"]),
        ("100x37", ["16", "655,360"]),
    ],
)
@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-2026-01-01"])
def test_gpt_image_2_size_rules(size: str, words: list[str], model: str) -> None:
    err = usage_error("--out", "o.png", "--image-model", model, "--size", size)
    for word in words:
        assert word in err.message
    found = re.search(r"nearest legal size: (\d+)x(\d+)", err.message)
    assert found, err.message
    w, h = int(found.group(1)), int(found.group(2))
    assert g.size_problems(w, h) == []
    assert legal(w, h)


@pytest.mark.parametrize(
    "size", ["1024x1024", "1536x1024", "1024x1536", "3840x2160", "1024x640", "3072x1024", "auto"]
)
def test_gpt_image_2_legal_sizes(size: str) -> None:
    job = job_from("--out", "o.png", "--image-model", "gpt-image-2", "--size", size)
    assert wire(job)["tools"][0]["size"] == size


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini"])
@pytest.mark.parametrize("size", ["512x512", "1792x1024", "2048x2048", "1024x1040"])
def test_gpt_image_1_only_standard_sizes(model: str, size: str) -> None:
    err = usage_error("--out", "o.png", "--image-model", model, "--size", size)
    assert "1024x1024" in err.message and "1536x1024" in err.message


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536", "auto"])
def test_gpt_image_1_standard_sizes_pass(size: str) -> None:
    job = job_from("--out", "o.png", "--image-model", "gpt-image-1", "--size", size)
    assert job.size == size


@pytest.mark.parametrize("value", ["-1", "101", "1000"])
def test_compression_out_of_range(value: str) -> None:
    err = usage_error("--out", "o.jpg", "--compression", value)
    assert "compression" in err.message


@pytest.mark.parametrize(
    "url",
    ["ftp://x.test/a.png", "file:///etc/passwd", "/tmp/a.png", "a.png", "javascript:alert(1)", ""],
)
def test_image_url_scheme(url: str) -> None:
    err = usage_error("--out", "o.png", "--image-url", url)
    assert "--image-url" in err.message


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "o.jpg"],
        ["--out", "o.jpeg"],
        ["--out", "o.png", "--format", "jpeg"],
        ["--out", "o.png", "--format", "jpg"],
    ],
)
def test_transparent_background_with_jpeg(argv: list[str]) -> None:
    err = usage_error(*argv, "--background", "transparent")
    assert "transparent" in err.message and "jpeg" in err.message


@pytest.mark.parametrize("out", ["o.png", "o.webp"])
def test_transparent_background_with_png_or_webp(out: str) -> None:
    tool = wire(job_from("--out", out, "--background", "transparent"))["tools"][0]
    assert tool["background"] == "transparent"


# --- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "larger"),
    [
        ("512x512", "1024x1024"),
        ("256x256", "1024x1024"),
        ("512x768", "1024x1536"),
        ("800x400", "1536x1024"),
        ("1024x1024", None),
        ("1024x1536", None),
        ("1536x1024", None),
        ("2048x2048", None),
        ("auto", None),
    ],
)
def test_larger_known_size(size: str, larger: str | None) -> None:
    assert g.larger_known_size(size) == larger


@settings(max_examples=400, deadline=None)
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
@example(w=1024, h=640)  # exactly the minimum pixel count
@example(w=1008, h=640)  # just below it
@example(w=3840, h=2160)  # exactly the maximum pixel count
@example(w=3840, h=2176)  # just above it
@example(w=3840, h=1280)  # exactly 3:1
@example(w=3840, h=1264)  # just over 3:1
@example(w=3856, h=1296)  # edge just over 3840
@example(w=1296, h=3856)
@example(w=5000, h=1)
@example(w=1, h=1)
def test_size_rules_property(w: int, h: int) -> None:
    problems = g.size_problems(w, h)
    assert (problems == []) == legal(w, h)
    nw, nh = g.nearest_legal_size(w, h)
    assert legal(nw, nh), (w, h, nw, nh)
    if problems:
        with pytest.raises(g.UsageError) as err:
            g.validate_size(f"{w}x{h}", "gpt-image-2")
        assert f"nearest legal size: {nw}x{nh}" in err.value.message
    else:
        g.validate_size(f"{w}x{h}", "gpt-image-2")


@pytest.mark.parametrize(("w", "h"), [(512, 512), (1000, 1000), (100, 100), (5000, 5000)])
def test_nearest_legal_size_keeps_a_square_square(w: int, h: int) -> None:
    nw, nh = g.nearest_legal_size(w, h)
    assert nw == nh and legal(nw, nh)


@pytest.mark.parametrize(("w", "h"), [(4000, 1000), (1000, 4000), (5000, 100)])
def test_nearest_legal_size_keeps_orientation(w: int, h: int) -> None:
    nw, nh = g.nearest_legal_size(w, h)
    assert legal(nw, nh)
    assert (nw > nh) == (w > h)


# --- text that is not UTF-8, and timeouts ---------------------------------------------------------


POSIX = os.name == "posix"


@pytest.mark.skipif(not POSIX, reason="arguments are bytes only on POSIX")
def test_prompt_that_is_not_utf8_is_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    proc = run_cli(["--prompt", "caf\udce9", "--out", str(tmp_path / "c.png")], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert "not valid UTF-8" in proc.stderr
    assert gateway.requests == []


def test_prompt_on_stdin_that_is_not_utf8_is_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(g.__file__), "--prompt", "-", "--out", str(tmp_path / "q.png")],
        input=b"\xff\xfe",
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--timeout", "--idle-timeout", "--connect-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_timeouts_must_be_finite(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], flag: str, value: str
) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), flag, value], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert gateway.requests == []


# --- reference images that change while they are sent; what the body cannot hold -----------------


@pytest.mark.parametrize("change", ["grown", "shrunk"])
def test_a_reference_image_that_changes_while_it_is_sent_is_refused(
    tmp_path: Path, change: str
) -> None:
    path = tmp_path / "ref.png"
    path.write_bytes(png_bytes(64, 64, noise=True))
    image = g.load_input_image(str(path))
    raw = g.RawFile(str(path), image.size)  # the multipart upload sends the file as it is
    data = path.read_bytes()
    path.write_bytes(data + b"\0" * 10 if change == "grown" else data[:-10])
    for part in (image, raw):
        with pytest.raises(g.UsageError, match="the file changed while it was being sent"):
            for _ in part.chunks():
                pass


def test_a_body_with_a_value_json_cannot_write_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="^object$"):
        g.encode_body({"model": "m", "input": object()})


def test_a_pause_without_progress_is_a_plain_sleep() -> None:
    import time

    started = time.monotonic()
    g.QUIET.pause(0.05)
    assert time.monotonic() - started >= 0.05
