"""End-to-end tests of the issue-4 features: variants (--n), batches, live previews, the
metadata sidecar, --edit-from, --doctor/--probe, the Images API fallback and the --help examples.

Every test runs ``generate_gateway_image.py`` as a subprocess (``run_cli``) against the loopback
test gateway and checks the exit code, stdout/stderr, the requests the gateway recorded (with
their timestamps where concurrency matters) and the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    clean_env,
    closed_port,
    decode_data_url,
    image_reply,
    leftovers,
    run_cli,
    write_codex_home,
)
from tests.gateway import (
    Gateway,
    Recorded,
    Reply,
    error_reply,
    image_events,
    image_item,
    json_reply,
    raw_reply,
    response_obj,
    sse_reply,
    text_only_events,
)

ReplyFn = Callable[[Recorded], Reply]


# --- helpers -------------------------------------------------------------------------------


def images_api_reply(data: bytes = PNG) -> Reply:
    return json_reply({"created": 1759354093, "data": [{"b64_json": images.b64(data)}]})


def slow(seconds: float, make: ReplyFn) -> ReplyFn:
    """A reply callable that waits ``seconds`` (after the request was recorded) first."""

    def reply(rec: Recorded) -> Reply:
        time.sleep(seconds)
        return make(rec)

    return reply


def prompt_of(rec: Recorded) -> str:
    assert rec.json is not None, rec.body[:200]
    return str(rec.json["input"][0]["content"][0]["text"])


def content_of(rec: Recorded) -> list[dict[str, Any]]:
    assert rec.json is not None
    return list(rec.json["input"][0]["content"])


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\n{proc.stderr}"


def assert_no_secret(proc: subprocess.CompletedProcess[str]) -> None:
    assert TEST_KEY not in proc.stdout
    assert TEST_KEY not in proc.stderr


def finished(recs: Sequence[Recorded]) -> list[Recorded]:
    for rec in recs:
        assert not math.isnan(rec.t_end), f"request #{rec.index} has no end time"
    return list(recs)


def max_in_flight(recs: Sequence[Recorded]) -> int:
    """The largest number of requests the gateway was serving at the same moment."""
    return max(sum(1 for o in recs if o.t_start <= r.t_start < o.t_end) for r in recs)


def stdout_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.strip()]


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


# --- 1. variants (--n) -----------------------------------------------------------------------


def test_n_variants_overlap_and_are_saved(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    served: list[bytes] = []
    lock = threading.Lock()

    def make(rec: Recorded) -> Reply:
        data = images.png_bytes(24 + rec.index, 16, noise=True, seed=rec.index)
        with lock:
            served.append(data)
        return image_reply(data, resp_id=f"resp_{rec.index}")

    gateway.set_default(slow(0.5, make))
    out = tmp_path / "out.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--n", "3"], env)
    assert_ok(proc)
    recs = finished(gateway.posts())
    assert len(recs) == 3 == len(gateway.requests), gateway.dump()
    # all three were in flight at once: every request started before any finished
    assert max(r.t_start for r in recs) < min(r.t_end for r in recs), gateway.dump()
    for rec in recs:
        assert prompt_of(rec) == "a fox"
    paths = [tmp_path / f"out-{i}.png" for i in (1, 2, 3)]
    written = [p.read_bytes() for p in paths]
    assert sorted(written) == sorted(served)
    assert len(set(written)) == 3
    assert not out.exists()
    lines = stdout_lines(proc)
    assert len(lines) == 3, proc.stdout
    assert {line.split("\t")[1] for line in lines} == {str(p) for p in paths}
    assert all(line.startswith("ok\t") for line in lines), proc.stdout
    assert leftovers(tmp_path) == []
    assert_no_secret(proc)


def test_n_one_variant_fails(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    def make(rec: Recorded) -> Reply:
        if rec.index == 1:
            return error_reply(400, "this variant was refused by the test gateway")
        return image_reply(images.png_bytes(20, 20, noise=True, seed=rec.index))

    gateway.set_default(slow(0.3, make))
    out = tmp_path / "v.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--n", "3"], env)
    assert proc.returncode == 4, proc.stderr
    assert len(gateway.posts()) == 3, gateway.dump()  # a 400 is not retried
    paths = [tmp_path / f"v-{i}.png" for i in (1, 2, 3)]
    existing = [p for p in paths if p.exists()]
    missing = [p for p in paths if not p.exists()]
    assert len(existing) == 2 and len(missing) == 1
    lines = stdout_lines(proc)
    assert len(lines) == 3, proc.stdout
    failed = [line for line in lines if line.startswith("failed\t")]
    ok = [line for line in lines if line.startswith("ok\t")]
    assert len(failed) == 1 and len(ok) == 2, proc.stdout
    assert failed[0].split("\t")[1] == str(missing[0])
    assert "exit 4" in failed[0] and "refused by the test gateway" in failed[0]
    assert {line.split("\t")[1] for line in ok} == {str(p) for p in existing}
    assert leftovers(tmp_path) == []


def test_n_warnings_name_their_variant(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    def make(rec: Recorded) -> Reply:
        if rec.index < 2:
            return error_reply(503, "busy", type_="server_error")
        return image_reply()

    gateway.set_default(make)
    proc = run_cli(["--prompt", "a fox", "--out", "v.png", "--n", "2"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in proc.stderr.splitlines() if "attempt 1/3 failed" in line]
    assert len(retries) == 2, proc.stderr
    assert {line.split(": ", 2)[1] for line in retries} == {
        "variant 1 (v-1.png)",
        "variant 2 (v-2.png)",
    }, proc.stderr


def test_n_exit_code_is_the_worst(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    def make(rec: Recorded) -> Reply:
        if rec.index == 0:
            time.sleep(0.15)  # so both first requests are in before the 429 goes out
            return error_reply(400, "refused")  # exit 4
        if rec.index == 1:
            return sse_reply(text_only_events("I cannot draw that."))  # exit 5
        return image_reply()

    gateway.set_default(slow(0.3, make))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "w.png"), "--n", "3"], env)
    assert proc.returncode == 5, proc.stderr
    assert len(gateway.posts()) == 3
    assert sum(1 for p in tmp_path.glob("w-*.png")) == 1


@pytest.mark.parametrize("n", ["11", "0"])
def test_n_out_of_range(tmp_path: Path, gateway: Gateway, env: dict[str, str], n: str) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "x.png"), "--n", n], env)
    assert proc.returncode == 2, proc.stderr
    assert "--n" in proc.stderr
    assert gateway.requests == []
    assert list(tmp_path.glob("x*")) == []


# --- 2. batches ----------------------------------------------------------------------------


def write_batch(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_batch_mixed_jobs_one_failing(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    ref = images.png_bytes(32, 32, noise=True, seed=7)
    (tmp_path / "ref.png").write_bytes(ref)
    jpeg = images.jpeg_bytes(32, 24)
    served: dict[str, bytes] = {}
    lock = threading.Lock()

    def make(rec: Recorded) -> Reply:
        prompt = prompt_of(rec)
        if "FAIL" in prompt:
            return error_reply(400, "the test gateway refuses this prompt")
        fmt = rec.json["tools"][0].get("output_format", "png") if rec.json else "png"
        data = jpeg if fmt == "jpeg" else images.png_bytes(16, 16, noise=True, seed=len(prompt))
        with lock:
            served[prompt] = data
        return image_reply(data, output_format=fmt)

    gateway.set_default(make)
    batch = write_batch(
        tmp_path / "jobs.jsonl",
        [
            "# a comment line",
            '"a plain string prompt"',
            "",
            '{"prompt": "a tall cat", "size": "1024x1536"}',
            "   # an indented comment",
            '{"prompt": "custom name", "out": "named.png"}',
            json.dumps({"prompt": "with a reference", "image": (tmp_path / "ref.png").as_posix()}),
            '{"prompt": "a jpeg one", "format": "jpeg"}',
            '{"prompt": "this one will FAIL please"}',
        ],
    )
    out_dir = tmp_path / "out"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 4, proc.stderr
    posts = gateway.posts()
    assert len(posts) == 6 == len(gateway.requests), gateway.dump()
    by_prompt = {prompt_of(r): r for r in posts}
    assert set(by_prompt) == {
        "a plain string prompt",
        "a tall cat",
        "custom name",
        "with a reference",
        "a jpeg one",
        "this one will FAIL please",
    }
    assert by_prompt["a tall cat"].json["tools"][0]["size"] == "1024x1536"
    assert by_prompt["a plain string prompt"].json["tools"][0]["size"] == "1024x1024"
    assert by_prompt["a jpeg one"].json["tools"][0]["output_format"] == "jpeg"
    assert by_prompt["a plain string prompt"].json["tools"][0]["output_format"] == "png"
    ref_content = content_of(by_prompt["with a reference"])
    assert len(ref_content) == 2 and ref_content[1]["type"] == "input_image"
    assert decode_data_url(ref_content[1]["image_url"]) == ref
    assert all(len(content_of(r)) == 1 for p, r in by_prompt.items() if p != "with a reference")

    expected = {
        "001-a-plain-string-prompt.png": "a plain string prompt",
        "002-a-tall-cat.png": "a tall cat",
        "named.png": "custom name",
        "004-with-a-reference.png": "with a reference",
        "005-a-jpeg-one.jpg": "a jpeg one",
    }
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(expected)
    for name, prompt in expected.items():
        assert (out_dir / name).read_bytes() == served[prompt], name
    assert (out_dir / "005-a-jpeg-one.jpg").read_bytes() == jpeg

    lines = stdout_lines(proc)
    assert len(lines) == 6, proc.stdout
    names = [*expected, "006-this-one-will-fail-please.png"]
    for line, name in zip(lines, names):  # one line per job, in file order
        status, path, _ = line.split("\t", 2)
        assert Path(path) == out_dir / name
        assert status == ("failed" if "fail" in name else "ok"), line
    assert "refuses this prompt" in lines[-1] and "exit 4" in lines[-1]
    assert "006-this-one-will-fail-please.png" in proc.stderr  # the failing job is named
    assert leftovers(tmp_path) == []
    assert_no_secret(proc)


def test_batch_json_lines_and_exit_0_when_all_succeed(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(lambda rec: image_reply())
    batch = write_batch(tmp_path / "b.jsonl", ['"one"', '{"prompt": "two"}', "three"])
    out_dir = tmp_path / "o"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir), "--json"], env)
    assert_ok(proc)
    assert len(gateway.posts()) == 3
    records = [json.loads(line) for line in stdout_lines(proc)]
    assert len(records) == 3, proc.stdout
    assert [r["ok"] for r in records] == [True, True, True]
    assert [Path(r["path"]).name for r in records] == [
        "001-one.png",
        "002-two.png",
        "003-three.png",
    ]
    assert [r["prompt"] for r in records] == ["one", "two", "three"]
    for r in records:
        assert Path(r["path"]).read_bytes() == PNG
        assert r["bytes"] == len(PNG)


def test_batch_json_lines_with_a_failure(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    def make(rec: Recorded) -> Reply:
        if "FAIL" in prompt_of(rec):
            return error_reply(400, "refused")
        return image_reply()

    gateway.set_default(make)
    batch = write_batch(tmp_path / "b.jsonl", ['"fine"', '"FAIL now"'])
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o"), "--json"], env)
    assert proc.returncode == 4, proc.stderr
    records = [json.loads(line) for line in stdout_lines(proc)]
    assert [r["ok"] for r in records] == [True, False]
    assert records[1]["exit_code"] == 4 and "refused" in records[1]["error"]
    assert not (tmp_path / "o" / "002-fail-now.png").exists()


def test_batch_bad_lines_send_nothing(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(lambda rec: image_reply())
    missing = (tmp_path / "missing.png").as_posix()
    batch = write_batch(
        tmp_path / "bad.jsonl",
        [
            "# header",  # 1
            '{"prompt": "good one"}',  # 2
            '{"prompt": "broken"',  # 3: invalid JSON
            '{"prompt": "x", "colour": "red"}',  # 4: unknown key
            json.dumps({"prompt": "y", "image": missing}),  # 5: missing image file
            '{"prompt": "z", "size": 1024}',  # 6: wrong type
            '"a fine string"',  # 7
            '{"size": "1024x1024"}',  # 8: no prompt
        ],
    )
    out_dir = tmp_path / "out"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 2, proc.stderr
    for lineno in (3, 4, 5, 6, 8):
        assert f"{batch}:{lineno}:" in proc.stderr, (lineno, proc.stderr)
    for lineno in (1, 2, 7):
        assert f"{batch}:{lineno}:" not in proc.stderr
    assert "colour" in proc.stderr and "missing.png" in proc.stderr
    assert gateway.requests == []
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    assert proc.stdout == ""


def test_batch_bare_json_array_line_is_rejected(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """A JSON array is neither a prompt string nor an object: reporting it beats sending
    '[1, 2]' as a prompt."""
    gateway.set_default(lambda rec: image_reply())
    batch = write_batch(tmp_path / "arr.jsonl", ['"ok"', "[1, 2]"])
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert proc.returncode == 2, proc.stderr
    assert f"{batch}:2:" in proc.stderr
    assert gateway.requests == []


def test_batch_deeply_nested_line_is_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(lambda rec: image_reply())
    deep = '{"prompt": "x", "n": ' + "[" * 100_000 + "]" * 100_000 + "}"
    batch = write_batch(tmp_path / "deep.jsonl", ['"ok"', deep])
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert proc.returncode == 2, proc.stderr
    assert f"{batch}:2: invalid JSON: nested too deeply" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert gateway.requests == []


def test_batch_concurrency_is_bounded(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(slow(0.4, lambda rec: image_reply()))
    batch = write_batch(tmp_path / "c.jsonl", ['"a"', '"b"', '"c"', '"d"'])
    out_dir = tmp_path / "o"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir), "--concurrency", "2"], env)
    assert_ok(proc)
    recs = finished(gateway.posts())
    assert len(recs) == 4
    assert max_in_flight(recs) == 2, gateway.dump()
    assert len(list(out_dir.iterdir())) == 4


def test_batch_concurrency_out_of_range(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    batch = write_batch(tmp_path / "c.jsonl", ['"a"'])
    proc = run_cli(
        ["--batch", str(batch), "--out-dir", str(tmp_path / "o"), "--concurrency", "17"], env
    )
    assert proc.returncode == 2, proc.stderr
    assert gateway.requests == []


def test_batch_429_slows_every_job(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    def make(rec: Recorded) -> Reply:
        if rec.index == 0:
            time.sleep(0.15)  # so both first requests are in before the 429 goes out
            return error_reply(
                429, "Rate limit reached", code="rate_limit_exceeded", headers={"Retry-After": "1"}
            )
        time.sleep(0.3)
        return image_reply()

    gateway.set_default(make)
    batch = write_batch(tmp_path / "r.jsonl", ['"a"', '"b"', '"c"'])
    out_dir = tmp_path / "o"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir), "--concurrency", "2"], env)
    assert_ok(proc)
    recs = finished(gateway.posts())
    assert len(recs) == 4, gateway.dump()  # three jobs + one retry
    limited = recs[0]
    assert recs[1].t_start < limited.t_end, gateway.dump()
    later = [r for r in recs if r.t_start > limited.t_end]
    # the retry and the third job both start after the 429 answer...
    assert len(later) == 2, gateway.dump()
    # ...and neither before Retry-After has passed (the third job was free after ~0.3 s)
    for rec in later:
        assert rec.t_start - limited.t_end >= 0.8, gateway.dump()
    assert len(list(out_dir.iterdir())) == 3


# --- 3. live previews ----------------------------------------------------------------------

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


# --- 4. sidecar ----------------------------------------------------------------------------


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


# --- 5. --edit-from ------------------------------------------------------------------------

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


# --- 6. --doctor / --probe -----------------------------------------------------------------


def doctor_lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """{check name: status} from the doctor's stdout lines 'STATUS  NAME  detail'."""
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("ok", "failed", "note"):
            found.setdefault(words[1], words[0])
    return found


