"""Several images in one run: variants (--n) and batches (--batch, a JSON-lines file of jobs),
their concurrency, their shared retry policy, their exit codes, their --json lines and where
their outputs may go.

Every test runs ``generate_gateway_image.py`` as a subprocess (``run_cli``) against the loopback
test gateway and checks the exit code, stdout/stderr, the requests the gateway recorded (with
their timestamps where concurrency matters) and the files on disk.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests import images
from tests.conftest import (
    PNG,
    SCRIPT,
    assert_no_secret,
    assert_ok,
    content_of,
    decode_data_url,
    event_index,
    image_reply,
    leftovers,
    prompt_of,
    report,
    run_cli,
    slow,
    stdout_lines,
)
from tests.gateway import (
    Gateway,
    Recorded,
    Reply,
    error_reply,
    image_events,
    sse_reply,
    text_only_events,
)

# --- helpers -------------------------------------------------------------------------------


def finished(recs: Sequence[Recorded]) -> list[Recorded]:
    for rec in recs:
        assert not math.isnan(rec.t_end), f"request #{rec.index} has no end time"
    return list(recs)


def max_in_flight(recs: Sequence[Recorded]) -> int:
    """The largest number of requests the gateway was serving at the same moment."""
    return max(sum(1 for o in recs if o.t_start <= r.t_start < o.t_end) for r in recs)


# --- variants (--n) -----------------------------------------------------------------------


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


# --- batches ----------------------------------------------------------------------------


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


def test_batch_out_outside_out_dir_is_refused_per_line(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    bad = ["../x.png", "/tmp/x.png", "sub/../../x.png", "\\evil.png", "sub/..", "."]
    lines = ['{"prompt": "fine", "out": "fine.png"}']
    lines += [json.dumps({"prompt": f"job {i}", "out": name}) for i, name in enumerate(bad)]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out_dir = tmp_path / "renders"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert f"{len(bad)} bad line(s)" in proc.stderr, proc.stderr
    for lineno, name in enumerate(bad, 2):
        matching = [line for line in proc.stderr.splitlines() if f"{batch}:{lineno}:" in line]
        assert len(matching) == 1, proc.stderr
        assert repr(name) in matching[0] and "inside --out-dir" in matching[0], matching[0]
    assert f"{batch}:1:" not in proc.stderr
    assert gateway.requests == []
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_batch_out_in_a_subfolder_is_accepted(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a fox", "out": "sub/ok.png"}\n', encoding="utf-8")
    out_dir = tmp_path / "renders"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (out_dir / "sub" / "ok.png").read_bytes() == PNG
    assert len(gateway.posts()) == 1
    assert leftovers(tmp_path) == []


def test_batch_files_that_give_no_jobs_are_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    jobs = write_batch(tmp_path / "jobs.jsonl", ["# only a comment", ""])
    out_dir = str(tmp_path / "out")
    for args, words in (
        (["--batch", str(jobs)], "--batch needs --out-dir DIR"),
        (["--batch", str(jobs), "--out-dir", out_dir], "no jobs (only blank or # lines)"),
        (["--batch", str(tmp_path), "--out-dir", out_dir], "a directory, not a regular file"),
    ):
        proc = run_cli(args, env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr, proc.stderr
    assert gateway.requests == []


def test_batch_refusal_for_existing_output_names_force(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "fox.png").write_bytes(b"mine")
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a", "out": "fox.png"}\n{"prompt": "b"}\n', encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 7, proc.stderr
    line = [x for x in proc.stderr.splitlines() if "fox.png" in x]
    assert line and "--force" in line[0], proc.stderr
    assert "hint: pass --force" in proc.stderr
    assert gateway.requests == []
    as_json = run_cli(["--batch", str(batch), "--out-dir", str(out_dir), "--json"], env)
    assert "--force" in json.loads(as_json.stdout)["hint"]


# --- what each line may set, and what a line may not do ----------------------------------------


def test_batch_line_options_reach_the_request(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(lambda rec: image_reply())
    ref = "http://127.0.0.1:9/ref.png"  # a reference the gateway would fetch: only sent here
    batch = write_batch(
        tmp_path / "b.jsonl",
        [
            json.dumps(
                {
                    "prompt": "tuned",
                    "format": "jpeg",
                    "compression": 40,
                    "moderation": "low",
                    "model": "gpt-line-model",
                    "image_model": "gpt-image-line",
                }
            ),
            json.dumps({"prompt": "one url", "image_url": ref}),
            json.dumps({"prompt": "two urls", "image_url": [ref, ref + "?2"]}),
        ],
    )
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert proc.returncode == 0, report(proc, gateway)
    by_prompt = {prompt_of(r): r for r in gateway.posts()}
    tuned = by_prompt["tuned"].json
    assert tuned is not None
    assert tuned["model"] == "gpt-line-model"
    tool = tuned["tools"][0]
    assert (tool["output_format"], tool["output_compression"]) == ("jpeg", 40)
    assert (tool["moderation"], tool["model"]) == ("low", "gpt-image-line")
    urls = {
        p: [c["image_url"] for c in content_of(by_prompt[p])[1:]] for p in ("one url", "two urls")
    }
    assert urls == {"one url": [ref], "two urls": [ref, ref + "?2"]}


def test_batch_line_with_a_value_outside_its_choices(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    batch = write_batch(tmp_path / "b.jsonl", ['"fine"', '{"prompt": "x", "quality": "ultra"}'])
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"{batch}:2: quality='ultra' is not one of low, medium, high, xhigh, max, auto"
        in proc.stderr
    )
    assert f"{batch}:1:" not in proc.stderr
    assert gateway.requests == []


def test_batch_lines_that_write_the_same_file(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    batch = write_batch(
        tmp_path / "b.jsonl",
        ['{"prompt": "a", "out": "same.png"}', '"b"', '{"prompt": "c", "out": "same.png"}'],
    )
    out_dir = tmp_path / "o"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 2, proc.stderr
    assert f"{batch}:3: writes same.png, like line 1" in proc.stderr
    assert gateway.requests == []
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_batch_without_usage_prints_no_token_total(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    def no_usage(rec: Recorded) -> Reply:
        events = image_events(images.b64(PNG))
        for event in events:
            if isinstance(event.get("response"), dict):
                event["response"].pop("usage", None)
                event["response"].pop("tool_usage", None)
        return sse_reply(events)

    batch = write_batch(tmp_path / "b.jsonl", ['"one"', '"two"'])
    args = ["--batch", str(batch), "--out-dir", str(tmp_path / "o")]
    gateway.set_default(no_usage)
    bare = run_cli(args, env)
    assert_ok(bare)
    assert len(stdout_lines(bare)) == 2
    assert "tokens in total" not in bare.stderr
    gateway.set_default(lambda rec: image_reply())
    counted = run_cli([*args, "--force"], env)
    assert_ok(counted)
    assert "tokens in total for 2 images: main model " in counted.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to one process is POSIX")
@pytest.mark.parametrize("one_gone", [False, True], ids=["both-there", "one-deleted"])
def test_batch_terminated_while_images_wait_leaves_no_temp_files(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], one_gone: bool
) -> None:
    """Both jobs have their image in a temporary file (the answers stall before they end) when
    the run is terminated: the worker threads die with it, so main() removes their files (one
    that someone else deleted meanwhile is simply skipped)."""
    events = image_events(images.b64(PNG))
    stall = event_index(events, "response.output_item.done") + 1
    gateway.set_default(lambda rec: sse_reply(events, stall_after=stall))
    batch = write_batch(tmp_path / "b.jsonl", ['"one"', '"two"'])
    out_dir = tmp_path / "o"
    args = ["--batch", str(batch), "--out-dir", str(out_dir), "--concurrency", "2", "--json"]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        deadline = time.monotonic() + 20
        while len(leftovers(tmp_path)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, gateway.dump()
            time.sleep(0.05)
        if one_gone:
            (out_dir / leftovers(tmp_path)[0]).unlink()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "error: terminated" in err and "Traceback" not in err
    assert json.loads(out) == {
        "ok": False,
        "exit_code": 143,
        "error": "terminated",
        "hint": "search references/troubleshooting.md (beside this script) for the error line",
    }
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out_dir.iterdir()) == []
