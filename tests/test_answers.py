"""What the script makes of an answer: the shapes of today's relays (previews under b64_json,
data: URL results, image items with only a url, image links in the model's text, the same image
twice, a distinct second image), live previews (--partial-images), a rejected image-tool option
dropped once (and --strict), model names passed through, the gateway's quirks, and odd answers
(mislabelled, failed or malformed results) that must neither lose an image nor crash.

Image URLs point at the loopback gateway itself, so the tests can assert that a download
carries neither the gateway's Authorization nor any configured header, even to the same host.
"""

from __future__ import annotations

import base64
import errno
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    assert_ok,
    clean_env,
    cli,
    closed_port,
    event_index,
    image_reply,
    leftovers,
    parse_json_stdout,
    report,
    run_cli,
    write_codex_home,
)
from tests.gateway import (
    Gateway,
    Reply,
    error_event,
    error_reply,
    failed_events,
    format_sse,
    image_events,
    image_item,
    incomplete_events,
    json_reply,
    message_item,
    raw_reply,
    renumber,
    response_obj,
    sse_reply,
    stall_reply,
    text_only_events,
)
from tests.raw_servers import RawServer, endless

OTHER = images.png_bytes(32, 48, seed=3)
JPEG = images.jpeg_bytes(16, 16)
IMG_PATH = "/files/img.png"


@pytest.fixture
def env(tmp_path: Path, gateway: Gateway) -> dict[str, str]:
    home = write_codex_home(
        tmp_path / "codex-home",
        gateway.base_url,
        extra_provider='http_headers = { "X-Tenant" = "tenant-secret-7" }',
    )
    return clean_env(CODEX_HOME=str(home))


def json_answer(*items: dict[str, Any]) -> Any:
    return json_reply(response_obj(list(items)))


def assert_plain_download(gateway: Gateway, path: str = IMG_PATH) -> None:
    """The image GET went out without the gateway's credentials or configured headers."""
    gets = [r for r in gateway.requests if r.method == "GET" and r.path == path]
    assert gets, gateway.dump()
    for rec in gets:
        assert rec.header("authorization") is None
        assert rec.header("x-tenant") is None and rec.header("x-extra") is None
        assert TEST_KEY not in json.dumps(rec.headers)


# --- previews -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", ["b64_json", "partial_image_b64", "response.image_gen_call.partial_image"]
)
def test_previews_in_every_shape(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], shape: str
) -> None:
    evs = image_events(images.b64(PNG), partials=[images.b64(OTHER)])
    for ev in evs:
        if ev["type"].endswith("partial_image"):
            if shape == "b64_json":
                ev["b64_json"] = ev.pop("partial_image_b64")
            elif shape.startswith("response."):
                ev["type"] = shape
    gateway.enqueue(sse_reply(evs))
    proc = cli(tmp_path, env, "--partial-images", "1")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.partial-1.png").read_bytes() == OTHER
    assert (tmp_path / "out.png").read_bytes() == PNG


# --- final results --------------------------------------------------------------------------------


