"""Checks of a new setup: a malformed --header is the user's typo (exit 2, nothing sent), one in
the configuration stays a configuration error (exit 3); the warning that the key would travel
unencrypted shows on --dry-run and --doctor too, where users look first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import images
from tests.conftest import TEST_KEY, clean_env, report, run_cli, write_codex_home
from tests.gateway import ForwardProxy, Gateway, image_events, sse_reply
from tests.hostile import leaks

PLAIN_HTTP = "http://gateway.example.com/v1"  # never contacted: dry runs, or through a proxy


@pytest.mark.parametrize(
    "header",
    ["Bad(Name): v", "X-A b: v", "Ünïcode: v", "X-A: one\x01two", "X-A: \x1b[2J", "no colon"],
)
def test_malformed_header_on_the_command_line_is_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], header: str
) -> None:
    for extra in ([], ["--dry-run"], ["--doctor"]):
        args = ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--header", header, *extra]
        proc = run_cli(args, env)
        assert proc.returncode == 2, report(proc, gateway)
        assert proc.stderr.startswith("error: ") and "--header" in proc.stderr, proc.stderr
        assert "\x1b" not in proc.stderr
    assert gateway.requests == []


def test_a_header_without_colon_is_not_echoed(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """'Authorization Bearer KEY' (the colon forgotten) must not print the key."""
    args = ["--prompt", "p", "--out", str(tmp_path / "o.png")]
    proc = run_cli([*args, "--header", f"Authorization Bearer {TEST_KEY}x"], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert leaks(TEST_KEY, proc.stdout, proc.stderr) == []


@pytest.mark.parametrize(
    "table", ['http_headers = { "Bad Name" = "v" }', 'http_headers = { "X-A" = "one\\ntwo" }']
)
def test_malformed_header_in_the_configuration_stays_exit_3(
    tmp_path: Path, gateway: Gateway, table: str
) -> None:
    home = write_codex_home(tmp_path / "home", gateway.base_url, extra_provider=table)
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert proc.returncode == 3, report(proc, gateway)
    assert "configuration" in proc.stderr, proc.stderr
    assert gateway.requests == []


def test_plain_http_warning_on_dry_run(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "home", PLAIN_HTTP)
    args = ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"]
    proc = run_cli(args, clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 0, report(proc)
    assert (
        "warning: the API key would be sent unencrypted over http:// to gateway.example.com"
        in proc.stderr
    ), proc.stderr


def test_plain_http_warning_in_doctor(tmp_path: Path, gateway: Gateway) -> None:
    """Through a loopback proxy, so the doctor never reaches the named host."""
    home = write_codex_home(tmp_path / "home", PLAIN_HTTP)
    with ForwardProxy(gateway) as proxy:
        env = clean_env(CODEX_HOME=str(home), HTTP_PROXY=proxy.url, NO_PROXY="")
        proc = run_cli(["--doctor"], env)
    assert "endpoint" in proc.stdout, report(proc)
    assert (
        "warning: the API key will be sent unencrypted over http:// to gateway.example.com"
        in proc.stderr
    ), proc.stderr
    assert leaks(TEST_KEY, proc.stdout, proc.stderr) == []


def test_no_plain_http_warning_for_loopback(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, report(proc)
    assert "unencrypted" not in proc.stderr, proc.stderr


def test_plain_http_warning_on_a_real_run(tmp_path: Path, gateway: Gateway) -> None:
    """Through a loopback proxy that forwards to the test gateway whatever host is named."""
    home = write_codex_home(tmp_path / "home", PLAIN_HTTP)
    gateway.enqueue(sse_reply(image_events(images.b64(images.png_bytes(8, 8)))))
    with ForwardProxy(gateway) as proxy:
        env = clean_env(CODEX_HOME=str(home), HTTP_PROXY=proxy.url, NO_PROXY="")
        proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert proxy.lines == ["POST http://gateway.example.com/v1/responses HTTP/1.1"]
    assert (
        "warning: the API key will be sent unencrypted over http:// to gateway.example.com"
        in proc.stderr
    ), proc.stderr
