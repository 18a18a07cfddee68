"""The Images API fallback (--api images, --api auto): /images/generations and the multipart
/images/edits request, their errors, and when auto falls back from /responses (and when not)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    assert_no_secret,
    assert_ok,
    image_reply,
    leftovers,
    run_cli,
    run_patched,
)
from tests.gateway import Gateway, Reply, close_reply, error_reply, json_reply, raw_reply


def images_api_reply(data: bytes = PNG) -> Reply:
    return json_reply({"created": 1759354093, "data": [{"b64_json": images.b64(data)}]})


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/form-data body (stdlib only): [(lower-cased headers, payload)]."""
    assert content_type.startswith("multipart/form-data"), content_type
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode("ascii")
    delim = b"--" + boundary
    assert body.startswith(delim + b"\r\n"), body[:80]
    assert body.endswith(delim + b"--\r\n"), body[-80:]
    chunks = body[: -len(delim + b"--\r\n")].split(delim)
    assert chunks[0] == b""
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in chunks[1:]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n"), chunk[:60]
        head, sep, payload = chunk[2:-2].partition(b"\r\n\r\n")
        assert sep, chunk[:120]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def disposition(headers: dict[str, str]) -> dict[str, str]:
    """name/filename parameters of a Content-Disposition header."""
    value = headers["content-disposition"]
    kind, *params = [p.strip() for p in value.split(";")]
    assert kind == "form-data", value
    out: dict[str, str] = {}
    for param in params:
        key, _, val = param.partition("=")
        out[key.strip()] = val.strip().strip('"')
    return out


FINAL = images.png_bytes(40, 24, noise=True, seed=3)
GENERATIONS = "/v1/images/generations"


EDITS = "/v1/images/edits"