def test_result_as_a_data_url(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(sse_reply(image_events("data:image/png;base64," + images.b64(PNG))))
    proc = cli(tmp_path, env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG


@pytest.mark.parametrize("stream", [True, False])
def test_item_with_only_a_url_is_downloaded_without_gateway_headers(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], stream: bool
) -> None:
    item = image_item(None)
    del item["result"]
    item.update(url=gateway.url + IMG_PATH, file_id="file_1", task_id="task_1")
    if stream:
        gateway.enqueue(
            sse_reply(
                image_events(None)[:-2]
                + [
                    {"type": "response.output_item.done", "output_index": 0, "item": item},
                    {"type": "response.completed", "response": response_obj([item])},
                ]
            )
        )
    else:
        gateway.enqueue(json_answer(item))
    gateway.enqueue(raw_reply(PNG, content_type="image/png"), path=IMG_PATH)
    args = ["--header", "X-Extra: extra-secret-9"] + ([] if stream else ["--no-stream"])
    proc = cli(tmp_path, env, *args)
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert len(gateway.posts()) == 1
    assert_plain_download(gateway)
    assert leftovers(tmp_path) == []


def test_download_follows_redirects_to_http(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    item = {**image_item(None), "url": gateway.url + "/files/short"}
    gateway.enqueue(json_answer(item))
    gateway.enqueue(raw_reply(b"", status=302, headers={"Location": IMG_PATH}), path="/files/short")
    gateway.enqueue(raw_reply(JPEG, content_type="image/jpeg"), path=IMG_PATH)
    proc = cli(tmp_path, env, "--no-stream", out="out.jpg")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.jpg").read_bytes() == JPEG
    assert_plain_download(gateway, "/files/short")
    assert_plain_download(gateway)


def test_download_refuses_a_redirect_to_another_scheme(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    item = {**image_item(None), "url": gateway.url + "/files/short"}
    gateway.enqueue(json_answer(item))
    gateway.enqueue(
        raw_reply(b"", status=302, headers={"Location": "file:///etc/passwd"}), path="/files/short"
    )
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert "not an http(s) URL" in proc.stderr
    assert len(gateway.posts()) == 1 and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("where", ["item", "redirect"])
@pytest.mark.parametrize("bad", ["http://example.com:99999/a.png", "http://[::1/a.png"])
def test_an_unparsable_image_url_is_exit_4_not_a_crash(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], where: str, bad: str
) -> None:
    # a port out of range or a broken IPv6 literal made urllib raise ValueError: exit 1
    if where == "item":
        gateway.enqueue(json_answer({**image_item(None), "url": bad}))
    else:
        gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + "/files/short"}))
        gateway.enqueue(raw_reply(b"", status=302, headers={"Location": bad}), path="/files/short")
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert "not an http(s) URL" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert len(gateway.posts()) == 1 and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("where", ["output", "content"])
def test_an_array_that_is_not_an_array_is_no_image_not_a_crash(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], stream: bool, where: str
) -> None:
    # "output": 5 or a message's "content": 5 was iterated: TypeError, exit 1
    obj = response_obj([])
    if where == "output":
        obj["output"] = 5
    else:
        obj["output"] = [{"type": "message", "content": 5}]
    if stream:
        gateway.enqueue(sse_reply([{"type": "response.completed", "response": obj}]))
    else:
        gateway.enqueue(json_reply(obj))
    proc = cli(tmp_path, env, "--verbose", *([] if stream else ["--no-stream"]))
    assert proc.returncode == 5, report(proc, gateway)
    assert "contained no image" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_download_is_size_capped(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + IMG_PATH}))
    huge = str(200 * 1024 * 1024)
    gateway.enqueue(
        raw_reply(PNG, content_type="image/png", headers={"Content-Length": huge}, cut_at=10),
        path=IMG_PATH,
    )
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert f"larger than {g.MAX_DOWNLOAD_BYTES // 2**20} MB" in proc.stderr
    assert len(gateway.posts()) == 1


def test_download_that_is_not_an_image_fails_without_a_second_post(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + IMG_PATH}))
    gateway.enqueue(raw_reply(b"<html>expired</html>", content_type="text/html"), path=IMG_PATH)
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert "gave no image" in proc.stderr
    assert len(gateway.posts()) == 1 and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("status", [500, 503])
def test_download_error_is_retried_as_a_get_only(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], status: int
) -> None:
    gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + IMG_PATH}))
    gateway.enqueue(
        error_reply(status, "busy", type_="server_error"),
        raw_reply(PNG, content_type="image/png"),
        path=IMG_PATH,
    )
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert (tmp_path / "out.png").read_bytes() == PNG