def models_reply() -> Reply:
    return json_reply({"object": "list", "data": [{"id": "gpt-5.5", "object": "model"}]})


def test_doctor_healthy(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    proc = run_cli(["--doctor"], env)
    assert_ok(proc)
    checks = doctor_lines(proc)
    for name in ("config", "endpoint", "key", "dns", "tcp", "models"):
        assert checks.get(name) == "ok", (name, proc.stdout)
    assert "failed" not in checks.values()
    assert_no_secret(proc)
    assert gateway.url + "/v1/responses" in proc.stdout
    assert [(r.method, r.path) for r in gateway.requests] == [("GET", "/v1/models")]
    assert gateway.requests[0].header("authorization") == "Bearer " + TEST_KEY
    assert gateway.posts() == []


def test_doctor_unauthenticated(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(
        error_reply(401, "Incorrect API key provided", code="invalid_api_key"), path="/v1/models"
    )
    proc = run_cli(["--doctor"], env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert doctor_lines(proc).get("models") == "failed", proc.stdout
    assert "401" in proc.stdout
    assert_no_secret(proc)
    assert gateway.posts() == []


def test_doctor_unreachable(tmp_path: Path) -> None:
    port = closed_port()
    home = write_codex_home(tmp_path / "ch", f"http://127.0.0.1:{port}/v1")
    proc = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    checks = doctor_lines(proc)
    assert checks.get("tcp") == "failed", proc.stdout
    assert checks.get("dns") == "ok"
    assert f"127.0.0.1:{port}" in proc.stdout
    assert_no_secret(proc)


def test_doctor_probe_ok(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    proc = run_cli(["--doctor", "--probe"], env)
    assert_ok(proc)
    assert doctor_lines(proc).get("probe") == "ok", proc.stdout
    (rec,) = gateway.posts()
    assert rec.json is not None
    assert rec.json["stream"] is True
    assert rec.json["tool_choice"] == {"type": "image_generation"}
    assert rec.json["tools"][0]["type"] == "image_generation"
    assert_no_secret(proc)


def test_doctor_probe_tool_choice_rejected(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(
        error_reply(
            400, "tool_choice of type 'image_generation' is not supported", param="tool_choice"
        )
    )
    proc = run_cli(["--doctor", "--probe"], env)
    assert proc.returncode != 0
    assert doctor_lines(proc).get("probe") == "failed", proc.stdout
    probe_line = next(line for line in proc.stdout.splitlines() if "probe" in line.split()[:2])
    assert "tool_choice" in probe_line
    assert len(gateway.posts()) == 1


def test_doctor_probe_sends_nothing_where_codex_would_not(tmp_path: Path, gateway: Gateway) -> None:
    """env_key names an unset variable: Codex refuses and sends nothing, so the probe (an image
    request) is skipped instead of going out without a credential."""
    home = write_codex_home(
        tmp_path / "h", gateway.base_url, key=None, extra_provider='env_key = "GW_UNSET_KEY"'
    )
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    proc = run_cli(["--doctor", "--probe"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert doctor_lines(proc).get("key") == "failed", proc.stdout
    assert doctor_lines(proc).get("probe") == "note", proc.stdout
    assert gateway.posts() == []


def test_doctor_without_probe_sends_no_post(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    assert_ok(run_cli(["--doctor"], env))
    assert gateway.posts() == []


def test_probe_without_doctor_says_so(gateway: Gateway, env: dict[str, str]) -> None:
    for extra in ([], ["--prompt", "p", "--out", "p.png"]):
        proc = run_cli(["--probe", *extra], env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: --probe needs --doctor"), proc.stderr
    assert gateway.requests == []


# --- 7. Images API -------------------------------------------------------------------------

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


# --- 8. --help -----------------------------------------------------------------------------


def test_help_examples_section() -> None:
    proc = run_cli(["--help"])
    assert_ok(proc)
    assert "examples:" in proc.stdout
    examples = proc.stdout.split("examples:", 1)[1]
    for flag in ("--batch", "--n", "--edit-from", "--doctor"):
        assert flag in examples, (flag, examples)
