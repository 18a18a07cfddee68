"""The metadata sidecar (--sidecar) and --edit-from, which continues an edit from it: what the
sidecar holds, and what the next request sends (previous_response_id, or the image again when the
stored response is gone or the image was replaced)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    assert_ok,
    content_of,
    decode_data_url,
    image_reply,
    leftovers,
    report,
    run_cli,
)
from tests.gateway import Gateway, Reply, error_reply

# --- the sidecar ----------------------------------------------------------------------------------


def test_sidecar_contents(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    real = images.png_bytes(96, 64, noise=True, seed=5)
    gateway.enqueue(
        error_reply(400, "tool_choice must be 'auto' on this gateway", param="tool_choice"),
        error_reply(503, "overloaded", type_="server_error", headers={"Retry-After": "0"}),
        image_reply(real, resp_id="resp_side1", item_id="ig_side1", revised_prompt="a red fox"),
    )
    out = tmp_path / "fox.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--sidecar", "--quality", "high"], env)
    assert_ok(proc)
    assert len(gateway.posts()) == 3, gateway.dump()
    sidecar = tmp_path / "fox.png.json"
    text = sidecar.read_text(encoding="utf-8")
    assert TEST_KEY not in text
    assert TEST_KEY[-12:] not in text
    data = json.loads(text)
    assert data["prompt"] == "a fox"
    assert data["revised_prompt"] == "a red fox"
    assert data["request"]["size"] == "1024x1024"
    assert data["request"]["quality"] == "high"
    assert data["endpoint_host"] == f"127.0.0.1:{gateway.port}"
    assert data["response_id"] == "resp_side1"
    assert data["image_call_id"] == "ig_side1"
    assert data["requested_size"] == "1024x1024"
    assert (data["width"], data["height"]) == (96, 64)
    assert data["format"] == "png"
    assert data["bytes"] == len(real) == out.stat().st_size
    assert data["sha256"] == hashlib.sha256(real).hexdigest()
    assert isinstance(data["elapsed_seconds"], (int, float)) and data["elapsed_seconds"] >= 0
    assert data["retries"] == 1
    assert len(data["fallbacks"]) == 1 and "tool_choice" in data["fallbacks"][0]
    assert data["version"] == run_cli(["--version"]).stdout.split()[-1]
    assert data["stored"] is False
    assert out.read_bytes() == real
    assert proc.stdout.strip() == str(out)
    assert leftovers(tmp_path) == []
    assert "sidecar" in proc.stderr


def test_no_sidecar_without_flag(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "a.png"
    assert_ok(run_cli(["--prompt", "p", "--out", str(out)], env))
    assert not (tmp_path / "a.png.json").exists()


def test_sidecar_for_each_variant(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(lambda rec: image_reply(resp_id=f"resp_{rec.index}"))
    out = tmp_path / "v.png"
    assert_ok(run_cli(["--prompt", "p", "--out", str(out), "--n", "2", "--sidecar"], env))
    ids = set()
    for i in (1, 2):
        data = json.loads((tmp_path / f"v-{i}.png.json").read_text(encoding="utf-8"))
        assert data["path"] == f"v-{i}.png"
        ids.add(data["response_id"])
    assert ids == {"resp_0", "resp_1"}


# --- --edit-from ----------------------------------------------------------------------------------


FIRST = images.png_bytes(48, 32, noise=True, seed=11)


SECOND = images.png_bytes(48, 32, noise=True, seed=12)


def first_run(tmp_path: Path, gateway: Gateway, env: dict[str, str], *extra: str) -> Path:
    gateway.enqueue(image_reply(FIRST, resp_id="resp_first"))
    out = tmp_path / "first.png"
    proc = run_cli(["--prompt", "a house", "--out", str(out), "--sidecar", *extra], env)
    assert_ok(proc)
    assert (tmp_path / "first.png.json").exists()
    return out


@pytest.mark.parametrize("target", ["image", "sidecar"])
def test_edit_from_reuploads_the_image(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], target: str
) -> None:
    first = first_run(tmp_path, gateway, env)
    gateway.enqueue(image_reply(SECOND))
    source = str(first) if target == "image" else str(first) + ".json"
    second = tmp_path / "second.png"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run_cli(
        ["--prompt", "now at night", "--edit-from", source, "--out", str(second)],
        env,
        cwd=elsewhere,
    )
    assert_ok(proc)
    posts = gateway.posts()
    assert len(posts) == 2
    body = posts[1].json
    assert body is not None
    assert "previous_response_id" not in body
    content = content_of(posts[1])
    assert content[0] == {"type": "input_text", "text": "now at night"}
    assert content[1]["type"] == "input_image"
    assert decode_data_url(content[1]["image_url"]) == FIRST
    assert body["tools"][0]["action"] == "edit"
    assert second.read_bytes() == SECOND


@pytest.mark.parametrize("target", ["image", "sidecar"])
def test_edit_from_stored_sends_previous_response_id(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], target: str
) -> None:
    first = first_run(tmp_path, gateway, env, "--store")
    assert gateway.posts()[0].json["store"] is True  # type: ignore[index]
    side = json.loads((tmp_path / "first.png.json").read_text(encoding="utf-8"))
    assert side["stored"] is True and side["response_id"] == "resp_first"
    gateway.enqueue(image_reply(SECOND))
    source = str(first) if target == "image" else str(first) + ".json"
    second = tmp_path / "second.png"
    proc = run_cli(["--prompt", "add snow", "--edit-from", source, "--out", str(second)], env)
    assert_ok(proc)
    posts = gateway.posts()
    assert len(posts) == 2
    body = posts[1].json
    assert body is not None
    assert body["previous_response_id"] == "resp_first"
    assert [c["type"] for c in content_of(posts[1])] == ["input_text"]  # no re-upload
    assert body["tools"][0]["action"] == "edit"
    assert second.read_bytes() == SECOND


def test_dry_run_shows_previous_response_id_as_the_real_run_sends_it(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    first = first_run(tmp_path, gateway, env, "--store")
    second = tmp_path / "second.png"
    proc = run_cli(
        ["--prompt", "add snow", "--edit-from", str(first), "--out", str(second), "--dry-run"],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout[proc.stdout.index("\n{") :])
    assert body["previous_response_id"] == "resp_first"
    assert [c["type"] for c in body["input"][0]["content"]] == ["input_text"]  # no re-upload
    assert len(gateway.posts()) == 1  # nothing sent


@pytest.mark.parametrize(
    "reject",
    [
        pytest.param(
            lambda: error_reply(
                400,
                "Previous response with id 'resp_first' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            ),
            id="openai-shape",
        ),
        pytest.param(
            lambda: error_reply(400, "Previous response with id 'resp_first' not found."),
            id="message-only",
        ),
    ],
)
def test_edit_from_rejected_previous_response_reuploads(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], reject: Callable[[], Reply]
) -> None:
    first = first_run(tmp_path, gateway, env, "--store")
    gateway.enqueue(reject(), image_reply(SECOND))
    second = tmp_path / "second.png"
    proc = run_cli(["--prompt", "add snow", "--edit-from", str(first), "--out", str(second)], env)
    assert_ok(proc)
    posts = gateway.posts()
    assert len(posts) == 3, gateway.dump()  # first run + rejected + resent
    rejected, resent = posts[1].json, posts[2].json
    assert rejected is not None and resent is not None
    assert rejected["previous_response_id"] == "resp_first"
    assert "previous_response_id" not in resent
    content = content_of(posts[2])
    assert [c["type"] for c in content] == ["input_text", "input_image"]
    assert decode_data_url(content[1]["image_url"]) == FIRST
    assert second.read_bytes() == SECOND
    assert "previous_response_id" in proc.stderr


def test_edit_from_a_deeply_nested_sidecar_is_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    image = tmp_path / "fox.png"
    image.write_bytes(PNG)
    nested = '{"path": "fox.png", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "fox.png.json").write_text(nested, encoding="utf-8")
    out = str(tmp_path / "o.png")
    proc = run_cli(["--prompt", "p", "--edit-from", str(image), "--out", out], env)
    assert proc.returncode == 2, proc.stderr
    assert "--edit-from" in proc.stderr and "nested too deeply" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert gateway.requests == []


def test_edit_from_missing_image(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    proc = run_cli(
        [
            "--prompt",
            "p",
            "--edit-from",
            str(tmp_path / "nope.png"),
            "--out",
            str(tmp_path / "o.png"),
        ],
        env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nope.png" in proc.stderr
    assert gateway.requests == []


OTHER = images.png_bytes(40, 24, noise=True, seed=5)


def test_edit_from_a_replaced_image_uploads_it(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    first = tmp_path / "cabin.png"
    gateway.enqueue(image_reply(PNG, resp_id="resp_old"))
    assert (
        run_cli(["--prompt", "a", "--out", str(first), "--sidecar", "--store"], env).returncode == 0
    )
    first.write_bytes(OTHER)  # e.g. rerun with --force and no --sidecar: the sidecar is stale
    gateway.enqueue(image_reply(PNG))
    second = tmp_path / "cabin2.png"
    proc = run_cli(["--prompt", "b", "--edit-from", str(first), "--out", str(second)], env)
    assert proc.returncode == 0, report(proc, gateway)
    body = gateway.posts()[1].json
    assert body is not None
    assert "previous_response_id" not in body
    content = body["input"][0]["content"]
    assert [c["type"] for c in content] == ["input_text", "input_image"]
    url = content[1]["image_url"]
    assert base64.b64decode(url.split(",", 1)[1]) == OTHER