@pytest.mark.parametrize("link", ["markdown", "bare"])
def test_image_link_in_the_text(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], link: str
) -> None:
    url = gateway.url + IMG_PATH + "?sig=abc"
    text = f"Here it is: ![a fox]({url})" if link == "markdown" else f"Download: {url} (1 h)"
    gateway.enqueue(sse_reply(text_only_events(text)))
    gateway.enqueue(raw_reply(PNG, content_type="image/png"), path=IMG_PATH)
    proc = cli(tmp_path, env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert_plain_download(gateway)
    assert "the model's text links to" in proc.stderr
    assert "sig=abc" not in proc.stderr  # a signed URL is not printed


def test_a_long_text_of_url_starts_is_searched_quickly(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # each "http://" made the bare-URL pattern scan to the end of the text: quadratic, about
    # 4 minutes for 1 MB, after the stream (no timeout covers it)
    delta = {"type": "response.output_text.delta", "delta": "http://" * 8_500}
    events = [delta] * 17  # text deltas are joined without separators: 1 MB of "http://"
    events.append({"type": "response.completed", "response": response_obj([])})
    gateway.enqueue(sse_reply(events))
    started = time.monotonic()
    proc = cli(tmp_path, env, "--retries", "0")
    assert proc.returncode == 5, report(proc, gateway)
    assert "answered in text" in proc.stderr
    assert time.monotonic() - started < 20


def test_data_url_image_link_in_the_text(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    link = "data:image/png;base64," + images.b64(PNG)
    gateway.enqueue(sse_reply(text_only_events(f"Done: ![fox]({link})")))
    proc = cli(tmp_path, env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert "a data: URL" in proc.stderr and images.b64(PNG)[:40] not in proc.stderr
    assert [r.method for r in gateway.requests] == ["POST"]


def test_text_without_an_image_link_is_still_no_image(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(sse_reply(text_only_events("I cannot draw that, see https://example.com/faq")))
    proc = cli(tmp_path, env)
    assert proc.returncode == 5, report(proc, gateway)
    assert [r.method for r in gateway.requests] == ["POST"]


def test_images_api_url_answer_is_downloaded(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        json_reply({"created": 1, "data": [{"url": gateway.url + IMG_PATH}]}),
        path="/v1/images/generations",
    )
    gateway.enqueue(raw_reply(PNG, content_type="image/png"), path=IMG_PATH)
    proc = cli(tmp_path, env, "--api", "images")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert_plain_download(gateway)


# --- two images -----------------------------------------------------------------------------------


def test_the_same_image_twice_is_saved_once(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    same = images.b64(PNG)
    gateway.enqueue(json_answer(image_item(same, item_id="ig_1"), image_item(same, item_id="ig_2")))
    proc = cli(tmp_path, env, "--no-stream", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.png"]
    assert json.loads(proc.stdout)["extra_paths"] == []


def test_a_distinct_second_image_is_saved_beside(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        json_answer(
            image_item(images.b64(PNG), item_id="ig_1"),
            message_item("two versions"),
            image_item(images.b64(OTHER), item_id="ig_2"),
        )
    )
    proc = cli(tmp_path, env, "--no-stream", "--json", "--sidecar")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert (tmp_path / "out-2.png").read_bytes() == OTHER
    assert json.loads(proc.stdout)["extra_paths"] == [str(tmp_path / "out-2.png")]
    side = json.loads((tmp_path / "out.png.json").read_text(encoding="utf-8"))
    assert side["extra_paths"] == ["out-2.png"]
    assert leftovers(tmp_path) == []


def test_second_image_is_reported_on_stdout(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        json_answer(
            image_item(images.b64(PNG), item_id="a"), image_item(images.b64(OTHER), item_id="b")
        )
    )
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 0, report(proc, gateway)
    assert proc.stdout.split() == [str(tmp_path / "out.png"), str(tmp_path / "out-2.png")]
    assert "further, different image" in proc.stderr


# --- a rejected image option is dropped once ------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "param", "option"),
    [
        (["--quality", "xhigh"], "tools[0].quality", "quality"),
        (["--input-fidelity", "high"], "input_fidelity", "input_fidelity"),
        (["--background", "transparent"], "tools[0].background", "background"),
        (["--moderation", "low"], "tools[0].moderation", "moderation"),
        (
            ["--compression", "80", "--format", "webp"],
            "tools[0].output_compression",
            "output_compression",
        ),
        (["--partial-images", "2"], "tools[0].partial_images", "partial_images"),
    ],
)
def test_rejected_option_is_dropped_once(
    tmp_path: Path,
    gateway: Gateway,
    env: dict[str, str],
    flags: list[str],
    param: str,
    option: str,
) -> None:
    gateway.enqueue(
        error_reply(400, f"Invalid value for '{option}'.", code="unsupported_value", param=param),
        sse_reply(image_events(images.b64(PNG))),
    )
    proc = cli(tmp_path, env, *flags, "--json")
    assert proc.returncode == 0, report(proc, gateway)
    first, second = gateway.posts()
    assert option in first.json["tools"][0]
    assert option not in second.json["tools"][0]
    assert f"rejected the image option {option}" in proc.stderr
    fallbacks = json.loads(proc.stdout)["fallbacks"]
    assert len(fallbacks) == 1 and option in fallbacks[0]


def test_option_named_only_in_the_message_is_dropped(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(
            400, "Unsupported parameter: 'input_fidelity' is not supported with gpt-image-2."
        ),
        sse_reply(image_events(images.b64(PNG))),
    )
    proc = cli(tmp_path, env, "--input-fidelity", "low")
    assert proc.returncode == 0, report(proc, gateway)
    assert "input_fidelity" not in gateway.posts()[1].json["tools"][0]


def test_each_option_is_dropped_only_once(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    refusal = error_reply(
        400, "Invalid value: 'xhigh'.", code="unsupported_value", param="tools[0].quality"
    )
    gateway.enqueue(refusal, refusal)
    proc = cli(tmp_path, env, "--quality", "xhigh")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 2


def test_strict_keeps_the_option_and_fails(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(
            400, "Invalid value: 'xhigh'.", code="unsupported_value", param="tools[0].quality"
        ),
        sse_reply(image_events(images.b64(PNG))),
    )
    proc = cli(tmp_path, env, "--quality", "xhigh", "--strict")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert "--strict keeps quality" in proc.stderr


def test_strict_also_stops_the_size_bump(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(400, "Requested size is below the minimum pixel budget", param="tools[0].size"),
        sse_reply(image_events(images.b64(PNG))),
    )
    proc = cli(tmp_path, env, "--size", "512x512", "--strict")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1


def test_tool_background_refusal_is_not_background_mode(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(
            400,
            "background 'transparent' is not supported for this model",
            param="tools[0].background",
        ),
        sse_reply(image_events(images.b64(PNG))),
    )
    proc = cli(tmp_path, env, "--background", "transparent", "--resumable")
    assert proc.returncode == 0, report(proc, gateway)
    first, second = gateway.posts()
    assert second.json["background"] is True and second.json["store"] is True
    assert "background" not in second.json["tools"][0]


# --- model names pass through ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-3-preview"]
)
def test_image_model_names_pass_through(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], model: str
) -> None:
    gateway.enqueue(sse_reply(image_events(images.b64(PNG))))
    proc = cli(tmp_path, env, "--image-model", model, "--model", "gpt-5.7-codex-2026-11-01")
    assert proc.returncode == 0, report(proc, gateway)
    (post,) = gateway.posts()
    assert post.json["tools"][0]["model"] == model
    assert post.json["model"] == "gpt-5.7-codex-2026-11-01"


@pytest.mark.parametrize("model", ["gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst"])
def test_gpt_image_2_size_rules_cover_the_family(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], model: str
) -> None:
    proc = cli(tmp_path, env, "--image-model", model, "--size", "1000x1000")
    assert proc.returncode == 2, report(proc)
    assert "multiples of 16" in proc.stderr and model in proc.stderr
    assert gateway.requests == []
    ok = cli(tmp_path, env, "--image-model", model, "--size", "3840x2160", "--dry-run")
    assert ok.returncode == 0, report(ok)


# --- live previews (--partial-images) -------------------------------------------------------------


P1 = images.png_bytes(16, 16)
P2 = images.png_bytes(16, 16, noise=True, seed=2)
FINAL = images.png_bytes(40, 24, noise=True, seed=3)


def preview_reply() -> Reply:
    return sse_reply(image_events(images.b64(FINAL), partials=[images.b64(P1), images.b64(P2)]))


def test_partial_images_beside_out(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(preview_reply())
    out = tmp_path / "out.png"
    proc = run_cli(["--prompt", "p", "--out", str(out), "--partial-images", "2"], env)
    assert_ok(proc)
    (rec,) = gateway.posts()
    assert rec.json is not None and rec.json["tools"][0]["partial_images"] == 2
    assert rec.json["stream"] is True
    first, second = tmp_path / "out.partial-1.png", tmp_path / "out.partial-2.png"
    assert first.read_bytes() == P1
    assert second.read_bytes() == P2
    assert out.read_bytes() == FINAL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "codex-home") == [
        "out.partial-1.png",
        "out.partial-2.png",
        "out.png",
    ]
    i1 = proc.stderr.find(str(first))
    i2 = proc.stderr.find(str(second))
    assert 0 <= i1 < i2, proc.stderr
    assert proc.stdout.strip() == str(out)


def test_partials_dir(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(preview_reply())
    out = tmp_path / "final" / "img.png"
    previews = tmp_path / "previews"
    previews.mkdir()
    proc = run_cli(
        [
            "--prompt",
            "p",
            "--out",
            str(out),
            "--partial-images",
            "2",
            "--partials-dir",
            str(previews),
        ],
        env,
    )
    assert_ok(proc)
    assert (previews / "img.partial-1.png").read_bytes() == P1
    assert (previews / "img.partial-2.png").read_bytes() == P2
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["img.png"]
    assert out.read_bytes() == FINAL


def test_partial_images_with_no_stream(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(json_reply(response_obj([image_item(images.b64(FINAL))])))
    out = tmp_path / "out.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), "--partial-images", "2", "--no-stream"], env
    )
    assert_ok(proc)
    (rec,) = gateway.posts()
    assert rec.json is not None
    assert "partial_images" not in rec.json["tools"][0]
    assert rec.json["stream"] is False
    assert out.read_bytes() == FINAL
    assert list(tmp_path.glob("*.partial-*")) == []


def test_partial_images_out_of_range(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--partial-images", "4"], env
    )
    assert proc.returncode == 2, proc.stderr
    assert gateway.requests == []


# --- reading stops once the image is safe; quirks; results per attempt ----------------------------


def test_stall_after_the_image_item_does_not_hold_up_the_result(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG))
    done = event_index(events, "response.output_item.done")
    assert events[done]["item"]["result"]
    gateway.set_default(sse_reply(events, stall_after=done + 1))
    out = tmp_path / "out" / "image.png"
    proc = cli(tmp_path, env, "--idle-timeout", "60", "--json", out=out, timeout=15)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    record = parse_json_stdout(proc)
    assert record["ok"] is True and record["path"] == str(out)
    assert len(gateway.posts()) == 1
    assert leftovers(tmp_path) == []


def quirk(detail: str) -> tuple[str, str] | None:
    """The first entry of the quirk table that recognises this 400 (its name and warning)."""
    exc = g.GatewayError("HTTP 400 from stream.example.com: " + detail, status=400, detail=detail)
    job = g.build_job({"prompt": "x", "out": "x.png", "stream": True})
    sink = g.ImageSink("x.png", False)
    s = g.Situation(exc, g.Plan(job), job, g.Outcome(job), g.Collector(sink), -1, g.Settings({}), 0)
    for entry in g.QUIRKS:
        note = entry.recognise(s)
        if note is not None:
            return entry.name, note
    return None


def test_host_name_does_not_trigger_the_stream_quirk() -> None:
    assert quirk("this option is unsupported") is None


def test_gateway_words_still_trigger_the_stream_quirk() -> None:
    found = quirk("streaming is not supported")
    assert found is not None and found[0] == "stream"


def test_bad_result_of_an_earlier_attempt_does_not_decide_a_later_one(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    head = image_events(images.b64(PNG))[:2]
    corrupt = renumber(
        [
            *head,
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": image_item("!!!notbase64"),
            },
            error_event("server_error", "upstream hiccup"),
        ]
    )
    gateway.enqueue(
        sse_reply(corrupt),
        # close-delimited and cut: the stream just ends, so the verdict decides the error
        sse_reply(image_events(images.b64(PNG)), cut_after=3, chunked=False),
        image_reply(),
    )
    out = tmp_path / "out" / "image.png"
    proc = cli(tmp_path, env, "--retries", "2", "--json", out=out)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    assert len(gateway.posts()) == 3
    assert parse_json_stdout(proc)["retries"] == 2
    assert leftovers(tmp_path) == []


# --- odd answers that must neither lose an image nor crash ----------------------------------------


B64 = base64.b64encode(PNG).decode("ascii")


def run_against(
    tmp_path: Path, gateway: Gateway, replies: list[Reply], *extra: str
) -> subprocess.CompletedProcess[str]:
    for reply in replies:
        gateway.enqueue(reply)
    home = write_codex_home(tmp_path / "home", gateway.base_url)
    return cli(tmp_path, clean_env(CODEX_HOME=str(home)), "--retries", "2", *extra)


def test_failed_image_call_shows_the_models_explanation(tmp_path: Path, gateway: Gateway) -> None:
    failed = image_item(None, status="failed")
    said = "I can't create that image because it depicts a real person."
    reply = json_reply(response_obj([failed, message_item(said)]))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 5, report(proc, gateway)
    assert "the image generation call failed; the model answered in text: " + said in proc.stderr
    assert len(gateway.posts()) == 1


def test_failed_image_call_without_text_still_says_so(tmp_path: Path, gateway: Gateway) -> None:
    reply = json_reply(response_obj([image_item(None, status="failed")]))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 5, report(proc, gateway)
    assert "the image generation call failed without a reason" in proc.stderr


@pytest.mark.parametrize("bad", [12345, True, ["x"], {"b64": "x"}])
def test_result_that_is_not_a_string_is_exit_4_not_a_crash(
    tmp_path: Path, gateway: Gateway, bad: Any
) -> None:
    events = image_events(B64)
    for ev in events:
        items = [ev.get("item")] + list(ev.get("response", {}).get("output", []))
        for item in items:
            if isinstance(item, dict) and item.get("type") == "image_generation_call":
                item["result"] = bad
    proc = run_against(tmp_path, gateway, [sse_reply(events)], "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "not base64 text" in proc.stderr


def test_bad_result_then_a_good_copy_saves_the_image(tmp_path: Path, gateway: Gateway) -> None:
    events = image_events(B64)
    for ev in events:
        if ev["type"] == "response.output_item.done" and "result" in ev["item"]:
            # the copy in response.completed (a separate object) stays fine
            ev["item"] = {**ev["item"], "result": 12345}
    proc = run_against(tmp_path, gateway, [sse_reply(events)])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_preview_that_is_not_a_string_is_skipped(tmp_path: Path, gateway: Gateway) -> None:
    events = image_events(B64, partials=[B64])
    for ev in events:
        if ev["type"].endswith("partial_image"):
            ev["partial_image_b64"] = 123
    proc = run_against(tmp_path, gateway, [sse_reply(events)], "--partial-images", "1")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_key_across_the_cut_of_a_non_json_answer_is_masked(
    tmp_path: Path, gateway: Gateway
) -> None:
    body = b"x" * 180 + b" key " + TEST_KEY.encode() + b" rejected"
    reply = raw_reply(body, content_type="application/json")
    proc = run_against(tmp_path, gateway, [reply], "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    for n in range(9, len(TEST_KEY) + 1):
        assert TEST_KEY[:n] not in proc.stdout + proc.stderr, n


def test_json_answer_labelled_as_a_stream_is_read_as_json(tmp_path: Path, gateway: Gateway) -> None:
    body = json.dumps(response_obj([image_item(B64)])).encode()
    proc = run_against(tmp_path, gateway, [raw_reply(body, content_type="text/event-stream")])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert len(gateway.posts()) == 1  # not re-sent (and re-billed)


def test_moderation_error_labelled_as_a_stream_is_exit_5_once(
    tmp_path: Path, gateway: Gateway
) -> None:
    err = {
        "error": {
            "message": "Your request was rejected by the safety system.",
            "type": "image_generation_user_error",
            "code": "moderation_blocked",
            "param": None,
        }
    }
    reply = raw_reply(json.dumps(err).encode(), content_type="text/event-stream")
    proc = run_against(tmp_path, gateway, [reply] * 3)
    assert proc.returncode == 5, report(proc, gateway)
    assert "rejected by the safety system" in proc.stderr
    assert len(gateway.posts()) == 1


def test_stream_labelled_as_json_is_read_as_a_stream(tmp_path: Path, gateway: Gateway) -> None:
    body = format_sse(image_events(B64))
    proc = run_against(tmp_path, gateway, [raw_reply(body, content_type="application/json")])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_error_given_as_a_string_in_a_200_answer_is_shown(tmp_path: Path, gateway: Gateway) -> None:
    reply = json_reply({"error": "upstream quota exhausted"})
    proc = run_against(tmp_path, gateway, [reply], "--no-stream", "--retries", "0")
    assert proc.returncode in (4, 5), report(proc, gateway)
    assert "upstream quota exhausted" in proc.stderr
    assert "contained no image" not in proc.stderr


@pytest.mark.parametrize(
    ("label", "first", "kind"),
    [
        ("text/event-stream", b'{"id": 1}', "json"),
        ("text/event-stream", b"  \n[1]", "json"),
        ("application/json", b"event: response.created\n", "event-stream"),
        ("application/json", b"data: {}\n\n", "event-stream"),
        ("application/json", b": keep-alive\n", "event-stream"),
        ("application/json", b"", "json"),
        ("application/json", b"<html>", "json"),
        ("", b"", "event-stream"),
        ("text/plain", b"da", "event-stream"),
        ("text/event-stream", b"\n\n", "event-stream"),
    ],
)
def test_answer_kind(label: str, first: bytes, kind: str) -> None:
    assert g.answer_kind(label, first) == kind


@pytest.mark.parametrize("width", [8, 9])  # base64 one and two "=" short
def test_image_base64_without_padding_is_saved(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], width: int
) -> None:
    # some encoders drop the "=" padding: the paid image must still be saved, whole
    data = images.png_bytes(width, 8)
    unpadded = images.b64(data).rstrip("=")
    assert len(unpadded) % 4 != 0
    gateway.enqueue(sse_reply(image_events(unpadded)))
    proc = cli(tmp_path, env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == data


def test_download_without_content_length_is_size_capped(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # no Content-Length to refuse up front: the bytes count as they come
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"
    with RawServer(endless(head, b"\x89PNG" * 65536)) as files:
        gateway.enqueue(
            json_answer({**image_item(None), "url": f"http://127.0.0.1:{files.port}{IMG_PATH}"})
        )
        proc = cli(tmp_path, env, "--no-stream", "--retries", "0", timeout=120)
    assert proc.returncode == 4, report(proc, gateway)
    assert f"larger than {g.MAX_DOWNLOAD_BYTES // 2**20} MB" in proc.stderr
    assert len(gateway.posts()) == 1 and leftovers(tmp_path) == []


@pytest.mark.parametrize("hops", [g.MAX_REDIRECTS, g.MAX_REDIRECTS + 1])
def test_download_follows_at_most_max_redirects(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], hops: int
) -> None:
    gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + "/files/hop0"}))
    for k in range(hops):
        location = f"/files/hop{k + 1}" if k + 1 < hops else IMG_PATH
        gateway.enqueue(
            raw_reply(b"", status=302, headers={"Location": location}), path=f"/files/hop{k}"
        )
    gateway.enqueue(raw_reply(PNG, content_type="image/png"), path=IMG_PATH)
    proc = cli(tmp_path, env, "--no-stream")
    if hops <= g.MAX_REDIRECTS:
        assert proc.returncode == 0, report(proc, gateway)
        assert (tmp_path / "out.png").read_bytes() == PNG
    else:
        assert proc.returncode == 4, report(proc, gateway)
        assert f"redirected more than {g.MAX_REDIRECTS} times" in proc.stderr
        assert not (tmp_path / "out.png").exists()


def test_download_refused_is_a_network_error_after_one_post(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    port = closed_port()
    gateway.enqueue(json_answer({**image_item(None), "url": f"http://127.0.0.1:{port}/a.png"}))
    proc = cli(tmp_path, env, "--no-stream", "--retries", "0")
    assert proc.returncode == 6, report(proc, gateway)
    assert f"connection to 127.0.0.1:{port} refused" in proc.stderr
    assert len(gateway.posts()) == 1 and not (tmp_path / "out.png").exists()


def test_download_that_stalls_times_out(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(json_answer({**image_item(None), "url": gateway.url + IMG_PATH}))
    gateway.enqueue(stall_reply(), path=IMG_PATH)
    proc = cli(tmp_path, env, "--no-stream", "--retries", "0", "--idle-timeout", "1")
    assert proc.returncode == 6, report(proc, gateway)
    assert "downloading the image from 127.0.0.1" in proc.stderr and "timed out" in proc.stderr
    assert len(gateway.posts()) == 1 and leftovers(tmp_path) == []


def test_two_image_urls_are_both_downloaded_and_saved(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    first = {**image_item(None, item_id="ig_a"), "url": gateway.url + IMG_PATH}
    second = {**image_item(None, item_id="ig_b"), "url": gateway.url + "/files/two.png"}
    gateway.enqueue(json_answer(first, second))
    gateway.enqueue(raw_reply(PNG, content_type="image/png"), path=IMG_PATH)
    gateway.enqueue(raw_reply(OTHER, content_type="image/png"), path="/files/two.png")
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert (tmp_path / "out-2.png").read_bytes() == OTHER
    assert len(gateway.posts()) == 1


# --- final statuses without an error object, odd Images API entries, odd event shapes -------------


def test_a_failed_response_without_a_reason_is_exit_4_once(
    tmp_path: Path, gateway: Gateway
) -> None:
    events = failed_events("server_error", "x", started_image=True)
    events[-1]["response"]["error"] = None  # "failed", and nothing says why
    proc = run_against(tmp_path, gateway, [sse_reply(events)])
    assert proc.returncode == 4, report(proc, gateway)
    assert "the response failed without a reason" in proc.stderr
    assert len(gateway.posts()) == 1  # the image call had started: never paid twice


def test_an_answer_stopped_by_the_content_filter_is_exit_5(
    tmp_path: Path, gateway: Gateway
) -> None:
    events = incomplete_events("content_filter", started_image=True)
    proc = run_against(tmp_path, gateway, [sse_reply(events)])
    assert proc.returncode == 5, report(proc, gateway)
    assert "the response was stopped by the content filter" in proc.stderr
    assert len(gateway.posts()) == 1


def test_a_response_cancelled_on_the_gateway_is_exit_4(tmp_path: Path, gateway: Gateway) -> None:
    reply = json_reply(response_obj([], status="cancelled"))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert "the response was cancelled on the gateway" in proc.stderr
    assert len(gateway.posts()) == 1 and not (tmp_path / "out.png").exists()


def test_a_cancelled_response_that_carries_its_image_saves_it(
    tmp_path: Path, gateway: Gateway
) -> None:
    reply = json_reply(response_obj([image_item(B64)], status="cancelled"))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_images_api_entries_that_are_not_objects_or_text_are_exit_4(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    answer = {"created": 1, "data": [5, "x", None, {"b64_json": 123}, {"b64_json": ["A"]}]}
    gateway.enqueue(json_reply(answer), path="/v1/images/generations")
    proc = cli(tmp_path, env, "--api", "images", "--retries", "2")
    assert proc.returncode == 4, report(proc, gateway)
    assert "b64_json is not base64 text" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert len(gateway.posts("/images/generations")) == 1
    assert not (tmp_path / "out.png").exists() and leftovers(tmp_path) == []


def test_images_api_odd_entries_around_two_images_are_skipped(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    data = [
        "junk",
        {"revised_prompt": "neither base64 nor a url"},
        {"b64_json": B64},
        7,
        {"b64_json": 123},  # after the image: not a failure of the answer
        {"b64_json": ""},
        {"b64_json": images.b64(OTHER)},
    ]
    gateway.enqueue(json_reply({"created": 1, "data": data}), path="/v1/images/generations")
    proc = cli(tmp_path, env, "--api", "images", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert (tmp_path / "out-2.png").read_bytes() == OTHER
    assert json.loads(proc.stdout)["extra_paths"] == [str(tmp_path / "out-2.png")]


def test_event_fields_of_the_wrong_type_are_skipped(tmp_path: Path, gateway: Gateway) -> None:
    events = image_events(B64)
    odd: list[dict[str, Any]] = [
        {"type": "response.output_item.done", "output_index": 3, "item": "not an object"},
        {"type": "response.output_text.delta", "delta": 12},
        {
            "type": "response.output_item.done",
            "output_index": 4,
            "item": {"type": "message", "content": [5, {"type": "audio", "text": "no"}]},
        },
    ]
    events[-1] = {"type": "response.completed", "response": "done"}  # not an object
    proc = run_against(tmp_path, gateway, [sse_reply(renumber(events[:2] + odd + events[2:]))])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert "Traceback" not in proc.stderr


def test_a_response_without_id_or_text_status_still_gives_its_image(
    tmp_path: Path, gateway: Gateway
) -> None:
    resp = response_obj([image_item(B64)])
    del resp["id"]
    resp["status"] = ["completed"]  # not text: not taken as a status
    proc = run_against(tmp_path, gateway, [json_reply(resp)], "--no-stream", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert json.loads(proc.stdout)["response_id"] in ("", None)


# --- previews that cannot be kept, base64 with a stray symbol, further images ---------------------


def test_previews_that_are_not_images_or_cannot_be_written_are_skipped(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    garbage = base64.b64encode(b"not an image at all, just text").decode()
    events = image_events(B64, partials=[garbage, images.b64(OTHER)])
    gateway.enqueue(sse_reply(events))
    (tmp_path / "out.partial-2.png").mkdir()  # the second preview's name is a folder
    proc = cli(tmp_path, env, "--partial-images", "2")
    assert proc.returncode == 0, report(proc, gateway)
    assert "preview 1 skipped: the gateway's result is not an image" in proc.stderr
    assert "preview 2 not saved:" in proc.stderr
    assert not (tmp_path / "out.partial-1.png").exists()
    assert (tmp_path / "out.partial-2.png").is_dir()
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert leftovers(tmp_path) == []


def test_base64_with_a_stray_symbol_before_its_padding_is_exit_4(
    tmp_path: Path, gateway: Gateway
) -> None:
    data = B64.rstrip("=")
    data += "A" * ((1 - len(data)) % 4)  # one symbol more than a whole group
    bad = data + "=" * (-len(data) % 4)
    proc = run_against(tmp_path, gateway, [json_answer(image_item(bad))], "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert "the image data is not valid base64" in proc.stderr
    assert not (tmp_path / "out.png").exists() and leftovers(tmp_path) == []


def test_a_second_result_that_is_not_an_image_is_dropped(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    not_png = base64.b64encode(b"plain text, no image").decode()
    gateway.enqueue(
        json_answer(image_item(B64, item_id="ig_1"), image_item(not_png, item_id="ig_2"))
    )
    proc = cli(tmp_path, env, "--no-stream", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert json.loads(proc.stdout)["extra_paths"] == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.png"]


def test_at_most_eight_further_images_are_kept(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    pngs = [images.png_bytes(8 + n, 8, seed=n) for n in range(11)]
    items = [image_item(images.b64(p), item_id=f"ig_{n}") for n, p in enumerate(pngs)]
    gateway.enqueue(json_answer(*items))
    proc = cli(tmp_path, env, "--no-stream", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    extra = [str(tmp_path / f"out-{n}.png") for n in range(2, 10)]
    assert json.loads(proc.stdout)["extra_paths"] == extra
    for n in range(2, 10):
        assert (tmp_path / f"out-{n}.png").read_bytes() == pngs[n - 1]
    assert not (tmp_path / "out-10.png").exists() and leftovers(tmp_path) == []


def test_a_further_image_no_folder_can_hold_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first image is safe; a further one that neither its folder nor the temp folder takes
    # is dropped (with a --verbose line), never failing the answer that carried the first
    sink = g.ImageSink(str(tmp_path / "out.png"), force=False)
    collector = g.Collector(sink)
    notes: list[str] = []
    collector.debug = notes.append
    try:
        assert sink.save(B64)

        def full(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(g, "create_unique", full)
        collector.save_extra(images.b64(OTHER))
        assert collector.extras == []
        assert len(notes) == 1 and notes[0].startswith("a further image could not be kept: ")
        assert "no folder could hold it" in notes[0]
        collector.debug = None  # without --verbose: dropped quietly
        collector.save_extra(images.b64(OTHER))
        assert collector.extras == [] and len(notes) == 1
    finally:
        sink.discard()


def test_no_further_image_before_the_first() -> None:
    collector = g.Collector(g.ImageSink("unused.png", force=False))
    assert collector.extra_sink() is None  # nothing kept yet: nothing to put beside it
    collector.save_extra(B64)
    assert collector.extras == []


@pytest.mark.parametrize(
    ("details", "tail"),
    [
        ({}, ""),
        ({"moderation_stage": "output"}, " [stage: output]"),
        ({"categories": ["violence", 7]}, " [categories: violence, 7]"),
        ({"moderation_stage": "", "categories": []}, ""),
    ],
)
def test_moderation_details_name_only_what_they_hold(details: dict[str, Any], tail: str) -> None:
    err = {"code": "moderation_blocked", "message": "blocked", "moderation_details": details}
    exc = g.error_from_payload(err)
    assert isinstance(exc, g.NoImageError)
    assert exc.message == "blocked by the safety system (moderation_blocked): blocked" + tail


# --- data: URLs: the payload after the comma, read in place ---------------------------------------


@pytest.mark.parametrize("size", [1, 3, 8, 22, 23, 64, 4096])
def test_a_data_url_payload_reads_the_same_in_pieces_of_any_size(size: int) -> None:
    header = "data:image/png;name=a-long-name;base64,"
    body = base64.b64encode(bytes(range(256)) * 3).decode()
    blob = g.Blob()
    blob.write((header + body).encode())
    try:
        for source in (header + body, blob):
            payload = g.data_url_payload(source)
            assert isinstance(payload, g.Payload) and len(payload) == len(body)
            assert b"".join(payload.pieces(size)) == body.encode(), (type(source), size)
            payload.close()  # the source is the answer's: still readable
        assert b"".join(blob.pieces()) == (header + body).encode()
    finally:
        blob.close()


def test_a_payload_is_not_a_data_url_again_and_other_values_pass_through() -> None:
    # unwrapped once only, even when what follows the comma looks like a data: URL itself
    payload = g.data_url_payload("data:image/png;xy;base64,data:image/png;base64,QUJD")
    assert isinstance(payload, g.Payload)
    assert not g.is_data_url(payload)
    assert g.data_url_payload(payload) is payload
    assert g.data_url_payload("QUJD") == "QUJD"
    assert g.data_url_payload("data:image/png;base64QUJD") == "data:image/png;base64QUJD"