def test_images_api_generation(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(images_api_reply(FINAL), path=GENERATIONS)
    out = tmp_path / "g.png"
    proc = run_cli(
        ["--api", "images", "--prompt", "a boat", "--out", str(out), "--quality", "low"], env
    )
    assert_ok(proc)
    assert len(gateway.requests) == 1, gateway.dump()
    rec = gateway.requests[0]
    assert (rec.method, rec.path) == ("POST", GENERATIONS)
    assert (rec.header("content-type") or "").startswith("application/json")
    assert rec.header("authorization") == "Bearer " + TEST_KEY
    body = rec.json
    assert body is not None
    assert body["prompt"] == "a boat"
    assert body["size"] == "1024x1024"
    assert body["quality"] == "low"
    assert isinstance(body["model"], str) and body["model"]
    # only the options that were set (output_format follows --out's extension)
    assert set(body) - {"output_format"} == {"model", "prompt", "size", "quality"}
    assert body.get("output_format", "png") == "png"
    assert out.read_bytes() == FINAL
    assert proc.stdout.strip() == str(out)


def test_images_api_edit_multipart(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    a = images.png_bytes(32, 32, noise=True, seed=21)
    b = images.png_bytes(32, 32, noise=True, seed=22)
    m = images.png_bytes(32, 32, alpha=True)
    for name, data in (("a.png", a), ("b.png", b), ("m.png", m)):
        (tmp_path / name).write_bytes(data)
    gateway.enqueue(images_api_reply(FINAL), path=EDITS)
    out = tmp_path / "e.png"
    proc = run_cli(
        [
            "--api",
            "images",
            "--prompt",
            "merge them",
            "--image",
            str(tmp_path / "a.png"),
            "--image",
            str(tmp_path / "b.png"),
            "--mask",
            str(tmp_path / "m.png"),
            "--out",
            str(out),
        ],
        env,
    )
    assert_ok(proc)
    assert len(gateway.requests) == 1, gateway.dump()
    rec = gateway.requests[0]
    assert (rec.method, rec.path) == ("POST", EDITS)
    assert int(rec.header("content-length") or -1) == len(rec.body)
    parts = parse_multipart(rec.body, rec.header("content-type") or "")
    fields: dict[str, str] = {}
    files: list[tuple[str, str, str, bytes]] = []
    for headers, payload in parts:
        disp = disposition(headers)
        if "filename" in disp:
            files.append((disp["name"], disp["filename"], headers["content-type"], payload))
        else:
            fields[disp["name"]] = payload.decode("utf-8")
    assert fields["prompt"] == "merge them"
    assert fields["size"] == "1024x1024"
    assert fields["model"]
    assert set(fields) - {"output_format"} == {"model", "prompt", "size"}
    assert files == [
        ("image[]", "a.png", "image/png", a),
        ("image[]", "b.png", "image/png", b),
        ("mask", "m.png", "image/png", m),
    ]
    assert out.read_bytes() == FINAL


def test_images_api_error_exit_code(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(error_reply(400, "Invalid size for this model", param="size"), path=GENERATIONS)
    out = tmp_path / "x.png"
    proc = run_cli(["--api", "images", "--prompt", "p", "--out", str(out)], env)
    assert proc.returncode == 4, proc.stderr
    assert "Invalid size for this model" in proc.stderr
    assert [r.path for r in gateway.requests] == [GENERATIONS]
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_images_api_auth_error_exit_3(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(error_reply(401, "bad key", code="invalid_api_key"), path=GENERATIONS)
    proc = run_cli(["--api", "images", "--prompt", "p", "--out", str(tmp_path / "x.png")], env)
    assert proc.returncode == 3, proc.stderr
    assert_no_secret(proc)


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(lambda: raw_reply(b"404 page not found", 404, "text/plain"), id="404"),
        pytest.param(
            lambda: error_reply(400, "Tool 'image_generation' is not supported with gpt-x"),
            id="tool-unsupported",
        ),
        pytest.param(
            lambda: error_reply(400, "Forced tool choice is not allowed here", param="tool_choice"),
            id="forced-tool-choice",
        ),
    ],
)
def test_api_auto_falls_back_to_images(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], refusal: Callable[[], Reply]
) -> None:
    gateway.enqueue(refusal())
    gateway.enqueue(images_api_reply(FINAL), path=GENERATIONS)
    out = tmp_path / "auto.png"
    proc = run_cli(["--api", "auto", "--prompt", "a boat", "--out", str(out)], env)
    assert_ok(proc)
    assert [(r.method, r.path) for r in gateway.requests] == [
        ("POST", "/v1/responses"),
        ("POST", GENERATIONS),
    ], gateway.dump()
    assert gateway.requests[1].json["prompt"] == "a boat"  # type: ignore[index]
    assert "Images API" in proc.stderr
    assert out.read_bytes() == FINAL


def test_api_auto_edit_falls_back_to_multipart(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    a = images.png_bytes(32, 32, noise=True, seed=31)
    (tmp_path / "a.png").write_bytes(a)
    gateway.enqueue(raw_reply(b"not found", 404, "text/plain"))
    gateway.enqueue(images_api_reply(FINAL), path=EDITS)
    out = tmp_path / "auto-edit.png"
    proc = run_cli(
        ["--api", "auto", "--prompt", "p", "--image", str(tmp_path / "a.png"), "--out", str(out)],
        env,
    )
    assert_ok(proc)
    assert [r.path for r in gateway.requests] == ["/v1/responses", EDITS]
    parts = parse_multipart(
        gateway.requests[1].body, gateway.requests[1].header("content-type") or ""
    )
    image_parts = [p for h, p in parts if disposition(h)["name"] == "image[]"]
    assert image_parts == [a]
    assert out.read_bytes() == FINAL


def test_api_auto_success_makes_no_images_request(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(image_reply(FINAL))
    gateway.set_default(images_api_reply(), path=GENERATIONS)
    out = tmp_path / "r.png"
    proc = run_cli(["--api", "auto", "--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    assert [r.path for r in gateway.requests] == ["/v1/responses"]
    assert out.read_bytes() == FINAL


def test_api_responses_does_not_fall_back(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(raw_reply(b"404 page not found", 404, "text/plain"))
    gateway.set_default(images_api_reply(), path=GENERATIONS)
    out = tmp_path / "r.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert proc.returncode == 4, proc.stderr
    assert [r.path for r in gateway.requests] == ["/v1/responses"]
    assert not out.exists()


def test_api_auto_unrelated_400_does_not_fall_back(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(error_reply(400, "Your prompt is too long"))
    gateway.set_default(images_api_reply(), path=GENERATIONS)
    proc = run_cli(["--api", "auto", "--prompt", "p", "--out", str(tmp_path / "r.png")], env)
    assert proc.returncode == 4, proc.stderr
    assert [r.path for r in gateway.requests] == ["/v1/responses"]


def test_api_auto_retries_a_5xx_on_responses(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """A 500 says nothing about the endpoint: retried where it was, no switch of API."""
    gateway.enqueue(error_reply(500, "The server had an error", type_="server_error"))
    gateway.enqueue(image_reply(FINAL))
    gateway.set_default(images_api_reply(), path=GENERATIONS)
    out = tmp_path / "r.png"
    proc = run_cli(["--api", "auto", "--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    assert [r.path for r in gateway.requests] == ["/v1/responses", "/v1/responses"]
    assert "Images API" not in proc.stderr
    assert out.read_bytes() == FINAL


# --- an Images API answer that links its image: the download (a GET, retried for free) --------

IMG_PATH = "/files/img.png"


def url_answer(gateway: Gateway, *paths: str) -> Reply:
    return json_reply({"created": 1759354093, "data": [{"url": gateway.url + p} for p in paths]})


def images_run(
    tmp_path: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["--api", "images", "--prompt", "p", "--out", str(tmp_path / "u.png"), *extra]
    return run_cli(args, env)


def linked_download(
    gateway: Gateway, tmp_path: Path, env: dict[str, str], *parts: bytes
) -> tuple[subprocess.CompletedProcess[str], int]:
    """An Images API answer linking its image on a raw server that writes ``parts`` to every
    GET, run with one retry: what the run printed, and how many GETs the link had."""
    from tests.raw_servers import RawServer, send

    with RawServer(send(*parts)) as raw:
        answer = {"created": 1759354093, "data": [{"url": f"http://127.0.0.1:{raw.port}/i.png"}]}
        gateway.enqueue(json_reply(answer), path=GENERATIONS)
        return images_run(tmp_path, env, "--retries", "1"), raw.connections


def test_a_download_cut_by_a_reset_is_retried_as_a_get(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(url_answer(gateway, IMG_PATH), path=GENERATIONS)
    gateway.enqueue(
        close_reply(reset=True), raw_reply(FINAL, content_type="image/png"), path=IMG_PATH
    )
    proc = images_run(tmp_path, env)
    assert_ok(proc)
    assert "downloading the image: " in proc.stderr and "retrying the download" in proc.stderr
    assert len(gateway.posts(GENERATIONS)) == 1
    assert (tmp_path / "u.png").read_bytes() == FINAL


def test_a_download_with_broken_framing_is_a_network_error(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """A chunked body whose chunk size is not a number: exit 6 after the retries, one POST."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    proc, gets = linked_download(gateway, tmp_path, env, head, b"zz\r\nnot a chunk\r\n")
    assert proc.returncode == 6, proc.stderr
    assert "downloading the image: " in proc.stderr
    assert gets == 2 and len(gateway.posts(GENERATIONS)) == 1
    assert not (tmp_path / "u.png").exists() and leftovers(tmp_path) == []
    # the Images API stores nothing: no response id, no word of --resumable, no streaming
    assert "--resumable" not in proc.stderr and ", Images API); this can take" in proc.stderr
    assert "(response " not in proc.stderr, proc.stderr  # "created" is a time, not an id


def test_a_download_retry_that_cannot_fit_the_time_budget_is_not_waited_for(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """The answer links its image 1.63 s into a 2 s budget and the download fails (503): with
    about 0.3 s left, less than the first backoff (0.375-0.5 s), the error now, one GET."""
    answer = {"created": 1759354093, "data": [{"url": gateway.url + IMG_PATH}]}
    gateway.enqueue(json_reply(answer, delay=1.63), path=GENERATIONS)
    gateway.set_default(error_reply(503, "busy", type_="server_error"), path=IMG_PATH)
    proc = images_run(tmp_path, env, "--timeout", "2")
    # 4: the 503; 6 only on a machine so slow that the GET itself outlasted the budget
    assert proc.returncode in (4, 6), proc.stderr
    assert "retrying the download" not in proc.stderr
    assert [r.path for r in gateway.requests] == [GENERATIONS, IMG_PATH]


def test_more_than_nine_distinct_image_urls_keep_nine(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """One image and at most 8 further ones (u-2 ... u-9); a tenth link is not downloaded."""
    paths = [f"/files/{i}.png" for i in range(10)]
    gateway.enqueue(url_answer(gateway, *paths), path=GENERATIONS)
    for i, path in enumerate(paths):
        gateway.enqueue(raw_reply(images.png_bytes(8 + i, 8), content_type="image/png"), path=path)
    proc = images_run(tmp_path, env)
    assert_ok(proc)
    assert [r.path for r in gateway.requests] == [GENERATIONS, *paths[:9]]
    assert (tmp_path / "u.png").read_bytes() == images.png_bytes(8, 8)
    for n in range(2, 10):
        assert (tmp_path / f"u-{n}.png").read_bytes() == images.png_bytes(8 + n - 1, 8)
    assert not (tmp_path / "u-10.png").exists()


def test_a_bug_inside_a_download_is_not_retried_as_a_network_fault(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """A TypeError while the image is read (planted) is ours: one GET, exit 1 (internal error),
    never "downloading the image: ..." retried."""
    gateway.enqueue(url_answer(gateway, IMG_PATH), path=GENERATIONS)
    gateway.set_default(raw_reply(FINAL, content_type="image/png"), path=IMG_PATH)
    patch = "def broken(*args): raise TypeError('a bug')\ng.stream_base64 = broken"
    args = ["--api", "images", "--prompt", "p", "--out", str(tmp_path / "u.png")]
    proc = run_patched(patch, args, env)
    assert proc.returncode == 1, proc.stderr
    assert "internal error: TypeError: a bug" in proc.stderr
    assert "downloading the image" not in proc.stderr and "retrying" not in proc.stderr
    assert [r.path for r in gateway.requests] == [GENERATIONS, IMG_PATH]
    assert not (tmp_path / "u.png").exists() and leftovers(tmp_path) == []


def test_a_download_cut_short_of_its_content_length_is_retried_and_named(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """The image's GET ends 989 bytes before its Content-Length: a retried GET (one POST), and
    the error says it was the download that was cut, not the gateway's answer."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    proc, gets = linked_download(gateway, tmp_path, env, head, b"\x89PNG\r\n\x1a\nabc")
    assert proc.returncode == 4, proc.stderr
    assert "error: downloading the image: the answer was cut short: 989 bytes" in proc.stderr
    assert gets == 2 and len(gateway.posts(GENERATIONS)) == 1
    assert not (tmp_path / "u.png").exists() and leftovers(tmp_path) == []


def test_a_refused_download_says_it_was_the_download(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    from tests.conftest import closed_port

    url = f"http://127.0.0.1:{closed_port()}/i.png"
    gateway.enqueue(json_reply({"created": 1759354093, "data": [{"url": url}]}), path=GENERATIONS)
    proc = images_run(tmp_path, env, "--retries", "0")
    assert proc.returncode == 6, proc.stderr
    assert "error: downloading the image: " in proc.stderr and "refused" in proc.stderr
    assert f"hint: {g.DOWNLOAD_HINT}" in proc.stderr and "base_url" not in proc.stderr
    assert len(gateway.posts(GENERATIONS)) == 1 and leftovers(tmp_path) == []


@pytest.mark.parametrize("port", ["0", "1"])
def test_an_image_link_to_port_0_is_refused_unfetched_and_port_1_is_tried(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], port: str
) -> None:
    """Port 0 names no server: the link is refused as an address without a GET. Port 1 is a
    port like any other: it is tried (and refused by the loopback host)."""
    url = f"http://127.0.0.1:{port}/i.png"
    gateway.enqueue(json_reply({"created": 1759354093, "data": [{"url": url}]}), path=GENERATIONS)
    proc = images_run(tmp_path, env, "--retries", "0")
    assert proc.returncode == (4 if port == "0" else 6), proc.stderr
    refused_unfetched = "the image address is not an http(s) URL" in proc.stderr
    assert refused_unfetched is (port == "0"), proc.stderr
    assert len(gateway.posts(GENERATIONS)) == 1 and leftovers(tmp_path) == []
