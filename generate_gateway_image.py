#!/usr/bin/env python3
"""Generate or edit an image through the Responses gateway that Codex CLI is configured for.

Pipeline: Codex's config layers + credentials -> JSON request -> POST {base_url}/responses
          over http.client (SSE, or JSON) -> image_generation_call.result (base64, streamed to
          disk as it arrives) -> validated image file, put in place without clobbering

Front doors over one job runner: the command line (one image, --n variants, --batch),
--doctor, and --mcp (an MCP server over stdio for Codex and Claude Code).

Sections follow that path, each using only those above it: constants, errors, text safety,
input files, configuration, request, transport, answers (gateway dialects made canonical),
results (sink and collector), exchange (one attempt), exchange policy (the plan, the quirk
table, decide()), output, job runner, doctor, MCP server, CLI, entry point.

Usage:
  python3 generate_gateway_image.py --prompt "a red fox in snow" --out fox.png
  python3 generate_gateway_image.py --prompt "make it night" --image fox.png --action edit \
      --out fox-night.png
  python3 generate_gateway_image.py --help

Exit codes:
  0  the image was saved
  1  internal error (a bug: rerun with --verbose and report it)
  2  bad arguments or input files (nothing was sent)
  3  configuration or credentials (missing/invalid config, no key, HTTP 401/403)
  4  the gateway answered with an error or something unreadable
  5  no image came back (moderation block, refusal, the model answered in text)
  6  network (DNS, connect, TLS, timeout)
  7  the output could not be written (a paid image is saved to a rescue file)
  130/143  interrupted (Ctrl-C) / terminated (SIGTERM); temporary files are removed

Standard library only (plus tomli on Python < 3.11). Python 3.9+.
"""

from __future__ import annotations

import binascii
import errno
import io
import json
import os
import re
import shlex
import signal
import stat
import struct
import sys
import threading
import time
import zlib

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings at run time
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from typing import IO, Any, Callable, NoReturn

__version__ = "0.1.0"


# =============================================================================================
# 1. Constants: defaults, allowed values and limits
# =============================================================================================

PROG = "generate_gateway_image.py"
USER_AGENT = "codex-gateway-imagegen/{} (Python {}.{}; {})".format(
    __version__, *sys.version_info[:2], sys.platform
)

DEFAULT_MODEL = "gpt-5.5"
DEFAULT_SIZE = "1024x1024"
DEFAULT_PROVIDER = "openai"
DEFAULT_IMAGES_MODEL = "gpt-image-2"  # what Codex's own image tool asks the Images API for
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
BUILTIN_PROVIDER_URLS = {
    "ollama": "http://localhost:11434/v1",
    "lmstudio": "http://localhost:1234/v1",
}
BUILTIN_PROVIDER_IDS = ("openai", "ollama", "lmstudio", "amazon-bedrock")
CHATGPT_BASE_URL = "https://chatgpt.com/backend-api/codex"  # built-in provider, ChatGPT login
KEY_COMMAND_TIMEOUT = 5.0  # auth.command's default timeout_ms, as in Codex
# Config layers as Codex stacks them: system < user < profile < managed (administrator's, wins).
# The test-only variable points both system files at another folder, so tests never touch /etc.
SYSTEM_CONFIG_DIR_ENV = "CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR"
SYSTEM_CONFIG_DIR_UNIX = "/etc/codex"
SYSTEM_CONFIG_DIR_WINDOWS = ("OpenAI", "Codex")  # under %ProgramData%
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # config.toml, a profile, managed_config.toml or auth.json
MAX_CONFIG_DEPTH = 64  # nested tables/arrays; a real Codex config is a few levels deep
MAX_KEY_COMMAND_OUTPUT = 64 * 1024  # auth.command's stdout: a token, not a file
PROVIDER_KEYS = frozenset(  # ModelProviderInfo in Codex 0.171.0; others are warned about
    (
        "name base_url env_key env_key_instructions experimental_bearer_token auth aws "
        "wire_api query_params http_headers env_http_headers request_max_retries "
        "stream_max_retries stream_idle_timeout_ms websocket_connect_timeout_ms "
        "requires_openai_auth supports_websockets model_catalog_url gateway_oauth "
        "supports_standalone_web_search capabilities include_internal_metadata"
    ).split()
)
# Codex 0.171.0 knows these but they need credentials a standard-library script cannot mint
VERTEX_PROVIDER_IDS = ("vertex", "vertex-ai", "vertexai", "google-vertex", "google-vertex-ai")
VERTEX_PROVIDER_KEYS = ("project_id", "location", "credential_file")
# Codex offers its own image tool to a custom provider that sends this header
CODEX_IMAGE_TOOL_HEADER = "x-openai-actor-authorization"
KNOWN_GOOD_SIZES = ("1024x1024", "1024x1536", "1536x1024")

ACTIONS = ("auto", "generate", "edit")
QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
BACKGROUNDS = ("transparent", "opaque", "auto")
FORMATS = ("png", "jpeg", "webp", "gif", "svg")
MODERATIONS = ("auto", "low")
FIDELITIES = ("low", "high")
DETAILS = ("auto", "low", "high", "original")
EXTENSION_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
    ".gif": "gif",
    ".svg": "svg",
}
MIME_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
INPUT_IMAGE_KINDS = ("png", "jpeg", "webp", "gif")

# gpt-image-2 size rules (OpenAI image generation guide)
SIZE_MULTIPLE = 16
SIZE_MAX_EDGE = 3840
SIZE_MAX_RATIO = 3.0
SIZE_MIN_PIXELS = 655_360
SIZE_MAX_PIXELS = 8_294_400

MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024
MAX_USAGE_KEYS = 32  # fields kept from a usage object (real ones have five)
MAX_INPUT_IMAGES = 16
# Inputs are regular files (a pipe only where one is natural: --prompt -, --prompt-file <(cmd),
# --batch -), read up to these caps; beyond them the run is exit 2 before anything is read whole
MAX_PROMPT_BYTES = 1024 * 1024  # a prompt, from any source (the model takes far less)
MAX_BATCH_BYTES = 16 * 1024 * 1024  # a --batch file
MAX_BATCH_LINE_BYTES = MAX_PROMPT_BYTES + 64 * 1024  # one batch line: a prompt and its options
# Linux pseudo file systems: their "regular" files are made up on read (/proc/kcore, /sys/...)
PSEUDO_FILE_ROOTS = ("/proc/", "/sys/", "/dev/")

DEFAULT_RETRIES = 2
DEFAULT_TIMEOUT = 900.0  # total budget, retries and waits included
DEFAULT_IDLE_TIMEOUT = 300.0  # no byte from the gateway for this long
DEFAULT_CONNECT_TIMEOUT = 30.0
RETRY_AFTER_CAP = 120.0  # longer Retry-After values are not honoured (same as the OpenAI SDK)
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
RETRY_STATUSES = (408, 409, 429)
# A relay's own 5xx (not an OpenAI error) to a streamed request: Portkey fails every streamed
# request this way after the upstream delivered the image. Retried once without streaming.
RELAY_FAILURE_STATUSES = (500, 502, 503)
# Signs that the gateway already retried a failed request itself (LiteLLM with num_retries
# does, 3 tries each): its x-litellm-* headers, or an error that says its retries ran out.
# The script then does not repeat a paid request: at most 1 + --retries paid attempts in all.
RELAY_RETRY_HEADER_PREFIXES = ("x-litellm-",)
# A relay that lost its upstream mid-stream may say so as the response's own failure (LiteLLM:
# response.failed, server_error, "Response payload is not completed"): the stored response may
# still be running upstream, so --resumable fetches it (a GET) instead of paying again
RELAY_CUT_WORDS = (
    r"payload is not completed|apiconnectionerror|transferencodingerror|connection (?:error|"
    r"reset|closed|aborted|lost)|server disconnected|peer closed|incomplete (?:read|chunked)"
)
RELAY_RETRIED_WORDS = (
    r"retr(?:y|ies)\W+(?:\w+\W+){0,3}(?:exhausted|exceeded|used up|failed)"
    r"|(?:retried|after)\W+\d+\W+(?:times|retries|attempts)|max(?:imum)? retries"
)

SVG_SCAN_OVERLAP = 4096  # bytes kept between chunks when scanning an SVG for scripts
MAX_SIDECAR_BYTES = 1024 * 1024  # a bigger OUT.json is not one of our sidecars
RESCUE_PREFIX = "codex-imagegen-rescue-"  # + 12 random hex digits + .ext, in the temp folder
# errno values of os.link on file systems without hard links (FAT, some network shares;
# Windows reports an unsupported link as EINVAL)
NO_HARD_LINKS = ("EPERM", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EMLINK", "EXDEV", "EACCES", "EINVAL")
# Background mode (--resumable, --resume): the gateway keeps the response; we poll or resume it
TERMINAL_STATUSES = ("completed", "failed", "incomplete", "cancelled")
POLL_FIRST = 1.0  # seconds before the first poll of a queued response, doubling up to...
POLL_MAX = 10.0
# Resuming a broken stream of a stored response is free but not unlimited: successive resumes
# of one image wait RESUME_FIRST seconds, doubling up to RESUME_MAX, and stop after MAX_RESUMES
RESUME_FIRST = 0.5
RESUME_MAX = 8.0
MAX_RESUMES = 20
# Response ids as gateways make them: LiteLLM's are about 400 characters (it encodes its routing
# into them). Longer ones are neither fetched, resumed nor accepted by --resume.
RESPONSE_ID_MAX = 1024
# Image-tool options a relay may reject with a 400 naming them; each is dropped once
DROPPABLE_TOOL_OPTIONS = (
    "quality",
    "input_fidelity",
    "background",
    "output_compression",
    "moderation",
    "partial_images",
)
# Image URLs in an answer (a third-party address): downloaded without the gateway's headers
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 5

# A local disk that refuses a write (full, over quota, read-only, failing, file too large): exit 7,
# never a network error. Long answer values spool beside the image, else in the temp folder, else
# in memory (at most MAX_STRING_CHARS), so a full disk never loses an image that is arriving.
DISK_FAULTS = tuple(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG")
    if hasattr(errno, name)
)
TEMP_NAME_EXTRA = len(".") + len(".") + 12 + len(".part")  # .NAME.<12 hex>.part beside --out
READ_CHUNK = 256 * 1024
B64_CHUNK = 4 * 128 * 1024  # base64 characters decoded per step (a multiple of 4)
MAX_ERROR_BODY = 2 * 1024 * 1024
# Limits on what a gateway may send (anything beyond is exit 4, never a MemoryError):
MAX_IMAGE_BYTES = 128 * 1024 * 1024  # a decoded image (3840x2160 noise PNG: about 25 MB)
MAX_STRING_CHARS = MAX_IMAGE_BYTES // 3 * 4 + 4096  # one JSON string value (base64, data: URL)
MAX_EVENT_BYTES = 8 * 1024 * 1024  # an SSE event or JSON body, not counting long strings
MAX_LONG_STRINGS = 64  # strings of BLOB_MIN characters or more in one event or body
MAX_LONG_STRING_TOTAL = 2 * MAX_STRING_CHARS  # their characters in all (two copies of an image)
MAX_PREVIEW_INDEX = 99  # partial_image_index values above this (or not integers) are ignored
MAX_MODEL_TEXT = 1024 * 1024  # characters of the model's text kept (shown, searched for links)
MAX_IMAGE_URLS = 16  # image URLs kept from one answer (the rest are ignored)
MAX_LINK_SEARCH = 64 * 1024  # characters of the model's text searched for bare image URLs
BLOB_MIN = 64 * 1024  # string values this long stream to a temporary file, not memory
# Header limits are http.client's own: 65,536 bytes a line and 100 headers (exit 4 beyond).
HEARTBEAT_SECONDS = 15.0
MAX_INFORMATIONAL = 16  # 102/103 answers skipped before the final one; more are exit 4
# After the image is safe, the stream is read on until response.completed (or its end) for at
# most this long, so a relay records a completed request and its usage, not a client abort
READ_TO_END_GRACE = 5.0

# Secrets and terminal safety (see redact() and sanitize())
SECRET_MIN_LENGTH = 6  # shorter values are not masked: they would mask ordinary words
SECRET_PIECE = 12  # any run of this many characters of a secret is masked too
SECRET_BLOCK = SECRET_PIECE // 2  # redact() finds pieces through blocks of this size
SECRET_EDGE = 4  # where we cut text short, a tail this long that begins a secret is masked too
MAX_SHOWN_URL = 500  # a URL from the gateway (a redirect's Location) is cut after this
MAX_GATEWAY_ID = 256  # image call ids and other gateway words kept (response ids: above)
# A response id we poll, resume and --resume accepts: printable ASCII without spaces, one URL
# path segment once percent-encoded; no "." or ".." part (a server that decodes %2F before it
# routes would walk out of /responses/), see usable_response_id()
RESPONSE_ID = rf"(?!\.*$)(?!(?:.*/)?\.\.?(?:/|$))[!-~]{{1,{RESPONSE_ID_MAX}}}"
# ...and one printed in a copy-paste --resume command: a plain token that no shell or cmd.exe
# acts on (no quotes, %, &, !, ^ or parentheses); others are named, not offered as a command
PLAIN_RESPONSE_ID = r"[A-Za-z0-9_.:=+/@-]+"
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an HTTP token (RFC 9110)
TOKEN_LIKE_LENGTH = 16  # in auth.command's own messages, longer words with a digit are masked
UNSAFE_FORMAT_CHARS = frozenset(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Codex's sandboxes, as the script meets them (references/troubleshooting.md, "Sandboxes")
WSAEACCES = 10013  # Windows: "access a socket in a way forbidden by its access permissions"
SANDBOX_ENV_VARS = ("CODEX_SANDBOX", "CODEX_SANDBOX_NETWORK_DISABLED")  # set by Codex's sandbox
SANDBOX_NETWORK_HINT = (
    "a sandbox blocks this command's network (Codex's workspace-write sandbox blocks all of it, "
    "127.0.0.1 included). Under codex exec: add -c sandbox_workspace_write.network_access=true "
    "(or [sandbox_workspace_write] network_access = true in config.toml), or use --sandbox "
    "danger-full-access, or call this tool through its MCP server (--mcp), which runs outside "
    "the sandbox; rerunning with escalated permissions works only where the approval policy "
    "allows it (the interactive TUI), not under codex exec"
)
READ_ONLY_HINT = (
    "the file system is read-only here, as in Codex's default read-only sandbox (codex exec), "
    "where no folder is writable: rerun with --sandbox workspace-write (its network also needs "
    "-c sandbox_workspace_write.network_access=true) or --sandbox danger-full-access, or call "
    "this tool through its MCP server (--mcp), which runs outside the sandbox"
)

TOOL_CHOICE_INSTRUCTIONS = (
    "Call the image_generation tool exactly once to produce the image the user describes. "
    "Do not answer with text only."
)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_GATEWAY = 4
EXIT_NO_IMAGE = 5
EXIT_NETWORK = 6
EXIT_OUTPUT = 7
EXIT_CANCELLED = 130  # an MCP call cancelled by its client (the CLI's Ctrl-C exit too)

# MCP server (--mcp): stdio JSON-RPC 2.0, one message per line
MCP_HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MCP_MODERN_VERSIONS = ("2026-07-28",)  # no handshake; each request names its version in _meta
MCP_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
MCP_SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
MCP_MAX_LINE = 4 * 1024 * 1024  # a request carries paths and a prompt, never image bytes
MCP_HEARTBEAT = 5.0  # progress notifications at least this often (clients time out at 60 s)
MCP_MAX_WAITING = 32  # calls queued beyond --concurrency; more are refused (a thread each)
MCP_PREVIEW_MAX = 256 * 1024  # largest image returned inline as a preview
MCP_EOF_GRACE = 1.0  # on stdin EOF: time for calls about to finish to answer anyway
MCP_SHUTDOWN_WAIT = 5.0  # then: time for the cancelled calls to remove their files
MCP_ROOTS_WAIT = 5.0  # a call waits this long for the client's answer to roots/list
MCP_MAX_ROOTS = 64  # workspace roots taken from a client's roots/list answer

CONFIG_EXAMPLE = """\
model_provider = "gateway"

[model_providers.gateway]
name = "My gateway"
base_url = "https://gateway.example.com/v1"
env_key = "GATEWAY_API_KEY"   # or requires_openai_auth = true to send auth.json's key"""


# =============================================================================================
# 2. Errors: one hierarchy, each class carries its exit code; only main() turns them into exits
# =============================================================================================


class ImagegenError(Exception):
    """Base class: a failure with a one-line message, an optional hint and an exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(ImagegenError):
    """Bad arguments or input files; nothing was sent."""

    exit_code = EXIT_USAGE


class ConfigError(ImagegenError):
    """Configuration or credentials are missing or invalid (also HTTP 401/403)."""

    exit_code = EXIT_CONFIG


class GatewayError(ImagegenError):
    """The gateway answered with an error or something unreadable."""

    exit_code = EXIT_GATEWAY

    def __init__(
        self,
        message: str,
        hint: str = "",
        *,
        status: int = 0,
        code: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        started: bool = False,
        detail: str | None = None,
        param: str = "",
        relay_failure: bool = False,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code
        self.detail = message if detail is None else detail  # the gateway's own words only
        self.param = param
        self.retryable = retryable
        self.retry_after = retry_after
        self.started = started  # the gateway had begun the work: a retry may be billed twice
        # a 5xx whose body is not an OpenAI error: a relay's own failure, perhaps after the
        # upstream rendered (and billed) the image; see relay_stream_failure()
        self.relay_failure = relay_failure


class AuthError(GatewayError):
    """HTTP 401/403: the gateway refused the credentials."""

    exit_code = EXIT_CONFIG


class NoImageError(ImagegenError):
    """The exchange worked but no image came back (moderation, refusal, text only)."""

    exit_code = EXIT_NO_IMAGE

    def __init__(self, message: str, hint: str = "", *, text: str = "") -> None:
        super().__init__(message, hint)
        self.text = text


class StillRunning(GatewayError):
    """A stored response is still queued or in progress (run_job polls it; exit 4 if not)."""

    def __init__(self, status: str, response_id: str) -> None:
        super().__init__(
            f"the gateway answered before the image was ready (response {response_id} is {status})",
            started=True,
        )
        self.response_status = status


class NetworkError(ImagegenError):
    """DNS, connect, TLS, proxy or timeout."""

    exit_code = EXIT_NETWORK

    def __init__(
        self, message: str, hint: str = "", *, retryable: bool = False, started: bool = False
    ) -> None:
        super().__init__(message, hint)
        self.retryable = retryable
        self.retry_after: float | None = None
        self.started = started


class OutputError(ImagegenError):
    """The output could not be written (a received image is kept in a rescue file)."""

    exit_code = EXIT_OUTPUT


class DiskError(OutputError):
    """A local disk refused a write while the answer arrived or the image was saved."""


def disk_error(exc: OSError, where: str) -> DiskError:
    return DiskError(
        f"the local disk refused a write {where}: {exc.strerror or exc}",
        unwritable_hint_text(exc.errno),
    )


def unwritable_hint_text(code: int | None) -> str:
    if code == errno.EROFS:
        return "the folder is on a read-only file system; choose another --out folder"
    return "free some disk space (or choose another --out folder), then run again"


def out_of_time(timeout: float, what: str = "") -> NetworkError:
    """The one error for a spent --timeout budget (`what`: what was still going on)."""
    return NetworkError(
        f"the total time budget ran out (--timeout {timeout:g}s){what}",
        "raise --timeout for slow renders",
    )


class Cancelled(ImagegenError):
    """The client of an MCP call cancelled it; its request was stopped, its temp files removed."""

    exit_code = EXIT_CANCELLED


def default_hint(code: int) -> str:
    """A failure's hint when its error brought none: --json promises a hint on every failure."""
    if code == EXIT_USAGE:
        return "see --help"
    if code == EXIT_CONFIG:
        return "run --doctor: it shows the config files read, the provider and the key's source"
    return "search references/troubleshooting.md (beside this script) for the error line"


# =============================================================================================
# 3. Text safety: secrets and their redaction, sanitising what reaches a terminal
# =============================================================================================


def is_credential_header(name: str) -> bool:
    """A configured header that authenticates by itself (Azure's api-key, x-api-key, ...)."""
    return credential_name(name)


def mask_tokens(text: str) -> str:
    """A credential helper's message with every word that could be a token masked: we cannot
    know its key when it fails, so a long word with a digit in it goes, and any very long one."""

    def mask(match: Any) -> str:
        word = match.group(0)
        risky = len(word) >= 2 * TOKEN_LIKE_LENGTH or any(c.isdigit() for c in word)
        return "***" if risky else word

    return re.sub(r"[^\s\"'`,;()<>\[\]{}]{" + str(TOKEN_LIKE_LENGTH) + ",}", mask, text)


# A header or query parameter whose name has one of these as a whole word (split at "-", "_",
# "." and camelCase) carries a credential: "X-Api-Key", "x-auth-token", "apiKey", "sig". A word
# that merely contains one does not: "x-portkey-provider: openai" is shown as written.
CREDENTIAL_WORDS = frozenset(
    (
        "authorization auth authentication key apikey token secret password passwd passphrase "
        "cookie session credential credentials sig signature bearer jwt accesskey secretkey "
        "accesstoken authtoken apitoken sessiontoken clientsecret"
    ).split()
)
SECRETS: list[str] = []  # every credential this run knows, longest first; see redact()
# What redact() looks for: each secret and its URL-encoded and JSON-escaped spellings, with the
# mask that replaces them, longest first; and, to find pieces of them, the 6-character blocks
# of each spelling by where they start in it.
SECRET_FORMS: list[tuple[str, str]] = []
SECRET_BLOCKS: dict[str, list[tuple[str, int]]] = {}
# Text that is public whatever a secret holds (the base URL's scheme, host, port and path, as
# configured): a piece of a secret that is also a piece of it is not masked, so a secret that
# happens to hold the host cannot hide the endpoint. A whole secret is always masked, and so is
# every piece of one that the URL itself holds whole (a key in the path is no public text).
PUBLIC_TEXTS: list[str] = []


def add_public(url: str) -> None:
    """Remember the base URL (without user:password@ and query) as public text for redact()."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return
    text = f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host + parts.path
    if text and text not in PUBLIC_TEXTS:
        PUBLIC_TEXTS.append(text)


def credential_name(name: str) -> bool:
    """A header or query parameter name that is a credential's name (see CREDENTIAL_WORDS)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name)
    return any(word in CREDENTIAL_WORDS for word in re.split(r"[^a-z0-9]+", spaced.lower()))


def looks_secret(header_name: str, value: str = "") -> bool:
    """A header value that is a secret by where it sits: a credential's name, or an
    Authorization-style value. (Values from a credential source are secret whatever their
    name: the key, auth.command's output, env_http_headers; see load_gateway.)"""
    return credential_name(header_name) or value.lower().startswith(("bearer ", "basic "))


def add_secret(value: str) -> None:
    """Remember a credential so that redact() masks it in everything printed or written."""
    from urllib.parse import quote, quote_plus

    value = value.strip()
    if len(value) < SECRET_MIN_LENGTH or value in SECRETS:
        return
    SECRETS.append(value)
    SECRETS.sort(key=len, reverse=True)
    mask = mask_secret(value)
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    # a gateway may percent-encode with lower-case hex digits (%2f for "/")
    forms |= {re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), form) for form in forms}
    for form in forms:
        if (form, mask) not in SECRET_FORMS:
            SECRET_FORMS.append((form, mask))
        if len(form) >= SECRET_PIECE:
            for start in range(0, len(form) - SECRET_BLOCK + 1, SECRET_BLOCK):
                block = form[start : start + SECRET_BLOCK]
                SECRET_BLOCKS.setdefault(block, []).append((form, start))
    SECRET_FORMS.sort(key=lambda pair: len(pair[0]), reverse=True)
    if value.lower().startswith(("bearer ", "basic ")):
        add_secret(value.split(" ", 1)[1])


def redact(text: str) -> str:
    """The one redaction step for every string that leaves the process (terminal, --json,
    sidecar, MCP results): each known secret, its URL-encoded and JSON-escaped forms and any
    run of SECRET_PIECE or more of their characters are masked. Call it on the whole string,
    before cutting it short."""
    if not SECRET_FORMS or not text:
        return text
    for form, mask in SECRET_FORMS:
        if form in text:
            text = text.replace(form, mask)
    if len(text) < SECRET_PIECE:
        return text
    # Every run of SECRET_PIECE characters of a secret holds one whole block that starts at a
    # multiple of SECRET_BLOCK in it: find the blocks (str.find is fast even on a 2 MB error
    # body), then grow each hit both ways while it still matches the secret around that block.
    spans: list[tuple[int, int]] = []
    # a URL that holds a secret in any spelling (a key in its path) is no public text
    public = [p for p in PUBLIC_TEXTS if not any(form in p for form, _ in SECRET_FORMS)]
    for block, places in SECRET_BLOCKS.items():
        at = text.find(block)
        while at >= 0:
            for form, start in places:
                left, right = at, at + SECRET_BLOCK
                pos = start
                while left > 0 and pos > 0 and text[left - 1] == form[pos - 1]:
                    left, pos = left - 1, pos - 1
                pos = start + SECRET_BLOCK
                while right < len(text) and pos < len(form) and text[right] == form[pos]:
                    right, pos = right + 1, pos + 1
                piece = text[left:right]
                if right - left >= SECRET_PIECE and not any(piece in p for p in public):
                    spans.append((left, right))
            at = text.find(block, at + 1)
    if not spans:
        return text
    spans.sort()
    merged = [spans[0]]
    for left, right in spans[1:]:
        if left <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], right))
        else:
            merged.append((left, right))
    out, last = [], 0
    for left, right in merged:
        out += [text[last:left], "***"]
        last = right
    out.append(text[last:])
    return "".join(out)


def mask_cut(text: str) -> str:
    """Text that a cap cut short: a tail of SECRET_EDGE or more characters that begins a secret
    is masked, since redact() only knows runs of SECRET_PIECE (an echoed key cut after its
    tenth character would show those ten)."""
    for form, mask in SECRET_FORMS:
        for n in range(min(len(form) - 1, len(text)), SECRET_EDGE - 1, -1):
            if text.endswith(form[:n]):
                return text[:-n] + mask
    return text


def clip(text: str, limit: int) -> str:
    """At most `limit` characters of text that may hold a secret: redacted whole, then cut."""
    text = redact(text)
    return text if len(text) <= limit else mask_cut(text[:limit])


def redact_obj(obj: Any) -> Any:
    """redact() applied to every string in a JSON-able structure (before it is encoded, so
    that a mask can never break the JSON)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(str(k)): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def redact_url(url: str) -> str:
    """A URL for display: no user:password@ part, secrets masked, one clean line, bounded."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    text = sanitize(redact((scheme + sep if sep else "") + authority + slash + path))
    return text if len(text) <= MAX_SHOWN_URL else mask_cut(text[: MAX_SHOWN_URL - 3]) + "..."


def mask_secret(value: str) -> str:
    """What stands in for a secret: none of its characters, whole or in part."""
    return "***"


def sanitize(text: str, lines: bool = False) -> str:
    """The one sanitiser for text from the gateway, a proxy or the file system on its way to a
    terminal: control characters (C0, DEL, C1: escape sequences), bidirectional overrides,
    lone surrogates and tag characters (U+E0000-E007F, invisible text) become "?". `lines`
    keeps line breaks and tabs (our own multi-line output; a CRLF, as in a multipart body
    shown by --dry-run, becomes a line break)."""
    if text.isprintable():
        return text
    if lines:
        text = text.replace("\r\n", "\n")
    out = []
    for c in text:
        o = ord(c)
        if lines and c in "\n\t":
            out.append(c)
        elif o < 32 or 0x7F <= o < 0xA0 or c in UNSAFE_FORMAT_CHARS or 0xD800 <= o < 0xE000:
            out.append("?")
        elif 0xE0000 <= o <= 0xE007F:  # tag characters: invisible text an agent would read
            out.append("?")
        else:
            out.append(c)
    return "".join(out)


def text_of(value: Any, limit: int = 500) -> str:
    """One line of at most `limit` characters, credentials masked before it is cut short."""
    text = redact(value) if isinstance(value, str) else ""
    text = sanitize(" ".join(text.split()))  # no terminal escape sequences from the gateway
    return text if len(text) <= limit else mask_cut(text[: limit - 3]) + "..."


def check_text(value: str, what: str, *, path: bool = False) -> str:
    """Refuse text that cannot be sent or saved, before anything is paid for: bytes that were
    not UTF-8 (Python keeps those as lone surrogates), and a NUL in a file name. A file name
    only has to be encodable: one that was not UTF-8 on a POSIX command line is fine."""
    try:
        os.fsencode(value) if path else value.encode("utf-8")
    except UnicodeEncodeError:
        kind = "cannot be a file name" if path else "is not valid UTF-8 text"
        raise UsageError(f"{what} {kind}: {clip(ascii(value), 80)}") from None
    if path and "\0" in value:
        raise UsageError(f"{what} contains a NUL character")
    return value


def json_dumps(obj: Any) -> str:

    return json.dumps(obj)  # ASCII escapes: readable by any consumer, whatever its encoding


# =============================================================================================
# 4. Input files: regular files only, opened without blocking, read up to a cap
# =============================================================================================

FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def _label(what: str, path: str) -> str:
    return f"{what} {path}" if what else path


def file_kind(mode: int) -> str:
    for test, name in FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_input(path: str, what: str, error: type[ImagegenError], *, pipes: bool = False) -> int:
    """A descriptor of `path` for reading, refused (as `error`) unless it is a regular file, or
    a pipe when `pipes`. O_NONBLOCK keeps open() itself from waiting for a writer on a FIFO;
    Windows has neither FIFOs in its file system nor O_NONBLOCK, and opens files at once."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        dangling = os.path.islink(path)
        why = "a symbolic link to a missing file" if dangling else "no such file"
        raise error(f"{_label(what, path)}: {why}") from None
    except IsADirectoryError:
        raise error(f"{_label(what, path)}: is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{_label(what, path)}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        real = os.path.realpath(path) + ("/" if stat.S_ISDIR(mode) else "")
        if stat.S_ISREG(mode) and sys.platform.startswith("linux"):
            if real.startswith(PSEUDO_FILE_ROOTS):
                raise error(
                    f"{_label(what, path)}: a file of the system ({real}), not an input file"
                )
        elif not (stat.S_ISREG(mode) or (pipes and stat.S_ISFIFO(mode))):
            raise error(f"{_label(what, path)}: {file_kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def too_big(what: str, path: str, cap: int) -> str:
    return f"{_label(what, path)}: larger than {cap:,} bytes, the limit for it"


def read_pipe(fd: int, cap: int, timeout: float) -> bytes | None:
    """A pipe's bytes up to EOF, or None past `cap`; raises TimeoutError when the writer is
    silent for `timeout`. POSIX waits with select(); Windows cannot select() on a pipe, so
    there a thread reads it and is abandoned (a daemon) if the writer never finishes."""
    deadline = time.monotonic() + timeout
    if os.name != "posix":  # pragma: no cover - Windows
        import threading

        box: list[bytes | None] = []
        reader = threading.Thread(target=lambda: box.append(_read_to_eof(fd, cap)), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box:
            raise TimeoutError
        return box[0]
    import select

    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            block = os.read(fd, READ_CHUNK)
        except BlockingIOError:  # select said readable, another reader took it
            continue
        if not block:
            return b"".join(chunks)
        total += len(block)
        if total > cap:
            return None
        chunks.append(block)


def _read_to_eof(fd: int, cap: int) -> bytes | None:
    chunks: list[bytes] = []
    total = 0
    while True:
        block = os.read(fd, READ_CHUNK)
        if not block:
            return b"".join(chunks)
        total += len(block)
        if total > cap:
            return None
        chunks.append(block)


def read_input(
    path: str,
    what: str,
    cap: int,
    error: type[ImagegenError] = UsageError,
    *,
    timeout: float | None = None,
) -> bytes:
    """A whole small input file (a prompt, a batch, a config file): a regular file no larger
    than `cap`; a pipe too when `timeout` is given (read until EOF within it). "-" is stdin."""
    if path == "-":
        fd = os.dup(sys.stdin.fileno())
    else:
        fd = open_input(path, what, error, pipes=timeout is not None)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if st.st_size > cap:
                raise error(too_big(what, path, cap))
            data = _read_to_eof(fd, cap)
        elif timeout is not None and (stat.S_ISFIFO(st.st_mode) or os.isatty(fd)):
            data = _read_to_eof(fd, cap) if os.isatty(fd) else read_pipe(fd, cap, timeout)
        else:
            raise error(f"{_label(what, path)}: {file_kind(st.st_mode)}, not a regular file")
    except TimeoutError:
        raise error(
            f"{_label(what, path)}: nothing more arrived within {timeout:g} s (--timeout)",
            "a pipe or FIFO must be written and closed by another program",
        ) from None
    except OSError as exc:
        raise error(f"{_label(what, path)}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if data is None:
        raise error(too_big(what, path, cap))
    return data


# =============================================================================================
# 5. Configuration: Codex home, profiles, provider, endpoint, headers and credentials
# =============================================================================================

# -- the resolved gateway ---------------------------------------------------------------------


class Gateway:
    """Where and how to send: the resolved endpoint, headers and credential."""

    __slots__ = (
        "base_url",
        "query",
        "headers",
        "api_key",
        "key_source",
        "provider",
        "profile",
        "codex_home",
        "config_files",
        "key_hint",
        "key_command",
        "key_problem",
        "key_seconds",
        "header_credential",
        "openai_auth",
        "layers",
        "provider_layer",
        "warnings",
        "notes",
        "image_tool",
        "secret_values",
    )

    def __init__(self) -> None:
        self.base_url = DEFAULT_OPENAI_BASE_URL
        self.query: list[tuple[str, str]] = []
        self.headers: dict[str, str] = {}
        self.api_key: str | None = None
        self.key_source = ""
        self.provider = DEFAULT_PROVIDER
        self.profile: str | None = None
        self.codex_home = ""
        self.config_files: list[str] = []
        self.key_hint = ""  # how to supply a key when none was found
        self.key_command: KeyCommand | None = None  # auth.command: run it to get the key
        self.key_problem = ""  # why no credential may be sent (the exit-3 message)
        self.key_seconds = 0.0  # time auth.command took (spent from the --timeout budget)
        self.header_credential = ""  # a configured header that carries the credential instead
        self.openai_auth = False  # the provider takes the user's OpenAI login (Codex's rule)
        self.layers: list[tuple[str, str]] = []  # (layer, file) for every file read
        self.provider_layer = "built-in default"  # the layer whose model_provider won
        self.warnings: list[str] = []  # shown on stderr by load_gateway
        self.notes: list[str] = []  # informational: doctor lines, else info lines on stderr
        self.image_tool: tuple[bool, str] = (False, "")  # would Codex offer its own image tool
        self.secret_values: list[str] = []  # from a credential source (env_http_headers)

    def url(self, path: str) -> str:
        url = self.base_url.rstrip("/") + path
        if self.query:
            url += ("&" if "?" in path else "?") + "&".join(
                f"{quote_query(k)}={quote_query(v)}" for k, v in self.query
            )
        return url

    def request_headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        for name, value in self.headers.items():
            set_header(headers, name, value)
        return headers


def quote_query(text: str) -> str:
    """Percent-encode a query_params key or value, keeping %XX escapes already in it: Codex
    appends the values raw, so a signature copied from a URL arrives as written."""
    from urllib.parse import quote

    parts = re.split(r"(%[0-9A-Fa-f]{2})", text)
    return "".join(part if i % 2 else quote(part, safe="") for i, part in enumerate(parts))


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any existing one of the same name in another case."""
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


# -- Codex home, config files and layers ------------------------------------------------------


def find_codex_home(arg: str | None, env: Mapping[str, str]) -> str:
    if arg:
        if not os.path.isdir(arg):
            raise ConfigError(f"--codex-home {arg}: no such directory")
        return os.path.abspath(arg)
    value = env.get("CODEX_HOME", "").strip()
    if value:
        if not os.path.isdir(value):
            raise ConfigError(
                f"CODEX_HOME={value} is not a directory",
                "Codex requires CODEX_HOME to exist; unset it to use ~/.codex",
            )
        return os.path.abspath(value)
    return os.path.join(os.path.expanduser("~"), ".codex")


def _read_config_bytes(path: str) -> bytes:
    """A configuration file that exists: a regular file up to MAX_CONFIG_BYTES, else exit 3
    (whatever sits at the path: a folder, a FIFO, a log, /dev/zero). Never "absent": falling
    back to the defaults could send the key to a host the user never configured."""
    return read_input(path, "", MAX_CONFIG_BYTES, ConfigError)


def _check_depth(value: Any, path: str) -> None:
    """Refuse structures nested deeper than MAX_CONFIG_DEPTH (checked without recursion), so
    that merging and resolving them never overflows the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{path}: nested more than {MAX_CONFIG_DEPTH} levels deep; "
                "this is not a Codex configuration file"
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # novermin (guarded by the version check)
    else:  # pragma: no cover - exercised on old interpreters only
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                f"{path}: reading TOML on Python {sys.version_info[0]}.{sys.version_info[1]} "
                "needs the tomli package",
                "pip install tomli (or use Python 3.11+)",
            ) from None
    try:
        raw = _read_config_bytes(path)
        # a BOM is what Windows editors write; Codex's TOML parser skips it too
        table = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not UTF-8 text",
            "save it as UTF-8 (PowerShell 5's > and Out-File write UTF-16)",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid TOML: {exc}", "fix the file; Codex cannot read it either"
        ) from None
    except (RecursionError, MemoryError):
        raise ConfigError(
            f"{path}: nested too deeply to read; this is not a Codex configuration file"
        ) from None
    _check_depth(table, path)
    return table


def load_json_file(path: str) -> Any:

    try:
        raw = _read_config_bytes(path)
        value = json.loads(raw.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: nested too deeply to read; this is not Codex's file") from None
    _check_depth(value, path)
    return value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def system_layer_paths(home: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(system config.toml, managed_config.toml) where Codex 0.171.0 reads them: /etc/codex on
    Linux and macOS; on Windows %ProgramData%\\OpenAI\\Codex\\config.toml and the managed file
    in the Codex home. CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR (tests only) replaces the folder."""
    override = env.get(SYSTEM_CONFIG_DIR_ENV, "")
    if override:
        return os.path.join(override, "config.toml"), os.path.join(override, "managed_config.toml")
    if os.name == "nt":
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or "C:\\ProgramData"
        system = os.path.join(program_data, *SYSTEM_CONFIG_DIR_WINDOWS, "config.toml")
        return system, os.path.join(home, "managed_config.toml")
    return (
        os.path.join(SYSTEM_CONFIG_DIR_UNIX, "config.toml"),
        os.path.join(SYSTEM_CONFIG_DIR_UNIX, "managed_config.toml"),
    )


class ConfigLayers:
    """The merged configuration and where each part came from (shown by --doctor)."""

    __slots__ = ("config", "files", "labels", "profile", "provider_layer")

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.files: list[str] = []
        self.labels: list[str] = []
        self.profile: str | None = None
        self.provider_layer = "built-in default"

    def add(self, label: str, path: str, table: Mapping[str, Any]) -> None:
        self.config = deep_merge(self.config, table)
        self.files.append(path)
        self.labels.append(label)
        if "model_provider" in table:
            self.provider_layer = f"{label} ({path})"


def load_config_layers(
    home: str,
    profile: str | None,
    *,
    system_config: str | None = None,
    managed_config: str | None = None,
) -> ConfigLayers:
    """Stack the layers as Codex does: system config.toml < the user's config.toml < profile
    < managed_config.toml (an administrator's settings win). Missing files are skipped; no
    project .codex/ folder is ever read (a cloned repository must not route the key)."""
    layers = ConfigLayers()
    if system_config and os.path.lexists(system_config):
        table = load_toml(system_config)
        for key in ("profile", "profiles"):  # legacy profiles: only the user's own file
            table.pop(key, None)
        layers.add("system", system_config, table)
    path = os.path.join(home, "config.toml")
    legacy: Any = None
    legacy_tables: Any = None
    if os.path.lexists(path):
        table = load_toml(path)
        legacy = table.pop("profile", None)
        legacy_tables = table.pop("profiles", None)
        layers.add("user", path, table)
    name = profile or (legacy if isinstance(legacy, str) else None)
    if name:
        profile_path = os.path.join(home, name + ".config.toml")
        if os.path.lexists(profile_path):
            layers.add("profile", profile_path, load_toml(profile_path))
        # Older Codex: [profiles.NAME] tables inside config.toml, selected by --profile or profile=
        elif isinstance(legacy_tables, dict) and isinstance(legacy_tables.get(name), dict):
            layers.add("profile", path + f" [profiles.{name}]", legacy_tables[name])
        else:
            raise ConfigError(
                f"profile {name!r} not found: no {profile_path} and no [profiles.{name}] table",
                f"create {profile_path} with the keys to override",
            )
        layers.profile = name
    if managed_config and os.path.lexists(managed_config):
        table = load_toml(managed_config)
        for key in ("profile", "profiles"):
            table.pop(key, None)
        layers.add("managed", managed_config, table)
    return layers


# -- providers, endpoint, headers and credentials ---------------------------------------------


def _table(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config.toml: {where} must be a table")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config.toml: {where} must be a string, not {value!r}")
    return value


class KeyCommand:
    """A provider's `auth = { command, args, timeout_ms, cwd }`: a program printing the key."""

    __slots__ = ("argv", "cwd", "timeout")

    def __init__(self, argv: list[str], cwd: str | None, timeout: float) -> None:
        self.argv = argv
        self.cwd = cwd
        self.timeout = timeout


def key_command_spec(value: Any, where: str) -> KeyCommand:
    table = _table(value, f"{where} auth")
    command = table.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"config.toml: {where}: provider auth.command must not be empty")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"config.toml: {where} auth.args must be a list of strings")
    timeout_ms = table.get("timeout_ms", KEY_COMMAND_TIMEOUT * 1000)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms <= 0:
        raise ConfigError(f"config.toml: {where} auth.timeout_ms must be a positive number")
    cwd = table.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"config.toml: {where} auth.cwd must be a string")
    return KeyCommand([command, *args], cwd, float(timeout_ms) / 1000.0)


def _stop_process(proc: Any) -> None:
    """Kill auth.command and whatever it started (its own process group on POSIX), so that a
    helper left holding the pipes cannot stall the run past its budget."""

    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass
    try:
        proc.communicate(timeout=1.0)
    except Exception:  # noqa: BLE001 - a grandchild outside the group keeps the pipes open
        pass


def run_key_command(spec: KeyCommand, home: str, budget: float | None = None) -> str:
    """Run auth.command as Codex 0.171.0 does: in the process's working directory (a relative
    command resolves there) unless `cwd` is given, which is resolved against the Codex home.
    Its trimmed stdout is the key; exit 0 required. It ends at its own timeout_ms or at the
    total budget (`budget` seconds), whichever comes first."""
    import subprocess

    cwd: str | None = None
    argv = list(spec.argv)
    if spec.cwd:
        cwd = os.path.join(home, os.path.expanduser(spec.cwd))  # an absolute cwd stays
        if not os.path.isdir(cwd):
            raise ConfigError(f"auth.cwd {cwd}: no such directory")
        if os.sep in argv[0] or (os.altsep and os.altsep in argv[0]):
            argv[0] = os.path.join(cwd, os.path.expanduser(argv[0]))
    shown = os.path.basename(spec.argv[0])
    limit = spec.timeout if budget is None else max(0.0, min(spec.timeout, budget))
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        raise ConfigError(f"auth.command {shown} cannot be run: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _stop_process(proc)
        if budget is not None and budget < spec.timeout:
            raise NetworkError(
                f"the total time budget (--timeout) ran out while auth.command {shown} was "
                f"running ({limit:g}s)",
                "raise --timeout, or check the command by hand",
            ) from None
        raise ConfigError(
            f"auth.command {shown} did not finish in {spec.timeout:g}s",
            "run it by hand to check it, or raise auth.timeout_ms",
        ) from None
    except BaseException:
        _stop_process(proc)
        raise
    key = out[:MAX_KEY_COMMAND_OUTPUT].decode("utf-8", "replace").strip()
    if key:
        add_secret(key)  # whatever it printed may be a secret, even when it failed
        for line in key.splitlines():
            add_secret(line)
    if proc.returncode != 0 or not key:
        last = err[-4096:].decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        why = f"exited with {proc.returncode}" if proc.returncode else "printed no key"
        said = text_of(mask_tokens(last[0]), 200)
        raise ConfigError(
            f"auth.command {shown} {why}" + (f": {said}" if said else ""),
            "run it by hand; it must print the token on stdout and exit 0",
        )
    if len(out) > MAX_KEY_COMMAND_OUTPUT:
        raise ConfigError(
            f"auth.command {shown} printed more than {MAX_KEY_COMMAND_OUTPUT // 1024} KB; "
            "a token was expected"
        )
    return key


def check_provider_table(provider_id: str, provider: Mapping[str, Any], where: str) -> list[str]:
    """Refuse what Codex refuses, and what Codex knows but this script cannot serve; return
    warnings for keys Codex would ignore."""
    if "gateway_oauth" in provider:
        raise ConfigError(
            f"config.toml: {where} uses gateway_oauth, an OAuth sign-in that Codex runs itself; "
            "this script cannot obtain that token",
            "give the provider a token this script can read (env_key or auth.command)",
        )
    vertex = [key for key in VERTEX_PROVIDER_KEYS if key in provider]
    if vertex:
        raise ConfigError(
            f"config.toml: {where} is a Google Vertex AI provider ({', '.join(vertex)}); its "
            "Google credentials cannot be turned into a token by a standard-library script",
            "use a gateway that takes a bearer key (env_key) for image generation",
        )
    if "aws" in provider:
        raise ConfigError(
            f"config.toml: {where}: provider aws is only supported for `amazon-bedrock` "
            "(as Codex says), and this script cannot sign AWS requests anyway"
        )
    requires = provider.get("requires_openai_auth", False)
    if not isinstance(requires, bool):
        raise ConfigError(f"config.toml: {where} requires_openai_auth must be true or false")
    if provider.get("auth") is not None:
        conflicts = [key for key in ("env_key", "experimental_bearer_token") if key in provider]
        if requires:
            conflicts.append("requires_openai_auth")
        if conflicts:
            raise ConfigError(
                f"config.toml: {where}: provider auth cannot be combined with "
                + ", ".join(conflicts),
                "keep either auth.command or the other key source (Codex refuses both)",
            )
    unknown = sorted(str(key) for key in provider if key not in PROVIDER_KEYS)
    if unknown:
        return [
            f"config.toml: {where}: unknown key(s) ignored, as Codex does: {', '.join(unknown)}"
        ]
    return []


def codex_image_tool(
    provider_id: str, provider: Mapping[str, Any], openai_auth: bool, chatgpt_login: bool
) -> tuple[bool, str]:
    """Would Codex 0.171.0 offer its own image tool (image_gen.imagegen) here, and why not."""
    if openai_auth and chatgpt_login:
        return True, "ChatGPT login on a provider with requires_openai_auth"
    headers = provider.get("http_headers")
    if provider_id not in BUILTIN_PROVIDER_IDS and isinstance(headers, dict):
        for name, value in headers.items():
            if str(name).lower() == CODEX_IMAGE_TOOL_HEADER and str(value).strip():
                return True, f'http_headers sets "{CODEX_IMAGE_TOOL_HEADER}"'
    if not chatgpt_login:
        why = "the login is not ChatGPT (an API key or another token)"
    else:
        why = "the provider does not set requires_openai_auth = true"
    return False, (
        f"{why}; Codex offers it only for a ChatGPT login on a provider with "
        f'requires_openai_auth = true, or a custom provider with http_headers."'
        f'{CODEX_IMAGE_TOOL_HEADER}"'
    )


def resolve_gateway(
    config: Mapping[str, Any],
    auth: Mapping[str, Any] | None,
    env: Mapping[str, str],
    *,
    base_url: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Gateway:
    """Resolve endpoint, headers and key the way Codex does (pure: no files, no network).

    The steps run in Codex's order, so a configuration with several faults is refused for the
    one Codex would name first."""
    gw = Gateway()
    provider_id = config.get("model_provider", DEFAULT_PROVIDER)
    if not isinstance(provider_id, str) or not provider_id:
        raise ConfigError("config.toml: model_provider must be a provider name (a string)")
    gw.provider = provider_id
    provider = _provider_table(config, provider_id)
    where = f"[model_providers.{provider_id}]"
    wire_api = provider.get("wire_api", "responses")
    if wire_api != "responses":
        raise ConfigError(
            f'config.toml: {where} wire_api = {wire_api!r}: only "responses" is supported '
            "(Codex rejects other values too)"
        )
    gw.warnings.extend(check_provider_table(provider_id, provider, where))
    # Codex sends the user's OpenAI login (CODEX_API_KEY, auth.json) only to the built-in
    # provider and to providers that ask for it; a relay without the flag never sees it
    gw.openai_auth = provider.get("requires_openai_auth") is True

    tokens = _login_tokens(auth)
    chatgpt_login = bool(
        tokens
        and tokens.get("access_token")
        and not ((auth or {}).get("OPENAI_API_KEY") or env.get("CODEX_API_KEY", "").strip())
    )
    url = _provider_base_url(gw, config, provider, env, chatgpt_login, base_url)
    gw.base_url = base_url or url
    for key, value in _table(provider.get("query_params"), "query_params").items():
        gw.query.append((str(key), _string(value, f"{where} query_params.{key}")))

    headers = _provider_headers(gw, provider, env, where)
    _resolve_credential(gw, provider, auth, tokens, env, headers, where)
    has_credential = bool(gw.api_key or gw.key_command)
    for name in [k for k in headers if k.lower() == "authorization"]:
        if has_credential:
            del headers[name]
            gw.warnings.append(
                f"config.toml: {where} sets an Authorization header; as in Codex, the "
                f"credential from {gw.key_source} is sent instead"
            )
    gw.image_tool = codex_image_tool(provider_id, provider, gw.openai_auth, chatgpt_login)
    for header in extra_headers:
        set_header(headers, header[0], header[1])
    if not has_credential and not gw.key_problem:  # a --header 'Authorization: ...' counts too
        gw.header_credential = next((k for k in headers if is_credential_header(k)), "")
    gw.headers = headers
    return gw


def _provider_table(config: Mapping[str, Any], provider_id: str) -> dict[str, Any]:
    """The table of the selected provider: its own [model_providers.ID], or what a built-in id
    implies; refuses what Codex refuses (a redefined built-in) and what it cannot serve."""
    providers = _table(config.get("model_providers"), "[model_providers]")
    # Codex refuses to start when a built-in id is redefined; mirror it rather than guess
    reserved = [p for p in providers if p in BUILTIN_PROVIDER_IDS]
    if reserved and not (reserved == ["amazon-bedrock"] and set(providers[reserved[0]]) <= {"aws"}):
        raise ConfigError(
            f"config.toml: [model_providers.{reserved[0]}] redefines a built-in provider, "
            "which Codex rejects",
            "rename the table (e.g. [model_providers.my-gateway]) and set model_provider to it",
        )
    if provider_id == "amazon-bedrock":
        raise ConfigError(
            "provider 'amazon-bedrock' signs requests with AWS SigV4, which this script cannot do",
            "use a provider with a bearer key (env_key, auth.json) for image generation",
        )
    provider = providers.get(provider_id)
    if provider is not None:
        return _table(provider, f"[model_providers.{provider_id}]")
    if provider_id == "openai":
        return {"requires_openai_auth": True}
    if provider_id in BUILTIN_PROVIDER_URLS:
        return {}
    if provider_id in VERTEX_PROVIDER_IDS:
        raise ConfigError(
            f"provider {provider_id!r} is Google Vertex AI, whose Google credentials a "
            "standard-library script cannot turn into a token",
            "use a gateway that takes a bearer key (env_key) for image generation",
        )
    known = ", ".join(sorted(providers)) or "none defined"
    raise ConfigError(
        f"model provider {provider_id!r} not found in config.toml [model_providers] ({known})",
        f"add a [model_providers.{provider_id}] table with base_url, or fix model_provider",
    )


def _login_tokens(auth: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """auth.json's ChatGPT login tokens, when it holds a table of them (else None)."""
    tokens = (auth or {}).get("tokens")
    return tokens if isinstance(tokens, dict) else None


def _provider_base_url(
    gw: Gateway,
    config: Mapping[str, Any],
    provider: Mapping[str, Any],
    env: Mapping[str, str],
    chatgpt_login: bool,
    base_url: str | None,
) -> str:
    """The endpoint as Codex computes it: the provider's base_url, else the built-in default
    (which depends on the login and on Codex's own variables). It is read even when --base-url
    replaces it, so a broken table is still refused."""
    provider_id, where = gw.provider, f"[model_providers.{gw.provider}]"
    if provider.get("base_url"):
        return _string(provider["base_url"], f"{where} base_url")
    if provider_id == "openai":
        default = CHATGPT_BASE_URL if chatgpt_login else DEFAULT_OPENAI_BASE_URL
        configured = config.get("openai_base_url")
        url = _string(configured, "openai_base_url") if configured else default
        if env.get("OPENAI_BASE_URL", "").strip() and not (configured or base_url):
            gw.notes.append(
                "OPENAI_BASE_URL is ignored, as by Codex 0.119 and later: "
                "set openai_base_url in config.toml to move the built-in provider"
            )
        return url
    if provider_id in BUILTIN_PROVIDER_URLS:
        return _oss_base_url(provider_id, env)
    raise ConfigError(f"config.toml: {where} has no base_url")


def _oss_base_url(provider_id: str, env: Mapping[str, str]) -> str:
    """A local built-in provider (ollama, lmstudio) moves with Codex's CODEX_OSS_* variables;
    a bad port is refused here rather than sent as a broken URL."""
    url = env.get("CODEX_OSS_BASE_URL", "").strip() or BUILTIN_PROVIDER_URLS[provider_id]
    port = env.get("CODEX_OSS_PORT", "").strip()
    if port and not env.get("CODEX_OSS_BASE_URL", "").strip():
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"CODEX_OSS_PORT={port!r} is not a port number")
        url = url.rsplit(":", 1)[0] + ":" + port + "/v1"
    return url


def _provider_headers(
    gw: Gateway, provider: Mapping[str, Any], env: Mapping[str, str], where: str
) -> dict[str, str]:
    """Headers in Codex's order (OpenAI's organisation and project, then http_headers, then
    env_http_headers, later ones replacing earlier); values from the environment are noted as
    secrets, since nothing tells us they are not."""
    headers: dict[str, str] = {}
    if gw.provider == "openai" and "base_url" not in provider:
        for name, var in (
            ("OpenAI-Organization", "OPENAI_ORGANIZATION"),
            ("OpenAI-Project", "OPENAI_PROJECT"),
        ):
            if env.get(var, "").strip():
                headers[name] = env[var].strip()
    for name, value in _table(provider.get("http_headers"), "http_headers").items():
        set_header(headers, str(name), _string(value, f"{where} http_headers.{name}"))
    for name, var in _table(provider.get("env_http_headers"), "env_http_headers").items():
        value = env.get(_string(var, f"{where} env_http_headers.{name}"), "").strip()
        if value:
            set_header(headers, str(name), value)
            gw.secret_values.append(value)  # kept out of files for a reason: masked by any name
    return headers


def _resolve_credential(
    gw: Gateway,
    provider: Mapping[str, Any],
    auth: Mapping[str, Any] | None,
    tokens: Mapping[str, Any] | None,
    env: Mapping[str, str],
    headers: dict[str, str],
    where: str,
) -> None:
    """Credentials in Codex's order: auth.command (alone by rule), else env_key (required once
    named: no fall-through), else experimental_bearer_token, else the OpenAI login, and that
    only where the provider takes it. Sets the key (or the command) and its source, or the
    problem and hint to show when none is found."""
    if provider.get("auth") is not None:
        gw.key_command = key_command_spec(provider["auth"], where)
        gw.key_source = "auth.command in config.toml"
    elif provider.get("env_key") is not None:
        _env_key_credential(gw, provider, env, where)
    else:
        _login_credential(gw, provider, auth, tokens, env, headers, where)


def _env_key_credential(
    gw: Gateway, provider: Mapping[str, Any], env: Mapping[str, str], where: str
) -> None:
    """A provider's env_key names the one variable that holds its key: when it is empty, that
    is the problem to report (Codex does not fall back to another source either)."""
    var = _string(provider.get("env_key"), f"{where} env_key")
    value = env.get(var, "")
    if value.strip():
        gw.api_key = value  # untrimmed: Codex sends the variable as it is
        gw.key_source = f"{var} environment variable (env_key)"
        return
    gw.key_source = "missing:" + var
    state = "is empty" if var in env else "is not set"
    gw.key_problem = (
        f"missing environment variable {var} (env_key of provider {gw.provider!r}): it {state}"
    )
    instructions = provider.get("env_key_instructions")
    gw.key_hint = str(instructions) if instructions else f"export {var}=<your key>"


def _login_credential(
    gw: Gateway,
    provider: Mapping[str, Any],
    auth: Mapping[str, Any] | None,
    tokens: Mapping[str, Any] | None,
    env: Mapping[str, str],
    headers: dict[str, str],
    where: str,
) -> None:
    """The experimental_bearer_token, else the user's OpenAI login when the provider takes it.
    A login the provider does not take is named in the problem, so the user learns why the
    key they have is not sent rather than just that none was found."""
    login: list[tuple[str, Any]] = [
        ("CODEX_API_KEY environment variable", env.get("CODEX_API_KEY")),
        ("OPENAI_API_KEY in auth.json", (auth or {}).get("OPENAI_API_KEY")),
        ("ChatGPT login tokens in auth.json", tokens.get("access_token") if tokens else None),
    ]  # not $OPENAI_API_KEY: Codex 0.171.0 ignores it and sends no key (never looser)
    candidates: list[tuple[str, Any]] = [
        ("experimental_bearer_token in config.toml", provider.get("experimental_bearer_token"))
    ]
    if gw.openai_auth:
        candidates += login
    for source, value in candidates:
        if isinstance(value, str) and value.strip():
            gw.api_key = value.strip()
            gw.key_source = source
            if source.startswith("ChatGPT") and tokens and tokens.get("account_id"):
                set_header(headers, "chatgpt-account-id", str(tokens["account_id"]))
            break
    withheld = [s for s, v in login if isinstance(v, str) and v.strip()]
    if gw.api_key is None and withheld:
        gw.key_problem = (
            f"no API key found for provider {gw.provider!r}: it does not set "
            f"requires_openai_auth, so (as in Codex) the {' and the '.join(withheld)} "
            "is not sent to it"
        )
        gw.key_hint = (
            f"if this gateway takes your OpenAI key or ChatGPT login, add "
            f"requires_openai_auth = true to {where}; if it has a key of its own, "
            f'set env_key = "VAR_NAME" there and export VAR_NAME'
        )


# -- loading and checking the gateway for a run -----------------------------------------------


def check_base_url(url: str, what: str) -> str:
    """Refuse a base URL that cannot be sent as written (exit 3, shown redacted); return a
    warning for a query inside it, which Codex keeps, with /responses appended after it."""
    from urllib.parse import urlsplit

    shown = redact_url(url)
    if any(c.isspace() or ord(c) < 32 or 127 <= ord(c) < 160 for c in url):
        raise ConfigError(
            f"{what} {shown!r} contains whitespace or control characters",
            "write the URL on one line without spaces (percent-encode them as %20)",
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # an unclosed [IPv6 address, a bad bracket
        raise ConfigError(f"{what} {shown!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{what} {shown!r} must be an http:// or https:// URL")
    if "#" in url:
        raise ConfigError(
            f"{what} {shown!r} has a #fragment, which no request can carry", "remove it"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 and parts.netloc.rsplit("@", 1)[-1].rsplit("]", 1)[-1].count(":"):
        raise ConfigError(f"{what} {shown!r}: the port must be a number from 1 to 65535")
    if parts.query:
        return (
            f"{what} {shown} has a query (?...); as in Codex, /responses is appended after it "
            "and the gateway may not see the path it expects: move it to query_params"
        )
    return ""


def parse_header_arg(text: str) -> tuple[str, str]:
    """A --header from the command line: a bad one is the user's typo (exit 2), checked with
    the same rules as headers from the configuration (exit 3 there, see check_headers)."""

    name, sep, value = text.partition(":")
    if not sep or not re.fullmatch(HEADER_NAME, name):
        # not echoed: without its colon, the text may well be the key itself
        what = "has no 'Name:' part" if not sep else "has a name that is not a valid header name"
        raise UsageError(
            f"a --header {what}; expected 'Name: value' (letters, digits and - in the name)",
            "e.g. --header 'X-Team: imaging'",
        )
    value = value.strip()
    if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in value):
        raise UsageError(f"--header {name}: the value must be one line without control characters")
    return name, value


def load_gateway(
    args: Any, env: Mapping[str, str], console: Console, budget: float | None = None
) -> Gateway:
    """Read the Codex home and the system layers (files), resolve the gateway, run auth.command
    within `budget` seconds; warnings go to the console."""

    home = find_codex_home(args.codex_home, env)
    system_config, managed_config = system_layer_paths(home, env)
    layers = load_config_layers(
        home, args.profile, system_config=system_config, managed_config=managed_config
    )
    config, files = layers.config, layers.files
    auth_path = os.path.join(home, "auth.json")
    auth = _read_auth_json(auth_path, console)
    extra = [parse_header_arg(h) for h in args.header]
    gw = resolve_gateway(config, auth, env, base_url=args.base_url, extra_headers=extra)
    gw.codex_home = home
    gw.profile = layers.profile
    gw.config_files = files + ([auth_path] if auth is not None else [])
    gw.layers = list(zip(layers.labels, files)) + (
        [("auth", auth_path)] if auth is not None else []
    )
    gw.provider_layer = layers.provider_layer
    default_hint = _default_key_hint(gw, env, auth_path)
    gw.key_hint = gw.key_hint or keyring_hint(config, auth) or default_hint
    _mask_base_url_secrets(gw.base_url, console)
    add_public(gw.base_url)
    what = "--base-url" if args.base_url else f"base_url of provider {gw.provider!r}"
    warning = check_base_url(gw.base_url, what)
    if warning:
        gw.warnings.append(warning)
    for line in gw.warnings:
        console.warn(line)
    for line in gw.notes if not getattr(args, "doctor", False) else ():
        console.info(line)
    if gw.key_command is not None and (not args.dry_run or getattr(args, "doctor", False)):
        started = time.monotonic()
        gw.api_key = run_key_command(gw.key_command, home, budget)
        gw.key_seconds = time.monotonic() - started
    check_headers(gw)
    _mask_gateway_secrets(gw, console)
    if not gw.api_key and not gw.header_credential and not args.dry_run:
        _no_key(gw, args, console, files, home, auth_path)
    return gw


def _read_auth_json(auth_path: str, console: Console) -> Any:
    """Codex's auth.json, or None when there is none; one that is there but not a JSON object
    is refused rather than read as no login, and a file others can read is warned about."""
    if not os.path.lexists(auth_path):
        return None
    auth = load_json_file(auth_path)
    if not isinstance(auth, dict):
        raise ConfigError(f"{auth_path}: expected a JSON object")
    warn_if_world_readable(auth_path, console)
    return auth


def _default_key_hint(gw: Gateway, env: Mapping[str, str], auth_path: str) -> str:
    """How to supply a key when no credential source said more: the user's OpenAI login for a
    provider that takes it (with the common trap of $OPENAI_API_KEY, which Codex ignores), else
    the provider's own env_key."""
    if gw.openai_auth and env.get("OPENAI_API_KEY", "").strip():
        return (
            "OPENAI_API_KEY is set, but Codex does not read that variable (it would send no key), "
            "so neither does this script: set CODEX_API_KEY instead, or run "
            "`codex login --with-api-key` to put the key in auth.json"
        )
    if gw.openai_auth:
        return (
            f"set CODEX_API_KEY, add OPENAI_API_KEY to {auth_path}, or give the provider an env_key"
        )
    return (
        f'give [model_providers.{gw.provider}] env_key = "VAR_NAME" (and export VAR_NAME), '
        "or requires_openai_auth = true to use CODEX_API_KEY or auth.json"
    )


def _mask_base_url_secrets(base_url: str, console: Console) -> None:
    """A base URL may carry credentials (http://user:password@host/v1, ?api-key=...): they are
    masked before anything, even the URL check's own message, can print them. A URL that does
    not parse has no parts to mask."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        base = urlsplit(base_url)
        password = base.password
    except ValueError:
        base, password = urlsplit(""), None
    if password:  # http://user:password@host/v1: never printed
        console.add_secret(base.netloc.rsplit("@", 1)[0])
        console.add_secret(password)
    for name, value in parse_qsl(base.query):
        if looks_secret(name):
            console.add_secret(value)


def _mask_gateway_secrets(gw: Gateway, console: Console) -> None:
    """Every credential the gateway will be sent is masked in all output from here on: the key,
    values from credential sources, and headers or query parameters named as credentials."""
    if gw.api_key:
        console.add_secret(gw.api_key)
    for value in gw.secret_values:
        console.add_secret(value)
    for name, value in gw.headers.items():
        if looks_secret(name, value):
            console.add_secret(value)
    for name, value in gw.query:
        if looks_secret(name):
            console.add_secret(value)


def _no_key(
    gw: Gateway, args: Any, console: Console, files: list[str], home: str, auth_path: str
) -> None:
    """No credential at all: with --base-url the user may mean a gateway without keys (warned,
    sent as is); otherwise refuse (exit 3) with the most specific reason known, and a starter
    configuration when there is no configuration at all."""
    if args.base_url:
        console.warn("no API key found; sending no Authorization header to " + gw.base_url)
    elif gw.key_problem:
        raise ConfigError(gw.key_problem, gw.key_hint)
    elif not files:
        raise ConfigError(
            "no Codex configuration found: create {} naming your gateway, with its key in "
            "the variable its env_key names (or in {} with requires_openai_auth = true). "
            "Example:\n{}".format(os.path.join(home, "config.toml"), auth_path, CONFIG_EXAMPLE),
            "or pass --base-url URL for a gateway that needs no key",
        )
    else:
        raise ConfigError(f"no API key found for provider {gw.provider!r}", gw.key_hint)


def check_headers(gw: Gateway) -> None:
    """Header names and values from config.toml, auth.json or the environment must be one clean
    line each: a stray newline would otherwise inject headers into the request."""

    for name, value in [*gw.headers.items(), ("Authorization", gw.api_key or "")]:
        if not re.fullmatch(HEADER_NAME, name):
            raise ConfigError(f"header name {name!r} in the configuration is not valid")
        if any(c in value for c in "\r\n\0"):
            what = "the API key" if name == "Authorization" else f"header {name!r}"
            raise ConfigError(f"{what} from the configuration contains a line break")


def keyring_hint(config: Mapping[str, Any], auth: Any) -> str:
    """Codex may keep its login in the OS keyring, which a stdlib script cannot read."""
    store = config.get("cli_auth_credentials_store")
    if auth is None and store in ("keyring", "auto"):
        return (
            f"Codex keeps its credentials in the OS keyring (cli_auth_credentials_store = "
            f'"{store}"), which this script cannot read: export CODEX_API_KEY (or the '
            'provider\'s env_key), or set cli_auth_credentials_store = "file" and log in again'
        )
    return ""


def warn_if_world_readable(path: str, console: Console) -> None:
    if os.name != "posix":
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        console.warn(
            f"{path} is readable by other users (mode {mode & 0o777:o}); run: chmod 600 {path}"
        )


def is_loopback_host(host: str) -> bool:
    import ipaddress

    host = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only localhost is sure to stay on this machine
        return host == "localhost" or host.endswith(".localhost")


def usable_response_id(value: object) -> bool:
    """The one rule for a response id we fetch, resume, accept in --resume and that --doctor
    vouches for: RESPONSE_ID (printable ASCII, no spaces, up to RESPONSE_ID_MAX characters; it
    is percent-encoded into one URL path segment). Gateways choose their own ids (LiteLLM's
    are long base64 text), so anything narrower would refuse a real one."""
    return isinstance(value, str) and re.fullmatch(RESPONSE_ID, value) is not None


def plain_response_id(value: str) -> bool:
    """A usable id that can be printed inside a copy-paste --resume command as it is."""
    return usable_response_id(value) and re.fullmatch(PLAIN_RESPONSE_ID, value) is not None


# =============================================================================================
# 6. Request: prompt, input images, validation and the JSON payload
# =============================================================================================

# -- input images -----------------------------------------------------------------------------


def sniff_image(head: bytes) -> str | None:
    """The image kind from its first bytes, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (
        text.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head.lower()
    ):
        return "svg"
    return None


def image_dimensions(f: IO[bytes], kind: str) -> tuple[int, int] | None:
    """Width and height read from the image header (file positioned anywhere)."""

    f.seek(0)
    head = f.read(64)
    try:
        if kind == "png":
            if head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
        elif kind == "gif":
            w, h = struct.unpack("<HH", head[6:10])
            return int(w), int(h)
        elif kind == "webp":
            chunk = head[12:16]
            if chunk == b"VP8X" and len(head) >= 30:
                w = int.from_bytes(head[24:27], "little") + 1
                h = int.from_bytes(head[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L" and head[20] == 0x2F:
                bits = int.from_bytes(head[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", head[26:30])
                return int(w) & 0x3FFF, int(h) & 0x3FFF
        elif kind == "jpeg":
            return _jpeg_dimensions(f)
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_dimensions(f: IO[bytes]) -> tuple[int, int] | None:
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2 or marker in (0xD9, 0xDA):
            return None
        length = int.from_bytes(length_bytes, "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            sof = f.read(5)
            if len(sof) < 5:
                return None
            return int.from_bytes(sof[3:5], "big"), int.from_bytes(sof[1:3], "big")
        f.seek(length - 2, 1)


def png_has_alpha(f: IO[bytes]) -> bool:
    """True for colour types with alpha (4, 6) or a tRNS chunk before the image data."""
    f.seek(8)
    while True:
        header = f.read(8)
        if len(header) < 8:
            return False
        length = int.from_bytes(header[:4], "big")
        ctype = header[4:8]
        if ctype == b"IHDR":
            data = f.read(length)
            if len(data) >= 10 and data[9] in (4, 6):
                return True
            f.seek(4, 1)
            continue
        if ctype == b"tRNS":
            return True
        if ctype in (b"IDAT", b"IEND"):
            return False
        f.seek(length + 4, 1)


def image_is_complete(f: IO[bytes], kind: str, size: int) -> bool:
    """Whether the file ends the way a whole image of this kind ends."""
    tail_len = min(size, 64)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    if kind == "png":
        return tail.endswith(b"IEND\xaeB`\x82")
    if kind == "jpeg":
        return tail.rstrip(b"\x00\r\n").endswith(b"\xff\xd9")
    if kind == "gif":
        return tail.rstrip(b"\x00").endswith(b"\x3b")
    if kind == "webp":
        f.seek(4)
        declared = int.from_bytes(f.read(4), "little")
        return declared + 8 <= size
    if kind == "svg":
        return b"</svg>" in tail.lower()
    return False


class InputImage:
    """A local reference image, sent as a data: URL streamed from disk."""

    __slots__ = ("path", "kind", "size", "dims", "has_alpha")

    def __init__(self, path: str, kind: str, size: int, dims: tuple[int, int] | None) -> None:
        self.path = path
        self.kind = kind
        self.size = size
        self.dims = dims
        self.has_alpha = False

    @property
    def mime(self) -> str:
        return MIME_TYPES[self.kind]

    def prefix(self) -> bytes:
        return f"data:{self.mime};base64,".encode("ascii")

    def length(self) -> int:
        """Length of the data: URL, known before reading the file."""
        return len(self.prefix()) + 4 * ((self.size + 2) // 3)

    def chunks(self) -> Iterator[bytes]:
        import base64

        yield self.prefix()
        sent = 0
        with os.fdopen(open_input(self.path, "--image", UsageError), "rb") as f:
            while True:
                block = f.read(3 * 256 * 1024)
                if not block:
                    break
                sent += len(block)
                yield base64.b64encode(block)
        if sent != self.size:
            raise UsageError(f"{self.path}: the file changed while it was being sent")

    def preview(self) -> str:
        return f"data:{self.mime};base64,<{self.size} bytes from {self.path}>"


def load_input_image(path: str, what: str = "--image") -> InputImage:
    fd = open_input(path, what, UsageError)
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4096)
            kind = sniff_image(head)
            if kind is None or kind not in INPUT_IMAGE_KINDS:
                found = "an SVG" if kind == "svg" else "not an image"
                raise UsageError(f"{what} {path}: {found} (PNG, JPEG, WebP or GIF expected)")
            if size > MAX_INPUT_IMAGE_BYTES:
                raise UsageError(
                    f"{what} {path}: {size / 1e6:.1f} MB is over the 50 MB limit",
                    "shrink it or convert it to JPEG",
                )
            image = InputImage(path, kind, size, image_dimensions(f, kind))
            if kind == "png":
                image.has_alpha = png_has_alpha(f)
            return image
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


# -- sizes ------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int] | None:
    """'WxH' -> (w, h); 'auto' -> None. Raises UsageError when malformed."""
    value = text.strip().lower()
    if value == "auto":
        return None
    w, sep, h = value.partition("x")
    digits = (w + h).isascii() and w.isdigit() and h.isdigit()
    if not sep or not digits or int(w) <= 0 or int(h) <= 0:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT (e.g. 1024x1024) or auto")
    return int(w), int(h)


def size_problems(w: int, h: int) -> list[str]:
    """What makes WxH illegal for gpt-image-2 (empty when legal)."""
    problems = []
    if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        problems.append("both sides must be multiples of 16")
    if max(w, h) > SIZE_MAX_EDGE:
        problems.append("the longest side must be at most 3840")
    if max(w, h) > SIZE_MAX_RATIO * min(w, h):
        problems.append("the aspect ratio must be at most 3:1")
    if not SIZE_MIN_PIXELS <= w * h <= SIZE_MAX_PIXELS:
        problems.append("the pixel count must be between 655,360 and 8,294,400")
    return problems


def nearest_legal_size(w: int, h: int) -> tuple[int, int]:
    """The legal gpt-image-2 size closest to WxH in shape and area."""
    ratio = min(max(w / h, 1 / SIZE_MAX_RATIO), SIZE_MAX_RATIO)
    area = min(max(w * h, SIZE_MIN_PIXELS), SIZE_MAX_PIXELS)
    best: tuple[float, tuple[int, int]] | None = None
    target_w = (area * ratio) ** 0.5
    for dw in range(-4, 5):
        cw = int(round(target_w / SIZE_MULTIPLE) + dw) * SIZE_MULTIPLE
        for ch in {
            int(cw / ratio) // SIZE_MULTIPLE * SIZE_MULTIPLE + k * SIZE_MULTIPLE
            for k in (-1, 0, 1, 2)
        }:
            if cw <= 0 or ch <= 0 or size_problems(cw, ch):
                continue
            score = abs(cw / ch - ratio) / ratio + abs(cw * ch - area) / area
            if best is None or score < best[0]:
                best = (score, (cw, ch))
    return best[1] if best else (1024, 1024)


def validate_size(size: str, image_model: str | None) -> None:
    dims = parse_size(size)
    if dims is None or not image_model:
        return
    model = image_model.lower()
    if model.startswith("gpt-image-2"):
        problems = size_problems(*dims)
        if problems:
            nw, nh = nearest_legal_size(*dims)
            raise UsageError(
                "--size {} is not valid for {}: {}; nearest legal size: {}x{}".format(
                    size, image_model, "; ".join(problems), nw, nh
                )
            )
    elif model.startswith(("gpt-image-1", "chatgpt-image")):
        if "{}x{}".format(*dims) not in KNOWN_GOOD_SIZES:
            raise UsageError(
                f"--size {size} is not valid for {image_model}: "
                "use 1024x1024, 1024x1536, 1536x1024 or auto"
            )


def larger_known_size(size: str) -> str | None:
    """The smallest known-good size of the same orientation with more pixels, if any."""
    dims = parse_size(size)
    if dims is None:
        return None
    w, h = dims
    for candidate in KNOWN_GOOD_SIZES:
        cw, ch = (int(x) for x in candidate.split("x"))
        same = (cw == ch) if w == h else ((cw > ch) == (w > h) and cw != ch)
        if same and cw * ch > w * h:
            return candidate
    return None


def format_for(out: str | None, requested: str | None) -> str:
    if requested:
        return "jpeg" if requested == "jpg" else requested
    if out:
        return EXTENSION_FORMATS.get(os.path.splitext(out)[1].lower(), "png")
    return "png"


# -- the job and its JSON payload -------------------------------------------------------------


class Job:
    """Everything one image request needs, validated; built once, sent one or more times."""

    __slots__ = (
        "prompt",
        "out",
        "model",
        "size",
        "action",
        "detail",
        "images",
        "image_urls",
        "mask",
        "tool_options",
        "output_format",
        "stream",
        "force",
        "partial_images",
        "previous_response_id",
        "name",
        "api",
        "store",
        "edit_from",
        "options",
        "resumable",
        "resume_id",
        "strict",
        "size_reason",
    )

    def __init__(self, prompt: str, out: str) -> None:
        self.prompt = prompt
        self.out = out
        self.model = DEFAULT_MODEL
        self.size = DEFAULT_SIZE
        self.action = "auto"
        self.detail = "auto"
        self.images: list[InputImage] = []
        self.image_urls: list[str] = []
        self.mask: InputImage | None = None
        self.tool_options: dict[str, Any] = {}
        self.output_format = "png"
        self.stream = True
        self.force = False
        self.partial_images = 0
        self.previous_response_id: str | None = None
        self.name = out
        self.api = "responses"
        self.store = False
        self.edit_from = False  # images[0] is the --edit-from image
        self.options: dict[str, Any] = {}
        self.resumable = False  # background: true + store: true; a cut stream is resumed
        self.resume_id = ""  # --resume: fetch this stored response, never POST
        self.strict = False  # --strict: no automatic adaptation of what is asked for
        self.size_reason = ""  # why the size was chosen when --size was not given (an edit)


def reference_size(dims: tuple[int, int], image_model: str | None) -> str:
    """The size for an edit without --size: the first reference's shape, as the nearest size
    the image model accepts. gpt-image-2 takes any legal size (kept near the default budget
    of 1536x1024 pixels, so a large photo does not raise the cost); other models take three
    sizes, and `auto` (the model picks the shape) when the reference lies between two."""
    import math

    w, h = dims
    if "{}x{}".format(w, h) in KNOWN_GOOD_SIZES:
        return "{}x{}".format(w, h)
    if (image_model or "").lower().startswith("gpt-image-2"):
        scale = min(1.0, (1536 * 1024 / (w * h)) ** 0.5)
        return "{}x{}".format(
            *nearest_legal_size(max(1, round(w * scale)), max(1, round(h * scale)))
        )
    distances = sorted(
        (abs(math.log((w / h) / (int(cw) / int(ch)))), size)
        for size in KNOWN_GOOD_SIZES
        for cw, ch in [size.split("x")]
    )
    if distances[1][0] - distances[0][0] < math.log(1.1):  # about as far from both shapes
        return "auto"
    return distances[0][1]


def aspect_differs(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two pictures clearly differ in shape (more than 15 % in aspect ratio)."""
    import math

    return abs(math.log((a[0] / a[1]) / (b[0] / b[1]))) > math.log(1.15)


def build_job(opts: Mapping[str, Any]) -> Job:
    """Validate options and load input files; raises UsageError before anything is sent.

    The checks run in the order the options are read (prompt, size, references, mask, output,
    request mode), so the first problem reported is the same whatever else is wrong."""
    job = Job(_job_prompt(opts), str(opts.get("out") or ""))
    job.model = opts.get("model") or DEFAULT_MODEL
    job.size = (opts.get("size") or DEFAULT_SIZE).strip().lower()
    job.action = opts.get("action") or "auto"
    job.detail = opts.get("detail") or "auto"
    job.stream = bool(opts.get("stream", True))
    job.force = bool(opts.get("force"))
    image_model = opts.get("image_model")
    validate_size(job.size, image_model)

    _add_references(job, opts)
    mask_path = opts.get("mask")
    if mask_path:
        job.mask = _load_mask(job, mask_path)
    first_dims = job.images[0].dims if job.images else None
    if not opts.get("size") and first_dims and min(first_dims) > 0:
        # an edit keeps its picture's shape: a square default would crop or squeeze it
        job.size = reference_size(first_dims, image_model)
        job.size_reason = "size {} follows the shape of {} ({}x{}); pass --size to choose".format(
            job.size, job.images[0].path, *first_dims
        )

    job.output_format = format_for(job.out, opts.get("format"))
    job.tool_options = _tool_options(job, opts, image_model)
    job.previous_response_id = opts.get("previous_response_id") or None
    job.api = opts.get("api") or "responses"
    job.store = bool(opts.get("store"))
    job.resumable = bool(opts.get("resumable"))
    job.strict = bool(opts.get("strict"))
    if job.resumable and job.api == "images":
        raise UsageError("--resumable needs --api responses: the Images API has no background mode")
    if job.api == "images" and job.image_urls:
        raise UsageError("--api images cannot send --image-url references; download them first")
    job.options = {k: v for k, v in opts.items() if v not in (None, [], False) and k != "prompt"}
    job.options["size"] = job.size  # the size chosen (default or the reference's shape)
    return job


def _job_prompt(opts: Mapping[str, Any]) -> str:
    """The prompt, trimmed and checked: an empty or oversized one is refused before any input
    file is read."""
    prompt = check_text((opts.get("prompt") or "").strip(), "the prompt")
    if not prompt:
        raise UsageError("the prompt is empty", "pass --prompt TEXT, --prompt - or --prompt-file")
    if len(prompt.encode()) > MAX_PROMPT_BYTES:
        raise UsageError(f"the prompt is longer than {MAX_PROMPT_BYTES:,} bytes, the limit")
    return prompt


def _add_references(job: Job, opts: Mapping[str, Any]) -> None:
    """The reference images: URLs first (checked, not fetched), then --edit-from (which comes
    first among the files, so a mask and the output size follow it), then --image files; their
    number is capped and an edit must have one."""
    for url in opts.get("image_urls") or ():
        if not url.startswith(("http://", "https://", "data:")):
            raise UsageError(f"--image-url {clip(url, 80)!r}: only http(s):// or data: URLs")
        job.image_urls.append(url)
    edit_from = opts.get("edit_from_image")
    if edit_from:
        job.images.append(load_input_image(edit_from, "--edit-from"))
        job.edit_from = True
        if job.action == "auto":
            job.action = "edit"
    for path in opts.get("images") or ():
        job.images.append(load_input_image(path))
    if len(job.images) + len(job.image_urls) > MAX_INPUT_IMAGES:
        raise UsageError(
            f"{len(job.images) + len(job.image_urls)} reference images: "
            f"at most {MAX_INPUT_IMAGES} are accepted"
        )
    if job.action == "edit" and not (job.images or job.image_urls):
        raise UsageError("--action edit needs at least one --image or --image-url")


def _load_mask(job: Job, mask_path: str) -> InputImage:
    """An edit mask is a PNG with alpha (its transparent pixels mark the area to change) the
    size of the image it applies to; anything else is refused here, before any upload."""
    if not (job.images or job.image_urls):
        raise UsageError("--mask needs an image to apply to (--image)")
    mask = load_input_image(mask_path, "--mask")
    if mask.kind != "png":
        raise UsageError(f"--mask {mask_path}: must be a PNG (it is {mask.kind.upper()})")
    if not mask.has_alpha:
        raise UsageError(
            f"--mask {mask_path}: has no alpha channel",
            "transparent pixels mark the area to change; save the mask as RGBA PNG",
        )
    first = job.images[0] if job.images else None  # the --edit-from image when given
    if first is not None and first.dims and mask.dims and first.dims != mask.dims:
        raise UsageError(
            f"--mask {mask_path} is {mask.dims[0]}x{mask.dims[1]} but {first.path} is "
            f"{first.dims[0]}x{first.dims[1]}: they must be the same size"
        )
    return mask


def _tool_options(job: Job, opts: Mapping[str, Any], image_model: Any) -> dict[str, Any]:
    """The image tool's options as the request sends them (only those given), after the
    checks that the output format, background, compression and partial images fit together;
    sets the job's number of partial images."""
    background = opts.get("background")
    if background == "transparent" and job.output_format == "jpeg":
        raise UsageError("a transparent background needs png or webp, not jpeg")
    compression = opts.get("compression")
    if compression is not None and not 0 <= int(compression) <= 100:
        raise UsageError(f"--compression {compression}: must be between 0 and 100")
    partials = int(opts.get("partial_images") or 0)
    if not 0 <= partials <= 3:
        raise UsageError(f"--partial-images {partials}: must be between 0 and 3")
    job.partial_images = partials

    tool: dict[str, Any] = {}
    for key, value in (
        ("model", image_model),
        ("quality", opts.get("quality")),
        ("background", background),
        ("output_format", job.output_format),
        ("output_compression", compression),
        ("moderation", opts.get("moderation")),
        ("input_fidelity", opts.get("input_fidelity")),
    ):
        if value is not None:
            tool[key] = int(value) if key == "output_compression" else value
    return tool


def build_payload(
    job: Job,
    *,
    stream: bool,
    size: str,
    force_tool: bool = True,
    use_previous: bool = False,
    background: bool | None = None,
    drop: Iterable[str] = (),
) -> dict[str, Any]:
    """The /responses request body. Input images stay InputImage objects (streamed on send).

    With use_previous, the --edit-from image is not re-uploaded: previous_response_id refers
    to the stored response that holds it. background (default: job.resumable) asks the
    gateway to keep the response (background mode needs store); drop names image-tool options
    the gateway rejected."""
    content: list[dict[str, Any]] = [{"type": "input_text", "text": job.prompt}]
    images = job.images[1:] if use_previous and job.edit_from else job.images
    for image in images:
        content.append({"type": "input_image", "image_url": image, "detail": job.detail})
    for url in job.image_urls:
        content.append({"type": "input_image", "image_url": url, "detail": job.detail})
    tool: dict[str, Any] = {"type": "image_generation", "action": job.action, "size": size}
    tool.update(job.tool_options)
    if job.partial_images and stream:
        tool["partial_images"] = job.partial_images
    if job.mask is not None:
        tool["input_image_mask"] = {"image_url": job.mask}
    for name in drop:
        tool.pop(name, None)
    keep = job.resumable if background is None else background
    payload: dict[str, Any] = {
        "model": job.model,
        "input": [{"type": "message", "role": "user", "content": content}],
        "tools": [tool],
        "tool_choice": {"type": "image_generation"} if force_tool else "auto",
        "store": job.store or keep,
        "stream": stream,
    }
    if keep:
        payload["background"] = True
    if not force_tool:
        payload["instructions"] = TOOL_CHOICE_INSTRUCTIONS
    if use_previous and job.previous_response_id:
        payload["previous_response_id"] = job.previous_response_id
    return payload


# -- request bodies ---------------------------------------------------------------------------


class RawFile:
    """A file sent as-is (multipart upload), read from disk while the body is sent."""

    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def length(self) -> int:
        return self.size

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        with os.fdopen(open_input(self.path, "--image", UsageError), "rb") as f:
            while True:
                block = f.read(1024 * 1024)
                if not block:
                    break
                sent += len(block)
                yield block
        if sent != self.size:
            raise UsageError(f"{self.path}: the file changed while it was being sent")


class Body:
    """A JSON request body whose data: URLs are base64-encoded from disk while it is sent."""

    __slots__ = ("parts", "length")

    def __init__(self, parts: Sequence[bytes | InputImage | RawFile]) -> None:
        self.parts = parts
        self.length = sum(len(p) if isinstance(p, bytes) else p.length() for p in parts)

    def chunks(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from part.chunks()


def encode_body(payload: Mapping[str, Any]) -> Body:

    images: list[InputImage] = []
    marker = "\x1eIMG{}." + os.urandom(16).hex() + "\x1e"  # no prompt can contain it

    def placeholder(obj: object) -> str:
        if isinstance(obj, InputImage):
            images.append(obj)
            return marker.format(len(images) - 1)
        raise TypeError(type(obj).__name__)

    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=placeholder)
    parts: list[bytes | InputImage | RawFile] = []
    for i, image in enumerate(images):
        token = json.dumps(marker.format(i))[1:-1]  # the escaped form json.dumps wrote
        before, _, text = text.partition(token)
        parts.append(before.encode("utf-8"))
        parts.append(image)
    parts.append(text.encode("utf-8"))
    return Body(parts)


def display_payload(payload: Mapping[str, Any]) -> str:
    """The body as indented JSON for --dry-run, with long base64 shortened."""

    def shorten(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: shorten(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [shorten(v) for v in obj]
        if isinstance(obj, InputImage):
            return obj.preview()
        if isinstance(obj, str) and obj.startswith("data:") and len(obj) > 120:
            return f"{obj[:60]}...<{len(obj)} chars>"
        return obj

    return json.dumps(shorten(payload), indent=2, ensure_ascii=False)


# =============================================================================================
# 7. Transport: one place builds connections (http.client, proxy, TLS, timeouts), the SSE
#    parser
# =============================================================================================

# -- settings, pacing and TLS -----------------------------------------------------------------


class Settings:
    """How to talk to the gateway: timeouts, retries, TLS and proxy environment."""

    __slots__ = (
        "retries",
        "timeout",
        "idle_timeout",
        "connect_timeout",
        "env",
        "strict_size",
        "gate",
    )

    def __init__(self, env: Mapping[str, str]) -> None:
        self.retries = DEFAULT_RETRIES
        self.timeout = DEFAULT_TIMEOUT
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self.connect_timeout = DEFAULT_CONNECT_TIMEOUT
        self.env = env
        self.strict_size = False
        self.gate = RateGate()


class Quiet:
    """The progress sink when nobody watches (a null object): every step is a no-op and a
    pause is a plain sleep. Progress (the line on stderr, MCP notifications) extends it."""

    def phase(self, name: str) -> None:
        """The stream reached a new phase (queued, generating, ...)."""

    def connected(self, wire: Wire) -> None:
        """The current job is about to open this connection (shut down on cancellation)."""

    def checkpoint(self) -> None:
        """Raise Cancelled if the job should stop here."""

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


QUIET = Quiet()


class RateGate:
    """Shared across concurrent jobs: after a 429 every job waits until the gateway is ready."""

    def __init__(self) -> None:
        import _thread

        self.lock = _thread.allocate_lock()
        self.not_before = 0.0

    def hold(self, seconds: float) -> None:

        with self.lock:
            self.not_before = max(self.not_before, time.monotonic() + seconds)

    def wait(self, deadline: float, pause: Callable[[float], None] = time.sleep) -> None:
        """Sleep until the gateway is ready; `pause` lets an MCP call be cancelled meanwhile."""
        with self.lock:
            delay = self.not_before - time.monotonic()
        if delay > 0:
            pause(max(0.0, min(delay, deadline - time.monotonic())))


_ssl_contexts: dict[str, Any] = {}


def ssl_context(env: Mapping[str, str]) -> Any:
    """System roots plus CODEX_CA_CERTIFICATE (else SSL_CERT_FILE); verification always on."""
    import ssl

    ca = env.get("CODEX_CA_CERTIFICATE", "").strip() or env.get("SSL_CERT_FILE", "").strip()
    if ca in _ssl_contexts:
        return _ssl_contexts[ca]
    ctx = ssl.create_default_context()
    if ca:
        var = (
            "CODEX_CA_CERTIFICATE"
            if env.get("CODEX_CA_CERTIFICATE", "").strip()
            else "SSL_CERT_FILE"
        )
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{var}={ca}: cannot load the CA bundle: {exc}",
                "point it at a PEM file with your company's root certificate",
            ) from None
    _ssl_contexts[ca] = ctx
    return ctx


class Clock:
    """Arms the socket timeout before each blocking step: the idle limit or what is left of the
    total budget, whichever is smaller, and remembers which one it was."""

    def __init__(self, idle: float, deadline: float) -> None:
        self.idle = idle
        self.deadline = deadline
        self.total_limited = False
        self.sock: Any = None

    def remaining(self) -> float:

        return self.deadline - time.monotonic()

    def arm(self) -> None:
        remaining = self.remaining()
        if remaining <= 0:
            self.total_limited = True
            raise TimeoutError("budget spent")
        self.total_limited = remaining < self.idle
        if self.sock is not None:
            self.sock.settimeout(min(self.idle, remaining))


# -- proxies, DNS and connections -------------------------------------------------------------


def host_of(url: str) -> str:
    """host[:port] of a URL, never its user:password@ part."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname or url, parts.port
    except ValueError:  # a bad port or IPv6 literal (a URL from the gateway): never a crash
        return "an unreadable address"
    return f"{host}:{port}" if port else host


def proxy_for(scheme: str, host: str, port: int) -> str | None:
    """The proxy URL for this request, found as urllib finds it: *_proxy variables (lower case
    wins), ALL_PROXY, no_proxy, and on Windows and macOS the system settings; else None."""
    import urllib.request

    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None
    return proxy


class Proxy:
    """An http:// proxy: where to dial, how to name it, and its Proxy-Authorization."""

    __slots__ = ("host", "port", "name", "authorization")

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote, urlsplit

        p = urlsplit(url if "://" in url else "http://" + url)
        shown = redact_url(url)
        if p.scheme == "https":
            raise ConfigError(
                f"proxy {shown!r} is an https:// proxy, which the standard library cannot "
                "speak TLS to",
                "use the proxy's http:// address (the tunnel to the gateway is still TLS); "
                "its password is never sent in clear to a proxy marked https",
            )
        if p.scheme != "http" or not p.hostname:
            raise ConfigError(
                f"proxy {shown!r} is not supported",
                "use an http:// proxy (SOCKS is not available in the standard library)",
            )
        try:
            port = p.port
        except ValueError:
            raise ConfigError(f"proxy {shown!r} has a port out of range") from None
        self.host = p.hostname
        self.port = port or 80  # urllib's default for an http:// proxy without a port
        self.name = f"{self.host}:{self.port}"
        self.authorization = ""
        if p.username:
            import base64

            creds = "{}:{}".format(unquote(p.username), unquote(p.password or ""))
            self.authorization = "Basic " + base64.b64encode(creds.encode("utf-8")).decode("ascii")
            add_secret(self.authorization)
            if p.password:
                add_secret(unquote(p.password))


def resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo within `timeout` (it has no timeout of its own; a broken resolver in a
    sandbox can block for minutes), on a daemon thread that is simply abandoned if late."""
    import socket
    import threading

    result: list[Any] = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise NetworkError(
            f"looking up {host} took longer than {timeout:g}s",
            "DNS is not answering; in a sandbox, rerun with host network access",
            retryable=True,
        )
    if isinstance(result[0], OSError):
        raise result[0]
    return list(result[0])


def connect(address: tuple[str, int], timeout: float) -> Any:
    """A TCP connection within `timeout` in all: DNS, then each address with what is left."""
    import socket

    deadline = time.monotonic() + timeout
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in resolve(address[0], address[1], timeout):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(remaining)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    if last is not None and not isinstance(last, socket.timeout):
        raise last
    raise socket.timeout(f"connecting to {address[0]} timed out")


class Watchdog:
    """Shuts the connection down once its deadline passes. Socket timeouts bound each receive
    only; this bounds the steps made of many (a proxy or TLS handshake that trickles, a status
    line sent a byte at a time) by the connect timeout, and everything by the total budget."""

    def __init__(self, deadline: float) -> None:
        import threading

        self.deadline = deadline
        self.sock: Any = None  # a duplicate of the connection's socket, owned by the watchdog
        self.fired = False
        self.killed = False
        self.done = False
        self.cond = threading.Condition()
        threading.Thread(target=self._run, name="watchdog", daemon=True).start()

    def _run(self) -> None:

        with self.cond:
            while not self.done:
                left = self.deadline - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                self.fired = True
                self._shut()
                return

    def watch(self, sock: Any) -> None:
        """Watch this socket through a duplicate of its own: TLS wrapping replaces the socket
        object, and http.client may close its descriptor (which could then be reused for some
        other file) before this watchdog stops."""
        with self.cond:
            if not self.done:
                self.sock = sock.dup()
                if self.killed:
                    self._shut()

    def kill(self) -> None:
        """Shut the connection down now (from any thread), and any socket watched later."""
        with self.cond:
            self.killed = True
            if not self.done:
                self._shut()

    def _shut(self) -> None:
        import socket

        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def extend(self, deadline: float) -> None:
        with self.cond:
            self.deadline = deadline
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:  # after this returns the socket is never touched again
            self.done = True
            self.cond.notify()
            if self.sock is not None:
                self.sock.close()
                self.sock = None


# -- the wire: one HTTP exchange, bounded in time ---------------------------------------------


class Wire:
    """One request on one connection through http.client: the one place that decides proxy,
    TLS, tunnel, timeouts and compression, and turns transport exceptions into our errors."""

    def __init__(self, url: str, settings: Settings, clock: Clock) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"base URL {redact_url(url)!r} must start with http:// or https://")
        self.url = url
        self.host = host_of(url)
        self.settings = settings
        self.clock = clock
        host = parts.hostname
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        proxy_url = proxy_for(parts.scheme, host, port)
        self.proxy = Proxy(proxy_url) if proxy_url else None
        self.tunnel = self.proxy is not None and parts.scheme == "https"
        self.extra: dict[str, str] = {}  # headers the request itself carries for a proxy
        self.resp: Any = None
        self.inflater: Any = None
        self.watchdog: Watchdog | None = None
        self.killed = False  # shutdown() was called: an MCP cancellation
        import http.client

        dial_host, dial_port = (self.proxy.host, self.proxy.port) if self.proxy else (host, port)
        conn: Any
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                dial_host, dial_port, context=ssl_context(settings.env)
            )
            if self.proxy is not None:
                tunnel_headers = {}
                if self.proxy.authorization:
                    tunnel_headers["Proxy-Authorization"] = self.proxy.authorization
                conn.set_tunnel(host, port, headers=tunnel_headers)
        else:
            conn = http.client.HTTPConnection(dial_host, dial_port)
            if self.proxy is not None:
                self.target = url  # a plain-HTTP proxy takes the absolute URL
                if self.proxy.authorization:
                    self.extra["Proxy-Authorization"] = self.proxy.authorization
        conn._create_connection = self._dial  # DNS and TCP within the connect timeout
        conn.response_class = final_response_class()
        self.conn = conn

    def _dial(self, address: tuple[str, int], timeout: Any = None, source: Any = None) -> Any:
        sock = connect(address, self.connect_left())
        assert self.watchdog is not None  # open() starts it before it connects, always
        self.watchdog.watch(sock)
        return sock

    def shutdown(self) -> None:
        """From another thread (an MCP cancellation): wake whatever this connection is blocked
        in, the TLS handshake and a proxy tunnel included, through the watchdog's socket."""
        self.killed = True
        if self.watchdog is not None:
            self.watchdog.kill()

    def connect_left(self) -> float:

        return max(0.001, self.connect_deadline - time.monotonic())

    # -- the exchange ------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (DNS, TCP, tunnel, TLS) within --connect-timeout in all."""

        remaining = self.clock.remaining()
        if remaining <= 0:
            raise NetworkError(
                f"the total time budget (--timeout {self.settings.timeout:g}s) ran out"
            )
        self.connect_deadline = time.monotonic() + min(self.settings.connect_timeout, remaining)
        self.watchdog = Watchdog(self.connect_deadline)
        if self.killed:  # cancelled before it connected
            self.watchdog.kill()
        self.conn.timeout = self.connect_left()
        try:
            self.conn.connect()
        except BaseException as exc:
            self.close()
            if isinstance(exc, ImagegenError):
                raise
            if isinstance(exc, (OSError, ValueError)) or is_http_exception(exc):
                raise self.connect_error(exc) from None  # a CONNECT answer http.client refused
            raise
        self.watchdog.extend(self.clock.deadline)
        self.clock.sock = self.conn.sock

    def connect_error(self, exc: BaseException) -> ImagegenError:
        import socket

        fired = self.watchdog is not None and self.watchdog.fired
        if fired or isinstance(exc, socket.timeout):
            via = f" through the proxy {self.proxy.name}" if self.proxy else ""
            return NetworkError(
                f"connecting to {self.host}{via} timed out after "
                f"{self.settings.connect_timeout:g}s",
                "check the network or proxy; in a sandbox, rerun with host network access",
                retryable=True,
            )
        text = str(exc)
        if self.proxy is not None and is_http_exception(exc):
            return unreadable_answer(f"the proxy {self.proxy.name}", exc)
        if self.proxy is not None and "Tunnel connection failed" in text:
            return proxy_refusal(self.proxy, text.partition(":")[2].strip(), self.host)
        if self.proxy is not None and isinstance(exc, ConnectionRefusedError):
            return proxy_unreachable(self.proxy.name)
        return describe_network_error(exc, self.url)

    def send(self, method: str, headers: Mapping[str, str], body: Iterable[bytes]) -> None:
        conn = self.conn
        conn.putrequest(method, self.target, skip_accept_encoding=True)
        sent = {name.lower() for name in headers}
        if "accept-encoding" not in sent:
            conn.putheader("Accept-Encoding", "identity")
        for name, value in {**headers, **self.extra}.items():
            conn.putheader(name, value)
        conn.putheader("Connection", "close")
        conn.endheaders()
        try:
            for chunk in body:
                self.clock.arm()
                conn.send(chunk)
        except ConnectionError:
            pass  # the gateway answered early (e.g. 413) and closed: that answer is read next

    def answer(self) -> Any:
        """The final answer's status and headers; anything that is not one is exit 4."""
        import http.client

        self.clock.arm()
        try:
            resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if self.watchdog_fired():
                self.budget_spent()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise NetworkError(
                    f"{self.host} closed the connection without answering", retryable=True
                ) from None
            if isinstance(exc, http.client.HTTPException):
                raise unreadable_answer(self.host, exc) from None
            raise
        self.resp = resp
        if resp.status < 200:  # 101 Switching Protocols, 102, 103: not an answer to a POST
            raise unreadable_answer(self.host, f"HTTP {resp.status} is not a final answer")
        encoding = (resp.getheader("content-encoding") or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self.inflater = encoding  # set up on the first bytes (zlib or raw deflate)
        elif encoding not in ("identity", ""):
            raise GatewayError(
                f"the gateway compressed its answer with {text_of(encoding, 40)!r}, which "
                "cannot be decoded here",
                "remove any Accept-Encoding header from the configuration (the script asks "
                "for an uncompressed answer)",
            )
        return resp

    def read(self, size: int = READ_CHUNK) -> bytes:
        """The next piece of the body as it arrives, decompressed; b"" at its end.

        self.inflater is None (an uncompressed body), the Content-Encoding name until the
        first bytes show which decoder it needs, then that zlib decoder; a decoder may give
        nothing for a piece, so this loops until it has bytes or the body ends."""

        while True:
            inflater = self.inflater
            live = inflater is not None and not isinstance(inflater, str)
            if live and inflater.eof:
                data = self._next_member(inflater, size)
                if data is None:
                    return b""
            elif live and inflater.unconsumed_tail:
                data = inflater.decompress(inflater.unconsumed_tail, size)
            else:
                raw = self._read_raw(size)
                if inflater is None:
                    return bytes(raw)
                if not raw:
                    return self._end_of_compressed(inflater)
                data = self._inflate(inflater, raw, size)
            if data:
                return bytes(data)

    def _read_raw(self, size: int) -> bytes:
        """The next bytes off the socket as sent, b"" at the end of the body; a body shorter
        than its Content-Length is a cut answer, not an end."""
        raw = b""  # once the body was read to its end, its socket is closed too
        if not self.resp.isclosed():
            self.clock.arm()
            raw = self.resp.read1(size)
        if not raw and self.watchdog_fired():
            self.budget_spent()
        if not raw and (self.resp.length or 0) > 0:  # Content-Length not reached
            raise GatewayError(
                f"the answer was cut short: {self.resp.length} bytes of its "
                "Content-Length never came",
                "the gateway or a proxy cut it; retrying may help",
                retryable=True,
                started=True,
            )
        return bytes(raw)

    def _next_member(self, inflater: Any, size: int) -> bytes | None:
        """What follows a finished gzip stream: the start of a next gzip member, or None (the
        end) for anything else, which zlib would only pile up in memory."""
        rest = inflater.unused_data
        if rest[:2] != b"\x1f\x8b":
            return None
        inflater = self.inflater = zlib.decompressobj(47)
        try:
            return bytes(inflater.decompress(rest, size))
        except zlib.error as exc:
            raise undecodable(exc) from None

    def _inflate(self, inflater: Any, raw: bytes, size: int) -> bytes:
        """Decompress the next raw bytes, setting the decoder up on the first ones: gzip (or
        zlib) from its header, or raw deflate, as some servers send "deflate"."""
        if isinstance(inflater, str):
            wbits = 47  # gzip (or zlib), detected from the header
            if inflater == "deflate" and not (
                len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
            ):
                wbits = -15  # raw deflate, as some servers send it
            inflater = self.inflater = zlib.decompressobj(wbits)
        try:
            return bytes(inflater.decompress(raw, size))
        except zlib.error as exc:
            raise undecodable(exc) from None

    def _end_of_compressed(self, inflater: Any) -> bytes:
        """The last decompressed bytes once the raw body ended; a compressed stream that did
        not reach its own end was cut short."""
        if isinstance(inflater, str):
            return b""
        self.inflater = None
        try:
            tail = inflater.flush()
        except zlib.error as exc:
            raise undecodable(exc) from None
        if not inflater.eof:
            raise GatewayError(
                "the gateway's compressed answer was cut short",
                "retry",
                retryable=True,
                started=True,
            )
        return bytes(tail)

    def read_limited(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Up to `limit` bytes of an error answer; whatever arrived if the connection breaks."""
        data = bytearray()
        try:
            while len(data) < limit:
                chunk = self.read(64 * 1024)
                if not chunk:
                    break
                data += chunk
        except (OSError, ValueError, ImagegenError, EOFError):
            pass
        except Exception as exc:  # http.client.IncompleteRead and friends
            if not is_http_exception(exc):
                raise
        if len(data) < limit:
            return bytes(data)
        cut = bytes(data[:limit]).decode("utf-8", "surrogateescape")  # any bytes, losslessly
        return mask_cut(cut).encode("utf-8", "surrogateescape")

    def from_proxy(self) -> bool:
        """Whether an HTTP answer came from the proxy rather than the gateway behind it."""
        if self.proxy is None or self.tunnel or self.resp is None:
            return False  # inside a CONNECT tunnel every answer is the gateway's (TLS)
        get = self.resp.getheader
        if self.resp.status == 407 or get("proxy-status") or get("x-squid-error"):
            return True
        return "html" in (get("content-type") or "").lower()

    def budget_spent(self) -> NoReturn:
        import socket

        self.clock.total_limited = True
        raise socket.timeout("the total time budget ran out")

    def watchdog_fired(self) -> bool:
        return self.watchdog is not None and self.watchdog.fired

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        try:
            self.conn.close()
        except OSError:
            pass


def final_response_class() -> Any:
    """http.client's response class that skips informational answers (102 Processing, 103
    Early Hints) before the final one, as it already skips 100 Continue: a client ignores
    the 1xx answers it does not expect (RFC 9110, 15.2). At most MAX_INFORMATIONAL."""
    import http.client

    class FinalResponse(http.client.HTTPResponse):
        def _read_status(self) -> Any:
            for _ in range(MAX_INFORMATIONAL + 1):
                version, status, reason = super()._read_status()  # type: ignore[misc]
                if not 101 < status < 200:
                    return version, status, reason
                for _ in range(101):  # its header lines, up to the blank line
                    line = self.fp.readline(65537)
                    if len(line) > 65536:
                        raise http.client.LineTooLong("header line")
                    if line in (b"\r\n", b"\n", b""):
                        break
                else:
                    raise http.client.HTTPException("an informational answer with too many headers")
            raise http.client.HTTPException(f"more than {MAX_INFORMATIONAL} informational answers")

    return FinalResponse


# -- transport errors -------------------------------------------------------------------------


def is_http_exception(exc: BaseException) -> bool:
    mod = sys.modules.get("http.client")
    return mod is not None and isinstance(exc, mod.HTTPException)


def unreadable_answer(host: str, detail: object) -> GatewayError:
    text = detail if isinstance(detail, str) else f"{type(detail).__name__}: {detail}"
    return GatewayError(
        f"{host} answered something unreadable ({text_of(text, 120)})",
        "something other than an HTTP gateway answered: check base_url and the proxy settings",
    )


def undecodable(exc: BaseException) -> GatewayError:
    return GatewayError(
        f"the gateway's compressed answer cannot be decoded ({exc})",
        "remove any Accept-Encoding header from the configuration",
    )


def proxy_refusal(proxy: Proxy, status_text: str, host: str) -> ImagegenError:
    """A proxy's own 'no': 407 is a configuration problem, the rest a network one."""
    words = text_of(status_text, 120)
    if words.startswith("407"):
        return ConfigError(
            f"the proxy {proxy.name} asked for credentials ({words})"
            + (" and refused the ones given" if proxy.authorization else ""),
            "put them in the proxy URL as http://user:pass@host:port (percent-encode @ : / "
            "and % in them, e.g. %40 for @)",
        )
    return NetworkError(
        f"the proxy {proxy.name} refused the connection to {host} ({words})",
        "check HTTPS_PROXY / HTTP_PROXY / NO_PROXY, or ask the proxy's administrator",
    )


def proxy_unreachable(name: str) -> NetworkError:
    """The proxy itself refused the TCP connection: name it, not the gateway behind it."""
    return NetworkError(
        f"connection to the proxy {name} refused",
        "is the proxy running? check HTTPS_PROXY / HTTP_PROXY / NO_PROXY",
        retryable=True,
    )


def describe_network_error(exc: BaseException, url: str) -> NetworkError:
    """Turn a transport exception into our NetworkError with a hint (the one place this happens)."""
    import ssl

    text = str(exc) or type(exc).__name__
    host = host_of(url)

    # A sandbox that denies sockets (Linux seccomp/Landlock, macOS Seatbelt, Windows) refuses
    # connect() itself; no proxy, CA or retry helps, only another way to run the command.
    code = getattr(exc, "winerror", None) or getattr(exc, "errno", None)
    if code in (errno.EPERM, errno.EACCES, WSAEACCES) and not isinstance(exc, ssl.SSLError):
        return NetworkError(f"connecting to {host} is not permitted ({text})", SANDBOX_NETWORK_HINT)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return NetworkError(
            "TLS certificate check failed for {}: {}".format(
                host, getattr(exc, "verify_message", "") or text
            ),
            "behind a company proxy or CA? set CODEX_CA_CERTIFICATE (or SSL_CERT_FILE) to its PEM "
            "bundle; in a sandbox, rerun with host network access",
        )
    if isinstance(exc, ssl.SSLError) or "schannel" in text.lower():
        return NetworkError(
            f"TLS handshake with {host} failed: {text}",
            "in a sandbox, rerun with host network access; behind a company proxy set "
            "CODEX_CA_CERTIFICATE to its CA bundle",
        )
    import socket

    if isinstance(exc, socket.gaierror):
        if os.environ.get("CODEX_SANDBOX_NETWORK_DISABLED"):  # Codex says its sandbox has no net
            return NetworkError(f"cannot resolve {host}: {text}", SANDBOX_NETWORK_HINT)
        return NetworkError(
            f"cannot resolve {host}: {text}",
            "check base_url and your DNS; in a sandbox, rerun with host network access",
        )
    if isinstance(exc, ConnectionRefusedError):
        return NetworkError(
            f"connection to {host} refused",
            "is the gateway (or proxy) running? check base_url and HTTPS_PROXY",
            retryable=True,
        )
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return NetworkError(f"connection to {host} was reset: {text}", retryable=True)
    return NetworkError(f"network error talking to {host}: {text_of(text, 300)}", retryable=False)


# -- long strings on disk, the JSON spool and the SSE parser ----------------------------------

_BLOB_TOKEN = f"@@gwblob-{os.getpid()}-{os.urandom(4).hex()}-"


SPOOL = threading.local()  # .folders: where this thread's job spools long values (run_job)


class Blob:
    """A long JSON string value (base64, as a rule), kept in an unnamed temporary file instead of
    memory while the answer streams in, with its JSON escapes already resolved."""

    __slots__ = ("file", "length", "folders")

    def __init__(self) -> None:
        # where the job's image will live first (run_job sets it), then the temp folder (None)
        self.folders: list[str | None] = [*getattr(SPOOL, "folders", ()), None]
        self.file: IO[bytes] = self._new_file()
        self.length = 0

    def _new_file(self) -> IO[bytes]:
        import tempfile

        while self.folders:
            folder = self.folders.pop(0)
            try:  # owner-only and unnamed (removed at once where the system allows it);
                # unbuffered, so that a refused write loses nothing in a buffer
                return tempfile.TemporaryFile(prefix=".codex-imagegen-", dir=folder, buffering=0)
            except OSError:
                continue
        return io.BytesIO()  # no folder takes it (a sandbox, full disks): memory, capped

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.length += len(data)
        if self.length > MAX_STRING_CHARS:
            raise GatewayError(
                f"the gateway sent a value of more than {MAX_STRING_CHARS // 2**20} MB "
                f"(images are capped at {MAX_IMAGE_BYTES // 2**20} MB)",
                "the answer is not a usable image; check the gateway",
            )
        view = memoryview(data)
        while view:
            try:
                view = view[self.file.write(view) or 0 :]
            except OSError as exc:
                if exc.errno not in DISK_FAULTS or isinstance(self.file, io.BytesIO):
                    raise
                self._move()

    def _move(self) -> None:
        """The folder is full: carry what arrived to the next folder that takes it (the last
        resort, memory, always does)."""
        old = self.file
        while True:
            self.file = self._new_file()
            try:
                old.seek(0)
                for block in iter(lambda: old.read(READ_CHUNK), b""):
                    view = memoryview(block)
                    while view:
                        view = view[self.file.write(view) or 0 :]
                break
            except OSError as exc:
                if exc.errno not in DISK_FAULTS:
                    raise
                self.file.close()
        old.close()

    def __len__(self) -> int:
        return self.length

    def pieces(self, size: int = B64_CHUNK) -> Iterator[bytes]:
        """The string's characters (UTF-8), in pieces of `size` bytes."""
        f = self.file
        f.seek(0)
        while True:
            piece = f.read(size)
            if not piece:
                return
            yield piece

    def close(self) -> None:
        self.file.close()


def _escape_cut(seg: bytes | bytearray) -> int:
    """Where an escape sequence cut off at the end of `seg` starts (len(seg) if none is)."""
    cut = _escape_start(seg)
    h = cut - 6  # "\uD83D" just before the cut: its low half may come next (alone it is "?")
    if h >= 0 and seg[h : h + 2] == b"\\u" and seg[h + 2 : h + 4].lower() in HIGH_SURROGATES:
        if _escape_start(seg[: h + 1]) == h:  # that backslash starts an escape
            return h
    return cut


HIGH_SURROGATES = (b"d8", b"d9", b"da", b"db")


def _escape_start(seg: bytes | bytearray) -> int:
    r = seg.rfind(b"\\")
    if r < 0:
        return len(seg)
    j = r
    while j > 0 and seg[j - 1] == 92:
        j -= 1
    if (r - j) % 2 == 1:  # an even run: "\\\\" pairs, all complete
        return len(seg)
    if r + 1 >= len(seg) or (seg[r + 1] == 117 and r + 6 > len(seg)):  # "\" or "\uXX"
        return r
    return len(seg)


def _unescape(seg: bytes | bytearray) -> bytes:
    """The characters a piece of a JSON string stands for (complete escapes only)."""
    if b"\\" not in seg:
        return bytes(seg)
    if seg.count(b"\\") == seg.count(b"\\/"):  # only "\/", as some encoders write slashes
        return bytes(seg).replace(b"\\/", b"/")

    text = json.JSONDecoder(strict=False).decode('"' + bytes(seg).decode("utf-8", "replace") + '"')
    return str(text).encode("utf-8", "replace")


class JsonSpool:
    """One JSON text fed in pieces (an SSE event's data, or a whole JSON body). String values of
    BLOB_MIN characters or more go to Blobs as they arrive; the rest is kept, up to
    MAX_EVENT_BYTES. Memory stays flat however long the image or the stream is."""

    def __init__(self) -> None:
        self.head = bytearray()  # the JSON text, long strings replaced by tokens
        self.blobs: dict[str, Blob] = {}
        self.in_string = False
        self.string_start = 0  # where the open string's characters start in head
        self.blob: Blob | None = None  # the open string, when it went to a Blob
        self.carry = b""  # an escape sequence cut at the end of the last piece
        self.size = 0
        self.blob_chars = 0  # characters in all Blobs (they sit in the temp folder: tmpfs is RAM)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data) if not isinstance(data, (bytes, bytearray)) else data
        pos, n = 0, len(data)
        while pos < n:
            if not self.in_string:
                q = data.find(b'"', pos)
                end = n if q < 0 else q + 1
                self.head += data[pos:end]
                self._check()
                if q < 0:
                    return
                self.in_string = True
                self.string_start = len(self.head)
                pos = end
            elif self.blob is None:
                q = self._closing_quote(self.head, data, pos)
                end = n if q < 0 else q
                self.head += data[pos:end]
                if len(self.head) - self.string_start >= BLOB_MIN:
                    self._to_blob()  # ends with the closing quote already
                    if q >= 0:  # the string is complete (it cannot end mid-escape)
                        self.blob = None
                        self.in_string = False
                elif q >= 0:
                    self.head += b'"'
                    self.in_string = False
                self._check()
                pos = n if q < 0 else q + 1
            else:
                piece = self.carry + data[pos:] if self.carry else data[pos:]
                q = self._closing_quote(b"", piece, 0)
                body = piece if q < 0 else piece[:q]
                cut = _escape_cut(body) if q < 0 else len(body)
                self.carry = bytes(body[cut:])
                self._write(self.blob, _unescape(body[:cut]))
                if q < 0:
                    return
                self.blob = None
                self.in_string = False
                pos = n - (len(piece) - q - 1)

    @staticmethod
    def _closing_quote(before: bytes | bytearray, data: bytes | bytearray, pos: int) -> int:
        """The first quote in data[pos:] that no backslash escapes (backslashes may run back
        into `before`, the string so far), or -1."""
        q = data.find(b'"', pos)
        while q >= 0:
            back, k = 0, q - 1
            while k >= pos and data[k] == 92:
                back += 1
                k -= 1
            if k < pos:
                k = len(before) - 1
                while k >= 0 and before[k] == 92:
                    back += 1
                    k -= 1
            if back % 2 == 0:
                return q
            q = data.find(b'"', q + 1)
        return -1

    def _to_blob(self) -> None:
        if len(self.blobs) >= MAX_LONG_STRINGS:
            raise GatewayError(
                f"an event from the gateway holds more than {MAX_LONG_STRINGS} long values",
                "the answer is not a usable image; check the gateway",
            )
        raw = self.head[self.string_start :]
        del self.head[self.string_start :]
        blob = Blob()
        token = _BLOB_TOKEN + str(len(self.blobs))
        self.blobs[token] = blob  # closed with the spool, even if the write below fails
        cut = _escape_cut(raw)
        self.carry = bytes(raw[cut:])
        self._write(blob, _unescape(raw[:cut]))
        self.head += token.encode("ascii") + b'"'
        self.blob = blob

    def _write(self, blob: Blob, data: bytes) -> None:
        self.blob_chars += len(data)
        if self.blob_chars > MAX_LONG_STRING_TOTAL:
            raise GatewayError(
                f"an event from the gateway holds more than {MAX_LONG_STRING_TOTAL // 2**20} MB "
                "of long values in all",
                "the answer is not a usable image; check the gateway",
            )
        blob.write(data)

    def _check(self) -> None:
        if len(self.head) > MAX_EVENT_BYTES:
            raise GatewayError(
                f"the gateway sent an event or JSON body of more than "
                f"{MAX_EVENT_BYTES // 2**20} MB (not counting image data)",
                "the answer is not a usable image; check the gateway",
            )

    def text(self) -> bytes:
        return bytes(self.head)

    def parse(self) -> Any:
        """The JSON value, long strings as Blobs; ValueError when it is not JSON."""

        if self.in_string:
            raise ValueError("the JSON text ends inside a string")
        try:
            obj = json.loads(self.head)
            return _put_blobs(obj, self.blobs) if self.blobs else obj
        except RecursionError:
            raise GatewayError(
                "the gateway's JSON is nested too deeply to read",
                "the answer is not a usable image; check the gateway",
            ) from None

    def close(self) -> None:
        for blob in self.blobs.values():
            blob.close()
        self.blobs.clear()


def _put_blobs(obj: Any, blobs: Mapping[str, Blob]) -> Any:
    if isinstance(obj, dict):
        return {k: _put_blobs(v, blobs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_put_blobs(v, blobs) for v in obj]
    if isinstance(obj, str) and obj.startswith(_BLOB_TOKEN):
        return blobs.get(obj, obj)
    return obj


class SSEParser:
    """Incremental Server-Sent Events parser. Each event's `data:` lines stream into a
    JsonSpool, so an image held in one long line never sits in memory whole; any other line is
    capped. on_event(name, spool) is called once per event; the spool is closed after it."""

    def __init__(self, on_event: Callable[[str, JsonSpool], None]) -> None:
        self.on_event = on_event
        self.field: bytes | None = None  # the current line's field name, once its ':' came
        self.line = bytearray()  # the current line until its field is known, or its value
        self.skip_space = False
        self.pending_cr = False
        self.spool: JsonSpool | None = None  # set from the event's first data line on
        self.event = ""

    def feed(self, chunk: bytes) -> None:
        pos, n = 0, len(chunk)
        while pos < n:
            nl = chunk.find(b"\n", pos)
            end = n if nl < 0 else nl
            if self.pending_cr:
                self.pending_cr = False
                if end > pos or nl < 0:
                    self._segment(b"\r")
            if nl < 0 and end > pos and chunk[end - 1] == 13:
                self.pending_cr = True  # maybe the CR of a CRLF split across reads
                end -= 1
            elif nl >= 0 and end > pos and chunk[end - 1] == 13:
                end -= 1
            if end > pos:
                self._segment(chunk[pos:end])
            if nl < 0:
                return
            self._end_line()
            pos = nl + 1

    def _segment(self, seg: bytes) -> None:
        if self.field is None:
            colon = seg.find(b":")
            if colon < 0:
                self.line += seg
                self._check_line()
                return
            self.field = bytes(self.line) + seg[:colon]
            self.line = bytearray()
            self.skip_space = True
            seg = seg[colon + 1 :]
            if self.field == b"data":
                self._start_data()
            if not seg:
                return
        if self.skip_space:
            self.skip_space = False
            if seg[:1] == b" ":
                seg = seg[1:]
        if self.field == b"data":
            assert self.spool is not None
            self.spool.feed(seg)
        elif self.field == b"event":
            self.line += seg
            self._check_line()
        # comments (an empty field name), id and retry: not needed, not kept

    def _check_line(self) -> None:
        if len(self.line) > MAX_EVENT_BYTES:
            raise GatewayError(
                f"the gateway sent a stream line of more than {MAX_EVENT_BYTES // 2**20} MB "
                "that is not image data",
                "the answer is not a usable image; check the gateway",
            )

    def _start_data(self) -> None:
        if self.spool is None:
            self.spool = JsonSpool()
        else:
            self.spool.feed(b"\n")  # data lines of one event are joined with newlines

    def _end_line(self) -> None:
        field, self.field = self.field, None
        if field is None:
            if not self.line:  # a blank line ends the event
                self._dispatch()
                return
            field, self.line = bytes(self.line), bytearray()  # a field without a colon
            if field == b"data":
                self._start_data()
            elif field == b"event":
                self.event = ""
            return
        if field == b"event":
            self.event = self.line.decode("utf-8", "replace")
        self.line = bytearray()

    def _dispatch(self) -> None:
        spool, self.spool = self.spool, None
        event, self.event = self.event, ""
        if spool is not None:
            try:
                self.on_event(event, spool)
            finally:
                spool.close()

    def close(self) -> None:
        if self.pending_cr:
            self.pending_cr = False
        if self.field is not None or self.line:
            self._end_line()
        self._dispatch()


# =============================================================================================
# 8. Answers: errors, events and token usage as the gateway sends them
# =============================================================================================

B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def error_from_payload(err: Mapping[str, Any], *, started: bool = True) -> ImagegenError:
    """Our error for an OpenAI-style error object found inside a 200 answer or stream."""
    code = str(err.get("code") or "")
    message = text_of(err.get("message")) or "no message"
    etype = str(err.get("type") or "")
    if code in (
        "moderation_blocked",
        "content_policy_violation",
        "image_content_policy_violation",
    ) or (etype == "image_generation_user_error" and "safety" in message.lower()):
        return moderation_error(code or etype, message, err)
    retryable = code in ("server_error", "rate_limit_exceeded")
    return GatewayError(
        "the gateway reported an error: {}{}".format(message, f" ({code})" if code else ""),
        code=code,
        retryable=retryable,
        started=started,
    )


def moderation_error(code: str, message: str, details: Mapping[str, Any]) -> NoImageError:
    extra = details.get("moderation_details")
    parts = []
    if isinstance(extra, dict):
        if extra.get("moderation_stage"):
            parts.append("stage: {}".format(extra["moderation_stage"]))
        if extra.get("categories"):
            parts.append("categories: {}".format(", ".join(map(str, extra["categories"]))))
    return NoImageError(
        "blocked by the safety system ({}): {}{}".format(
            code or "moderation_blocked", message, " [{}]".format("; ".join(parts)) if parts else ""
        ),
        "rephrase the prompt; if it is harmless, try --moderation low",
    )


def token_counts(value: Any, depth: int = 0) -> dict[str, Any] | None:
    """A usage object as the gateway sent it, kept to what it can honestly be: token counts
    (non-negative integers) under plain names, and one level of *_details; None when nothing
    is left. Bounded, so a hostile answer cannot make the record large."""
    if not isinstance(value, dict):
        return None
    counts: dict[str, Any] = {}
    for key, item in list(value.items())[:MAX_USAGE_KEYS]:
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
            continue
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 10**15:
            counts[key] = item
        elif isinstance(item, dict) and depth == 0:
            inner = token_counts(item, depth + 1)
            if inner:
                counts[key] = inner
    return counts or None


def add_token_counts(total: dict[str, Any], counts: Mapping[str, Any]) -> None:
    """Add one usage object into a running total, key by key (details too)."""
    for key, value in counts.items():
        if isinstance(value, dict):
            inner = total.setdefault(key, {})
            if isinstance(inner, dict):
                add_token_counts(inner, value)
        elif isinstance(total.get(key, 0), int):
            total[key] = total.get(key, 0) + value


def usage_words(main: Mapping[str, Any] | None, image: Mapping[str, Any] | None) -> str:
    """'main model 1,889 in + 1,434 out, image model 62 in + 4,160 out' (or '')."""
    parts = []
    for name, counts in (("main model", main), ("image model", image)):
        if counts:
            numbers = [
                f"{counts[key]:,} {word}"
                for key, word in (("input_tokens", "in"), ("output_tokens", "out"))
                if isinstance(counts.get(key), int)
            ]
            if not numbers and isinstance(counts.get("total_tokens"), int):
                numbers = [f"{counts['total_tokens']:,}"]
            if numbers:
                parts.append(f"{name} {' + '.join(numbers)}")
    return ", ".join(parts)


# -- dialects: one place turns every gateway's shapes into the Responses API's own -------------
#
# The Collector below knows only the canonical shapes: response.* events, output items of type
# image_generation_call with a `result` (base64), message text, errors as {"type": "error",
# "error": {...}} (one error object, wherever the gateway put it), the Images API's own answer
# ({"data": [{"b64_json"} or {"url"}]}), and one shape the Responses API has no word for:
# {"type": "image_url", "url": ...}, an image a relay hosts instead of sending it. Everything
# else a gateway says is one entry of DIALECTS. One dialect can only be read once the answer
# has ended, so Collector.verdict asks for it: links to the image in the model's text
# (image_links()). Relays that send the same image twice under two item ids are told apart by
# its bytes when it is kept (Collector.keep_extra).

PARTIAL_IMAGE = "response.image_generation_call.partial_image"
FINAL_EVENTS = ("response.completed", "response.failed", "response.incomplete")


class Dialect:
    """A gateway's other way of saying something: `recognise` reads a shape as it came (`where`:
    an "event", an output "item" or a whole JSON "answer"); `canonical` returns the shape the
    Collector knows. Entries apply in table order, each at most once per shape."""

    __slots__ = ("name", "where", "recognise", "canonical")

    def __init__(
        self,
        name: str,
        where: str,
        recognise: Callable[[Mapping[str, Any]], bool],
        canonical: Callable[[Mapping[str, Any]], dict[str, Any]],
    ) -> None:
        self.name = name
        self.where = where
        self.recognise = recognise
        self.canonical = canonical


class Payload(Blob):
    """The base64 after a data: URL's comma, read in place from the string or Blob it came in
    and in the same pieces as the whole value. Always true, like the value it came in: a data:
    URL with nothing after its comma is an answer that is not an image, not a missing answer."""

    __slots__ = ("source", "start")

    def __init__(self, source: str | Blob, start: int) -> None:
        # no Blob.__init__: a Payload has no temporary file of its own, it reads `source`
        self.source = source
        self.start = start
        self.length = len(source) - start

    def __bool__(self) -> bool:
        return True

    def pieces(self, size: int = B64_CHUNK) -> Iterator[bytes]:
        source = self.source
        if isinstance(source, Blob):
            whole = source.pieces(size)
        else:
            whole = (
                source[i : i + size].encode("ascii", "replace") for i in range(0, len(source), size)
            )
        skip = self.start
        for piece in whole:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            yield piece[skip:]
            skip = 0

    def close(self) -> None:
        pass  # the source belongs to the answer it came in


def is_data_url(value: Any) -> bool:
    """A result value (str or Blob) that is a data: URL rather than bare base64."""
    if isinstance(value, Payload):
        return False  # already the payload of one
    if isinstance(value, Blob):
        return next(value.pieces(5), b"") == b"data:"
    return isinstance(value, str) and value[:5] == "data:"


def data_url_payload(value: str | Blob) -> str | Blob:
    """A data: URL's base64 as a Payload, anything else as it is. The comma is looked for in
    the first piece the sink decodes (B64_CHUNK characters): without one there, the value stays
    whole, and the sink finds it is not base64."""
    if not is_data_url(value):
        return value
    if isinstance(value, Blob):
        comma = next(value.pieces(), b"").find(b",")
    else:
        comma = value.find(",", 0, B64_CHUNK)
    return value if comma < 0 else Payload(value, comma + 1)


def _images_data_urls(obj: Mapping[str, Any]) -> dict[str, Any]:
    entries = [
        {**e, "b64_json": data_url_payload(e["b64_json"])}
        if isinstance(e, dict) and is_data_url(e.get("b64_json"))
        else e
        for e in obj["data"]
    ]
    return {**obj, "data": entries}


def _is_image_call(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "image_generation_call"


def _url_instead_of_result(item: Mapping[str, Any], schemes: tuple[str, ...]) -> bool:
    url = item.get("url")
    return (
        _is_image_call(item)
        and not item.get("result")
        and isinstance(url, str)
        and url.startswith(schemes)
    )


def _loose_error(ev: Mapping[str, Any]) -> bool:
    etype = ev["type"]
    return (
        etype != "error"
        and not etype.startswith("response.")
        and isinstance(ev.get("error"), (dict, str))
    )


def _error_object(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The event's one error object: its string as the message, else the event itself (the
    Responses stream's `error` event has code and message at the top)."""
    err = ev.get("error")
    return {**ev, "error": {"message": err} if isinstance(err, str) else dict(ev)}


def _error_answer(obj: Mapping[str, Any]) -> bool:
    """A whole answer that is an error (no output, no Images API data beside it)."""
    err = obj.get("error")
    return bool(
        isinstance(err, (dict, str)) and err and not obj.get("output") and not obj.get("data")
    )


DIALECTS = (
    Dialect(
        "Azure's name for a preview event",
        "event",
        lambda ev: ev["type"] == "response.image_gen_call.partial_image",
        lambda ev: {**ev, "type": PARTIAL_IMAGE},
    ),
    Dialect(
        "LiteLLM's preview under b64_json",
        "event",
        lambda ev: (
            ev["type"] == PARTIAL_IMAGE and not ev.get("partial_image_b64") and "b64_json" in ev
        ),
        lambda ev: {**ev, "partial_image_b64": ev["b64_json"]},
    ),
    Dialect(
        "a preview as a data: URL",
        "event",
        lambda ev: ev["type"] == PARTIAL_IMAGE and is_data_url(ev.get("partial_image_b64")),
        lambda ev: {**ev, "partial_image_b64": data_url_payload(ev["partial_image_b64"])},
    ),
    Dialect(
        "response.done for response.completed",
        "event",
        lambda ev: ev["type"] == "response.done",
        lambda ev: {**ev, "type": "response.completed"},
    ),
    Dialect(
        "an error in an event of another type (or none)",
        "event",
        _loose_error,
        lambda ev: {**ev, "type": "error"},
    ),
    Dialect(
        "an error event with its fields at the top, or its error a string",
        "event",
        lambda ev: ev["type"] == "error" and not isinstance(ev.get("error"), dict),
        _error_object,
    ),
    Dialect(
        "the image as a data: URL in `url`",
        "item",
        lambda item: _url_instead_of_result(item, ("data:",)),
        lambda item: {**item, "result": item["url"]},
    ),
    Dialect(
        "a hosted image: an http(s) URL in `url` instead of the result",
        "item",
        lambda item: _url_instead_of_result(item, ("http://", "https://")),
        lambda item: {"type": "image_url", "url": item["url"]},
    ),
    Dialect(
        "the result as a data: URL",
        "item",
        lambda item: _is_image_call(item) and is_data_url(item.get("result")),
        lambda item: {**item, "result": data_url_payload(item["result"])},
    ),
    Dialect(
        "Images API results as data: URLs",
        "answer",
        lambda obj: (
            isinstance(obj.get("data"), list)
            and any(isinstance(e, dict) and is_data_url(e.get("b64_json")) for e in obj["data"])
        ),
        _images_data_urls,
    ),
    Dialect(
        "an error answer whose error is a string",
        "answer",
        lambda obj: _error_answer(obj) and isinstance(obj["error"], str),
        lambda obj: {**obj, "error": {"message": obj["error"]}},
    ),
)


def canonical(where: str, shape: Mapping[str, Any]) -> Mapping[str, Any]:
    """`shape` as the Collector knows it: each dialect that recognises it rewrites it."""
    for dialect in DIALECTS:
        if dialect.where == where and dialect.recognise(shape):
            shape = dialect.canonical(shape)
    return shape


def canonical_response(resp: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Response object with each of its output items in the canonical shape."""
    output = resp.get("output")
    if not isinstance(output, list):
        return resp
    items = [canonical("item", item) if isinstance(item, dict) else item for item in output]
    return {**resp, "output": items}


def canonical_event(ev: Mapping[str, Any], name: str = "") -> Mapping[str, Any]:
    """A stream event in the canonical shape, its type always set (the SSE event name when the
    data has none), the item or response it carries canonical too."""
    ev = canonical("event", {**ev, "type": str(ev.get("type") or name)})
    if isinstance(ev.get("item"), dict):
        ev = {**ev, "item": canonical("item", ev["item"])}
    if isinstance(ev.get("response"), dict):
        ev = {**ev, "response": canonical_response(ev["response"])}
    return ev


def canonical_answer(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A whole JSON answer (a Response object, an Images API answer, an error) made canonical."""
    return canonical_response(canonical("answer", obj))


# =============================================================================================
# 9. Results: the image sink (file placement, rescue files) and the collector
# =============================================================================================

# -- placing a file: no clobber, rescue files -------------------------------------------------


class SavedImage:
    __slots__ = ("path", "kind", "nbytes", "dims", "sha256", "rescued")

    def __init__(self, path: str, kind: str, nbytes: int, dims: tuple[int, int] | None) -> None:
        self.path = path
        self.kind = kind
        self.nbytes = nbytes
        self.dims = dims
        self.sha256 = ""
        self.rescued = False


def unwritable_hint(code: int | None, default: str) -> str:
    """What to do about a folder that refuses a file: another folder helps, unless the whole
    file system is read-only, as in a read-only sandbox where no folder is writable."""

    sandboxed = any(os.environ.get(name) for name in SANDBOX_ENV_VARS)
    if code == errno.EROFS or (sandboxed and code in (errno.EACCES, errno.EPERM)):
        return READ_ONLY_HINT
    return default


def create_unique(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
    """A new file that did not exist (O_EXCL: never through a symlink), under a random name.
    By default with the normal umask-based permissions that the final image should have
    (tempfile.mkstemp would make it owner-only); rescue files in the shared temp folder pass
    mode 0o600."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, prefix + os.urandom(6).hex() + suffix)
        try:
            return os.open(path, flags, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(17, "no free temporary file name", folder)


# --out was free when the run started (checked); a further image's STEM-2 name never was
NAME_TAKEN = "the name is taken now (nothing is replaced)"


def place_new(tmp: str, out: str) -> None:
    """Give the finished file `tmp` the name `out` only if nothing is there, not even a
    dangling symlink: a hard link fails then, where an exists-check followed by a rename
    would replace whatever appeared in between. Where the file system has no hard links, a
    rename that refuses an existing target (Windows) or, last, a check just before the rename."""

    try:
        os.link(tmp, out)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, NAME_TAKEN) from None
    except OSError as exc:
        if errno.errorcode.get(exc.errno or 0) not in NO_HARD_LINKS:
            raise
        if os.name == "nt":
            try:
                os.rename(tmp, out)  # fails when out exists
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, NAME_TAKEN) from None
            return
        if os.path.lexists(out):
            raise FileExistsError(errno.EEXIST, NAME_TAKEN) from None
        os.replace(tmp, out)
        return
    try:
        os.remove(tmp)
    except OSError:
        pass  # two names for one complete image: only a stray .part is left behind


ACTIVE_TEMP_FILES: set[str] = set()  # .part files in flight, removed on Ctrl-C by main()


# -- the image sink ---------------------------------------------------------------------------


class ImageSink:
    """Decodes base64 straight into a temporary file beside --out, checks it, renames it.

    If the output folder cannot take the file, the bytes go to a rescue file in the system temp
    folder instead, so an image that was paid for is never lost.
    """

    def __init__(
        self, out: str, force: bool, want_sha256: bool = False, rescue: bool = True
    ) -> None:
        self.out = out
        self.force = force
        self.want_sha256 = want_sha256
        self.rescue = rescue  # previews are not worth a rescue file
        self.tmp: str | None = None
        self.image: SavedImage | None = None
        self.rescue_reason = ""
        self.last_error: ImagegenError | None = None

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def save(self, value: str | Blob) -> bool:
        """Decode one candidate result; True when it is a complete image (kept), else False."""
        if self.image is not None:
            return True
        try:
            image = self._decode(value, rescue=False)
        except (OSError, ValueError) as exc:  # ValueError: a name the file system refuses
            if not self.rescue:
                raise
            self.rescue_reason = getattr(exc, "strerror", None) or str(exc)
            try:
                image = self._decode(value, rescue=True)
            except OSError as second:  # not a network fault: never retried, never re-billed
                raise DiskError(
                    f"the image arrived in full but no folder could hold it: {self.out} "
                    f"({self.rescue_reason}), nor a rescue file in the temp folder "
                    f"({second.strerror or second}); it is lost",
                    unwritable_hint(second.errno, unwritable_hint_text(second.errno)),
                ) from None
        if image is not None:
            self.image = image
        return image is not None

    def _open_temp(self, rescue: bool) -> tuple[IO[bytes], str]:
        ext = "." + (os.path.splitext(self.out)[1].lstrip(".") or "png")
        if rescue:
            import tempfile

            folder, name, suffix = tempfile.gettempdir(), RESCUE_PREFIX, ext
            mode = 0o600  # the shared temp folder: the image is the user's alone
        else:
            folder = os.path.dirname(os.path.abspath(self.out))
            os.makedirs(folder, exist_ok=True)
            name, suffix, mode = "." + os.path.basename(self.out) + ".", ".part", 0o666
        fd, path = create_unique(folder, name, suffix, mode)
        if not rescue:
            ACTIVE_TEMP_FILES.add(path)
        return os.fdopen(fd, "w+b"), path

    def _decode(self, value: str | Blob, rescue: bool) -> SavedImage | None:

        f, path = self._open_temp(rescue)
        self.tmp = path
        hasher = None
        if self.want_sha256:
            import hashlib

            hasher = hashlib.sha256()
        ok = False
        try:
            with f:
                pieces: Iterator[bytes | bytearray]
                if isinstance(value, Blob):
                    pieces = value.pieces()
                else:
                    pieces = (
                        value[i : i + B64_CHUNK].encode("ascii", "replace")
                        for i in range(0, len(value), B64_CHUNK)
                    )
                total = 0
                carry = b""
                padded = False
                for piece in pieces:  # a data: URL came as its Payload (see DIALECTS)
                    chunk = carry + bytes(piece) if carry else piece
                    stripped = chunk.rstrip(b"=")
                    if padded or stripped.translate(None, B64_ALPHABET):
                        self.last_error = GatewayError("the image data is not valid base64")
                        return None
                    padded = len(stripped) != len(chunk)
                    usable = len(chunk) - len(chunk) % 4
                    carry = bytes(chunk[usable:])
                    data = binascii.a2b_base64(chunk[:usable])
                    if hasher is not None:
                        hasher.update(data)
                    f.write(data)
                    total += len(data)
                if carry:
                    if len(carry) % 4 == 1:
                        self.last_error = GatewayError(
                            "the image data is truncated (base64 ends mid-symbol)"
                        )
                        return None
                    data = binascii.a2b_base64(carry + b"=" * (-len(carry) % 4))
                    if hasher is not None:
                        hasher.update(data)
                    f.write(data)
                    total += len(data)
                f.flush()
                f.seek(0)
                kind = sniff_image(f.read(4096))
                if kind is None:
                    self.last_error = GatewayError(
                        "the gateway's result is not an image (unknown bytes)"
                    )
                    return None
                if not image_is_complete(f, kind, total):
                    self.last_error = GatewayError(
                        f"the image is incomplete ({kind.upper()}, {total} bytes, no end marker; "
                        "the stream was cut)",
                        "retry; if it keeps happening, try --format jpeg or webp "
                        "for a smaller payload",
                    )
                    return None
                image = SavedImage(path, kind, total, image_dimensions(f, kind))
                image.rescued = rescue
                if hasher is not None:
                    image.sha256 = hasher.hexdigest()
                ok = True
                return image
        except binascii.Error as exc:
            self.last_error = GatewayError(f"the image data is not valid base64: {exc}")
            return None
        finally:
            if not ok:
                self._remove(path)

    def _remove(self, path: str) -> None:
        try:
            os.remove(path)
        except OSError:
            pass
        ACTIVE_TEMP_FILES.discard(path)
        if self.tmp == path:
            self.tmp = None

    def commit(self) -> SavedImage:
        """Move the checked image to --out; on failure keep it as a rescue file (exit 7)."""
        image = self.image
        assert image is not None and self.tmp is not None
        if not image.rescued:
            try:
                if self.force:
                    os.replace(self.tmp, self.out)
                else:
                    place_new(self.tmp, self.out)
                ACTIVE_TEMP_FILES.discard(self.tmp)
                self.tmp = None
                image.path = self.out
                return image
            except OSError as exc:
                if not self.rescue:  # a preview: not worth a rescue file (discard() removes it)
                    raise
                self.rescue_reason = exc.strerror or str(exc)
                try:
                    self._move_to_rescue(image)
                except OSError:  # the temp folder is full too: the image stays where it is
                    tmp = self.tmp
                    assert tmp is not None
                    ACTIVE_TEMP_FILES.discard(tmp)
                    image.path = tmp
                    image.rescued = True
        self.tmp = None
        raise OutputError(
            f"could not write {self.out}: {self.rescue_reason}; "
            f"the image was saved to {image.path}",
            f"move it where you want it (it is a complete {image.kind.upper()} image)",
        )

    def _move_to_rescue(self, image: SavedImage) -> None:
        """Copy the image into a new owner-only rescue file (a rename would keep the temporary
        file's permissions, readable by others in the shared temp folder)."""
        import shutil
        import tempfile

        assert self.tmp is not None
        fd, rescue = create_unique(tempfile.gettempdir(), RESCUE_PREFIX, "." + image.kind, 0o600)
        try:
            with os.fdopen(fd, "wb") as dst, open(self.tmp, "rb") as src:
                shutil.copyfileobj(src, dst, READ_CHUNK)
        except BaseException:
            try:
                os.remove(rescue)
            except OSError:
                pass
            raise
        self._remove(self.tmp)
        image.path = rescue
        image.rescued = True

    def discard(self) -> None:
        if self.tmp is not None and (self.image is None or not self.image.rescued):
            self._remove(self.tmp)


# -- the collector ----------------------------------------------------------------------------


class Collector:
    """Follows one response (stream events or a JSON body) and hands image results to the sink.
    Its entry points (on_sse, handle_event, handle_json) make each answer
    canonical first (DIALECTS); the handlers behind them know only the canonical shapes."""

    def __init__(self, sink: ImageSink, progress: Progress | None = None) -> None:
        self.sink = sink
        self.progress: Quiet = progress or QUIET  # never None: a null object when unwatched
        self.response_id = ""
        self.item_id = ""
        self.revised_prompt = ""
        self.item_size = ""
        self.item_format = ""
        self.texts: list[str] = []
        self.deltas: list[str] = []
        self.text_chars = 0  # characters in texts and deltas (at most MAX_MODEL_TEXT)
        self.failure: ImagegenError | None = None
        self.call_failed = False  # an image call failed with no error object of its own
        self.finished = False
        self.events = 0
        self.unreadable = 0
        self.previews = 0  # previews handed to on_partial
        self.max_previews = 0  # --partial-images: at most this many are written
        self.on_partial: Callable[[int, str | Blob], None] | None = None
        self.warn: Callable[[str], None] | None = None
        self.debug: Callable[[str], None] | None = None
        self.sequence = -1  # the last sequence_number seen: a broken stream resumes after it
        self.resumed = False  # replaying a stored stream: skip events already seen
        self.status = ""  # the response's status when an answer said it (JSON, final event)
        self.retry_after: float | None = None  # set by exchange() from the answer's headers
        self.urls: list[str] = []  # image URLs (no base64 came): run_job downloads them
        self.extras: list[ImageSink] = []  # distinct further images, saved as STEM-2.EXT...
        self.on_id: Callable[[str], None] | None = None  # told the response id once known
        self.links_in_text = False  # self.urls came from the model's text, not an image item
        self.main_usage: dict[str, Any] | None = None  # the Responses model's `usage`
        self.image_usage: dict[str, Any] | None = None  # tool_usage.image_gen, Images API usage

    def carry_over(self, before: Collector) -> None:
        """Continue what an earlier attempt of the same stored response saw (a resume)."""
        self.response_id = before.response_id
        self.sequence = before.sequence
        self.texts, self.deltas = before.texts, before.deltas
        self.text_chars = before.text_chars
        self.resumed = before.sequence >= 0
        self.on_id = before.on_id

    def _note_id(self, value: Any) -> None:
        if not isinstance(value, str) or not usable_response_id(value):
            if value and self.debug is not None:
                self.debug("ignored a response id that cannot be fetched (see RESPONSE_ID)")
            return
        if value != self.response_id:
            self.response_id = str(value)
            if self.on_id is not None:
                self.on_id(self.response_id)

    # -- input -------------------------------------------------------------------------------

    def on_sse(self, name: str, spool: JsonSpool) -> None:
        if not spool.blobs and len(spool.head) < 16 and spool.head.strip() == b"[DONE]":
            self.finished = True
            return
        try:
            event = spool.parse()
        except ValueError:
            self.unreadable += 1
            return
        if isinstance(event, dict):
            self.events += 1
            if self.debug is not None:
                size = len(spool.head) + sum(len(b) for b in spool.blobs.values())
                self.debug(f"event {event.get('type') or name} ({size} bytes)")
            self.handle_event(event, name)

    def handle_event(self, ev: Mapping[str, Any], name: str = "") -> None:
        self._event(canonical_event(ev, name))

    def _event(self, ev: Mapping[str, Any]) -> None:
        etype = ev["type"]
        seq = ev.get("sequence_number")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if self.resumed and seq <= self.sequence:
                return  # a gateway that replays from the start: this one was handled
            self.sequence = max(self.sequence, seq)
        if etype in ("response.created", "response.in_progress", "response.queued"):
            resp = ev.get("response")
            if isinstance(resp, dict) and resp.get("id"):
                self._note_id(resp["id"])
            self._phase("queued" if etype == "response.queued" else "in progress")
        elif etype == "response.image_generation_call.generating":
            self._phase("generating")
        elif etype == PARTIAL_IMAGE:
            self._preview(ev)
        elif etype == "response.image_generation_call.completed":
            self._phase("finalising")
        elif etype == "response.output_item.done":
            item = ev.get("item")
            if isinstance(item, dict):
                self._item(item)
        elif etype == "response.output_text.delta":
            if isinstance(ev.get("delta"), str):
                self.keep_text(self.deltas, ev["delta"])
        elif etype in FINAL_EVENTS:
            resp = ev.get("response")
            if isinstance(resp, dict):
                self._response(resp)
            self.finished = True
        elif etype == "error":
            self.failure = error_from_payload(ev["error"])
            self.finished = True

    def _preview(self, ev: Mapping[str, Any]) -> None:
        index = ev.get("partial_image_index", self.previews)
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index <= MAX_PREVIEW_INDEX
        ):
            return  # not a number we would put in a file name or on the terminal
        self._phase(f"partial {index + 1}")
        data = ev.get("partial_image_b64")
        if isinstance(data, (str, Blob)) and data and self.on_partial is not None:
            if self.previews >= self.max_previews:
                if self.previews == self.max_previews and self.warn is not None:
                    self.warn(
                        f"the gateway sent more previews than the {self.max_previews} "
                        "asked for; the extras are ignored"
                    )
                self.previews = self.max_previews + 1
                return
            self.previews += 1
            self.on_partial(index, data)

    def _item(self, item: Mapping[str, Any]) -> None:
        itype = item.get("type")
        if itype == "image_generation_call":
            self._image_call(item)
        elif itype == "image_url":
            url = item["url"]
            if url not in self.urls and len(self.urls) < MAX_IMAGE_URLS:
                self.urls.append(url)  # a relay that hosts the image: run_job downloads it
        elif itype == "message":
            for part in listed(item.get("content")):
                if isinstance(part, dict) and part.get("type") in ("output_text", "refusal"):
                    text = part.get("text") or part.get("refusal")
                    if isinstance(text, str) and text.strip():
                        self.keep_text(self.texts, text.strip())

    def _image_call(self, item: Mapping[str, Any]) -> None:
        result = item.get("result")
        if result and not isinstance(result, (str, Blob)):
            self.unreadable += 1  # a gateway bug; a later copy of the item may be fine
            if self.failure is None:
                self.failure = GatewayError(
                    f"the image result is not base64 text (a JSON {type(result).__name__})",
                    started=True,
                )
        elif result and not self.sink.has_image:
            if self.sink.save(result):  # any non-empty result counts, whatever the status
                self.item_id = str(item.get("id") or "")
                self.revised_prompt = text_of(item.get("revised_prompt"), 10_000)
                self.item_size = str(item.get("size") or "")
                self.item_format = str(item.get("output_format") or "")
        elif result and (not self.item_id or str(item.get("id") or "") != self.item_id):
            self.save_extra(result)  # another item: a second image, or a relay's copy
        elif not result and item.get("status") == "failed" and self.failure is None:
            err = item.get("error")
            if isinstance(err, dict):
                self.failure = error_from_payload(err)
            else:
                self.call_failed = True  # the reason may be in the model's text (verdict)

    def keep_text(self, texts: list[str], text: str) -> None:
        """Keep the model's text up to MAX_MODEL_TEXT characters in all (texts and deltas):
        a stream of text events that never ends must not fill memory."""
        room = MAX_MODEL_TEXT - self.text_chars
        if room > 0:
            texts.append(text if len(text) <= room else mask_cut(text[:room]))
            self.text_chars += min(room, len(text))

    def handle_json(self, obj: Mapping[str, Any]) -> None:
        """A whole JSON answer: a Response object, an Images API answer, or an error."""
        obj = canonical_answer(obj)
        if _error_answer(obj):
            self.failure = error_from_payload(obj["error"])
        elif isinstance(obj.get("data"), list):
            self._images_answer(obj)
        else:
            self._response(obj)

    def _images_answer(self, obj: Mapping[str, Any]) -> None:
        """The Images API's answer: {"data": [{"b64_json": ...} or {"url": ...}], "usage"}.
        It has no response id ("created" is a time): nothing of it is stored to fetch again."""
        for entry in obj["data"]:
            if not isinstance(entry, dict):
                continue
            if self.sink.has_image:
                if isinstance(entry.get("b64_json"), (str, Blob)) and entry["b64_json"]:
                    self.save_extra(entry["b64_json"])
                continue
            b64 = entry.get("b64_json")
            if b64 and not isinstance(b64, (str, Blob)):
                self.unreadable += 1
                if self.failure is None:
                    self.failure = GatewayError("b64_json is not base64 text", started=True)
            elif b64 and self.sink.save(b64):
                self.revised_prompt = text_of(entry.get("revised_prompt"), 10_000)
            elif (
                isinstance(entry.get("url"), str)
                and entry["url"] not in self.urls
                and len(self.urls) < MAX_IMAGE_URLS
            ):
                self.urls.append(entry["url"])  # a hosted image: run_job downloads it
        self.image_usage = token_counts(obj.get("usage")) or self.image_usage

    def _response(self, resp: Mapping[str, Any]) -> None:
        if resp.get("id"):
            self._note_id(resp["id"])
        # usage is the main (text) model's; the image model's tokens, billed apart, come in
        # tool_usage.image_gen on current models. Absent stays absent: never a made-up zero.
        self.main_usage = token_counts(resp.get("usage")) or self.main_usage
        tool_usage = resp.get("tool_usage")
        if isinstance(tool_usage, dict):
            self.image_usage = token_counts(tool_usage.get("image_gen")) or self.image_usage
        if isinstance(resp.get("status"), str):
            self.status = resp["status"]
        had_texts = bool(self.texts)
        for item in listed(resp.get("output")):
            if isinstance(item, dict) and not (had_texts and item.get("type") == "message"):
                self._item(item)
        if self.failure is None:
            self.failure = self._failure_of(resp)

    def _failure_of(self, resp: Mapping[str, Any]) -> ImagegenError | None:
        """What a Response object's error or final status says went wrong, if anything."""
        status = resp.get("status")
        err = resp.get("error")
        if isinstance(err, dict) and err:
            return error_from_payload(err)
        if status == "failed":
            return GatewayError("the response failed without a reason", started=True)
        if status == "incomplete":
            details = resp.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            if reason == "content_filter":
                return NoImageError("the response was stopped by the content filter")
            return GatewayError(
                "the response ended incomplete ({})".format(reason or "no reason given"),
                started=True,
            )
        if status == "cancelled" and not self.sink.has_image:
            return GatewayError("the response was cancelled on the gateway", started=True)
        return None

    def save_extra(self, value: str | Blob) -> None:
        """A further image in the same answer: saved as STEM-2.EXT, ... unless it has the same
        bytes as one already kept (some relays send the image twice)."""
        extra = self.extra_sink()
        if extra is not None:
            try:
                extra.save(value)
            except ImagegenError as exc:
                if self.debug is not None:
                    self.debug(f"a further image could not be kept: {exc.message}")
            self.keep_extra(extra)

    def extra_sink(self) -> ImageSink | None:
        """Where the next distinct image would go (STEM-2.EXT, STEM-3.EXT, ...), if anywhere."""
        if self.sink.image is None or len(self.extras) >= 8:
            return None
        stem, ext = os.path.splitext(self.sink.out)
        path = f"{stem}-{len(self.extras) + 2}{ext or '.png'}"
        return ImageSink(path, self.sink.force, self.sink.want_sha256)

    def keep_extra(self, extra: ImageSink) -> None:
        """Keep a decoded further image unless its bytes equal an image already kept."""
        import filecmp

        image = extra.image
        if image is not None:
            kept = [self.sink.image, *(e.image for e in self.extras)]
            if not any(
                k is not None
                and k.nbytes == image.nbytes
                and filecmp.cmp(k.path, image.path, shallow=False)
                for k in kept
            ):
                self.extras.append(extra)
                return
        extra.image = None  # a duplicate is removed even from the rescue folder
        extra.discard()

    def _phase(self, phase: str) -> None:
        self.progress.phase(phase)

    # -- verdict -----------------------------------------------------------------------------

    def verdict(self, transport_ended_early: bool) -> None:
        """Raise the right error when no image was saved; return quietly when one was."""
        if self.sink.has_image:
            return
        if self.failure is not None:
            raise self.failure
        if self.sink.last_error is not None:
            raise self.sink.last_error
        if self.status in ("queued", "in_progress") and self.response_id:
            raise StillRunning(self.status, self.response_id)
        text = "\n".join(self.texts) or "".join(self.deltas).strip()
        if not self.urls and not self.call_failed:
            self.urls = image_links(text)  # a relay that turned the image into a text link
            self.links_in_text = bool(self.urls)
        if self.urls:
            return  # run_job downloads them
        if text:
            lead = "the image generation call failed" if self.call_failed else "no image came back"
            raise NoImageError(
                f"{lead}; the model answered in text: " + text_of(text, 2000),
                "make the request explicitly visual, or rephrase it",
                text=text,
            )
        if self.call_failed:
            raise NoImageError("the image generation call failed without a reason")
        if transport_ended_early or not self.finished:
            raise GatewayError(
                f"the stream ended before the image arrived ({self.events} events received)",
                "the gateway or a proxy cut the connection; retry, or try --format jpeg",
                retryable=True,
                started=True,
            )
        raise NoImageError(
            "the response contained no image{}".format(
                f" ({self.unreadable} unreadable events)" if self.unreadable else ""
            ),
            "the gateway may not support the image_generation tool for this model; "
            "run with --verbose to see the answer",
        )


def listed(value: Any) -> list[Any]:
    """A JSON array from the gateway, or [] when it sent something else there."""
    return value if isinstance(value, list) else []


def image_links(text: str) -> list[str]:
    """Image addresses in the model's text: markdown image links first, then bare http(s) URLs
    that end in an image extension (a few at most)."""

    found = re.findall(r"!\[[^\]\n]{0,500}\]\(\s*<?((?:https?://|data:image/)[^\s)>]+)", text)
    # bare URLs: bounded in length and searched near the start only, since each "http" would
    # otherwise scan to the end of the text (1 MB of "http://" took minutes, past --timeout)
    found += re.findall(
        r"https?://[^\s()<>\"'\]\[]{1,4096}\.(?:png|jpe?g|webp|gif)(?:\?[^\s()<>\"']*)?",
        text[:MAX_LINK_SEARCH],
    )
    links: list[str] = []
    for url in found:
        if url not in links and len(links) < 4:
            links.append(url)
    return links


# -- output paths, checked before sending -----------------------------------------------------


def check_output_path(out: str, force: bool) -> None:
    """Refuse before sending anything if --out cannot become the image."""
    check_text(out, "the output path", path=True)
    if out.endswith(("/", os.sep)) or (os.altsep and out.endswith(os.altsep)):
        raise OutputError(
            f"--out {out} names a folder", "give a file name, e.g. {}".format(out + "image.png")
        )
    if os.path.isdir(out):
        raise OutputError(
            f"--out {out} is a directory",
            "give a file name, e.g. {}".format(os.path.join(out, "image.png")),
        )
    if os.path.lexists(out) and not force:
        raise OutputError(
            f"{out} already exists", "pass --force to overwrite it, or choose another --out"
        )
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"cannot create the folder for {out}: {parent} is not a directory")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        name_max = 255
    longest = len(os.fsencode(os.path.basename(out))) + TEMP_NAME_EXTRA
    if name_max and longest > name_max:
        raise OutputError(
            f"--out file name is too long ({longest - TEMP_NAME_EXTRA} bytes; this folder takes "
            f"{name_max - TEMP_NAME_EXTRA} for an image name)",
            "choose a shorter name",
        )
    # Try it: access() says nothing about a read-only mount or a sandbox's rules, and the
    # image must not be paid for only to find that no file can hold it.
    try:
        fd, probe = create_unique(parent, ".imagegen-probe.", ".part")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(
            "cannot write in {}: {}".format(parent, (exc.strerror or str(exc)).lower()),
            unwritable_hint(exc.errno, "choose another --out folder"),
        ) from None


def is_own_sidecar(path: str) -> bool:
    """Whether `path` is a sidecar this script wrote (so a new one may replace it): a small
    regular file holding the JSON object write_sidecar() makes for the image beside it."""

    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
            return False
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_SIDECAR_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # nested too deeply: not one of ours
        return False
    return (
        isinstance(data, dict)
        and data.get("path") == os.path.basename(path[: -len(".json")])
        and isinstance(data.get("version"), str)
        and isinstance(data.get("request"), dict)
        and "sha256" in data
    )


def check_sidecar_path(out: str, force: bool) -> None:
    """Before sending, like check_output_path: --sidecar must not replace a file at OUT.json
    that is not an earlier sidecar, unless --force."""
    path = out + ".json"
    if os.path.isdir(path):
        raise OutputError(f"--sidecar: {path} is a directory", "choose another --out")
    if os.path.lexists(path) and not force and not is_own_sidecar(path):
        raise OutputError(
            f"--sidecar: {path} already exists and is not a sidecar written by this script",
            "pass --force to overwrite it, or choose another --out",
        )


# =============================================================================================
# 10. Exchange: one attempt over the wire, and image downloads
# =============================================================================================

# -- HTTP error answers -----------------------------------------------------------------------


def answer_kind(label: str, first: bytes) -> str:
    """ "json" or "event-stream": what the body's first bytes show, else what its Content-Type
    says. Relays mislabel answers both ways, and a JSON body never looks like an SSE line."""
    head = first.lstrip()[:6]
    if head[:1] in (b"{", b"["):
        return "json"
    if head.startswith((b"event:", b"data:", b"id:", b"retry:", b":")):
        return "event-stream"
    return "json" if "json" in label and "event-stream" not in label else "event-stream"


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from retry-after-ms / retry-after (seconds or HTTP date), if 0..cap."""
    value = headers.get("retry-after-ms")
    try:
        if value is not None:
            seconds = float(value) / 1000.0
            return seconds if 0 <= seconds <= RETRY_AFTER_CAP else None
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils

        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):  # a year beyond a C long: Overflow
            return None
    return seconds if 0 <= seconds <= RETRY_AFTER_CAP else None


def http_error(
    status: int,
    reason: str,
    headers: Any,
    body: bytes,
    gw: Gateway,
    path: str = "/responses",
    wire: Wire | None = None,
) -> ImagegenError:
    """Our error for an HTTP error answer: the gateway's own message, never a raw HTML page;
    a proxy's own answer is named as the proxy's. The steps: what the body says
    (ErrorAnswer), whether a retry is safe (http_retryable), then the first of: the proxy's
    refusal, a refused key (AuthError), moderation, any other error with its hint."""

    said = ErrorAnswer(headers, body, reason)
    message, code = said.message, said.code
    if wire is not None and wire.proxy is not None and wire.from_proxy():
        return proxy_refusal(wire.proxy, f"{status} {message}", host_of(gw.base_url))
    summary = http_summary(status, gw, said, headers)
    retry_after = parse_retry_after(headers)
    retryable, relay_retried = http_retryable(status, headers, said, path)
    if status in (401, 403):
        return AuthError(
            summary,
            auth_hint(gw, message),
            status=status,
            code=code,
            retryable=retryable and should_retry_header(headers) is True,
        )
    if code == "moderation_blocked" or (
        said.etype == "image_generation_user_error" and "safety" in message.lower()
    ):
        return moderation_error(code, summary, said.details)
    hint = http_hint(status, said, gw.url(path))
    if relay_retried and not retryable:
        more = (
            "the gateway already retried this request itself (a relay such as LiteLLM), so "
            "the script does not repeat it (each try may be billed)"
        )
        hint = f"{hint}; {more}" if hint else more
    return GatewayError(
        summary,
        hint,
        status=status,
        code=code,
        retryable=retryable,
        retry_after=retry_after,
        started=status == 524,  # the CDN gave up waiting; the gateway may still be working
        detail=message,
        param=said.param,
        relay_failure=relay_own_failure(status, headers, said),
    )


def http_summary(status: int, gw: Gateway, said: ErrorAnswer, headers: Any) -> str:
    """The one line an HTTP error is reported as: status, gateway host, the gateway's words,
    its error code, and the request id a gateway's support asks for (once)."""
    message, code = said.message, said.code
    request_id = text_of(headers.get("x-request-id"), 200)
    return "HTTP {} from {}: {}{}{}".format(
        status,
        host_of(gw.base_url),
        message,
        f" ({code})" if code else "",
        f" [request id {request_id}]" if request_id and request_id not in message else "",
    )


class ErrorAnswer:
    """What the body of an HTTP error answer says, in one-line, masked text: the message of an
    OpenAI-style error object ({"error": {...}}, FastAPI's {"detail": ...}, a bare
    {"message": ...}), else an HTML page's title, else the start of the text; the reason
    phrase when the body says nothing."""

    __slots__ = ("message", "code", "etype", "param", "details", "openai_error")

    def __init__(self, headers: Any, body: bytes, reason: str) -> None:
        self.message, self.code, self.etype, self.param = "", "", "", ""
        self.details: dict[str, Any] = {}
        ctype = (headers.get("content-type") or "").lower()
        text = body.decode("utf-8", "replace")
        parsed: Any = None
        if "json" in ctype or text.lstrip()[:1] in ("{", "["):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                parsed = None
        # the OpenAI shape proper: a 5xx without it is a relay's own failure (relay_own_failure)
        self.openai_error = isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
        if isinstance(parsed, dict):
            self._read_json(parsed)
        elif "<" in text[:200] and ("html" in ctype or "<html" in text[:2000].lower()):
            self.message = html_error_message(text)
        else:
            self.message = text_of(text, 300)
        self.message = self.message or text_of(reason, 200) or "no details"
        self.code = text_of(self.code, 100)

    def _read_json(self, parsed: dict[str, Any]) -> None:
        """The fields of a JSON error body: an error object, an error string, or a detail."""
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            self.details = err
            self.message = text_of(err.get("message") or err.get("detail") or err.get("msg"))
            self.code = str(err.get("code") or "")
            self.etype = str(err.get("type") or "")
            self.param = str(err.get("param") or "")
        elif isinstance(err, str):
            self.message = text_of(err)
        if not self.message and isinstance(parsed.get("detail"), str):
            self.message = text_of(parsed["detail"])


def html_error_message(text: str) -> str:
    """An HTML error page as "HTML page: its title", never the page itself. The search is
    bounded and near the start: unbounded, each "<title>" of a 2 MB page is scanned to its
    end."""
    title = re.search(r"<title[^>]{0,200}>(.{0,1000}?)</title>", text[:65536], re.I | re.S)
    return "HTML page" + (": " + text_of(title.group(1), 200) if title else "")


def should_retry_header(headers: Any) -> bool | None:
    """What the gateway's x-should-retry header says (OpenAI's SDKs obey it), None if nothing."""
    should = (headers.get("x-should-retry") or "").strip().lower()
    return should == "true" if should in ("true", "false") else None


def http_retryable(status: int, headers: Any, said: ErrorAnswer, path: str) -> tuple[bool, bool]:
    """Whether the script may repeat the request, and whether the gateway already retried it
    itself (then a paid POST is not repeated: each try may be billed; a free GET still is).
    A rate limit, a conflict, a timeout and a 5xx are retried, an exhausted quota or a
    moderation block never; the gateway's x-should-retry overrides both."""
    retryable = status in RETRY_STATUSES or status >= 500
    code = said.code
    if code in ("insufficient_quota", "moderation_blocked") or "quota" in code:
        retryable = False
    should = should_retry_header(headers)
    if should is not None:
        retryable = should
    relay_retried = status >= 500 and gateway_retried(headers, said.message)
    if relay_retried and not path.startswith("/responses/"):  # a paid POST, not a free GET
        retryable = False
    return retryable, relay_retried


def relay_own_failure(status: int, headers: Any, said: ErrorAnswer) -> bool:
    """Whether a 5xx is a relay's own failure (not an OpenAI error object, not a CDN's page),
    perhaps after the upstream rendered and billed the image. A CDN's page (Cloudflare) says
    the origin failed or is unreachable; a CDN is also what cuts a non-streamed request at
    ~100 s (524), so its 5xx never turns streaming off."""
    server = str(headers.get("server") or "").lower()
    cdn = (
        bool(headers.get("cf-ray"))
        or "cloudflare" in server
        or "cloudflare" in said.message.lower()
    )
    return status in RELAY_FAILURE_STATUSES and not said.openai_error and not cdn


def auth_hint(gw: Gateway, message: str) -> str:
    """The hint for a 401/403: which key was sent (never the key), or how to get an
    unverified organisation verified."""
    if "must be verified" in message:
        return (
            "verify your organization at https://platform.openai.com/settings/organization/"
            "general; access can take 15-30 minutes to arrive"
        )
    carrier = f"sent in the {gw.header_credential} header" if gw.header_credential else ""
    return "check the API key ({})".format(gw.key_source or carrier or "none was sent")


def http_hint(status: int, said: ErrorAnswer, url: str) -> str:
    """The hint for any other error answer: the first rule that applies, in this order (an
    answer below 400 is not the gateway's; an unverified organisation is named whatever the
    status); "" when none does."""
    rules = (
        (
            status < 400,
            "something other than the gateway answered (a proxy or login page?): check base_url",
        ),
        (
            "must be verified" in said.message,
            "verify your organization at https://platform.openai.com/settings/organization/general",
        ),
        (status == 404, f"check base_url: {url} does not exist there (does it need /v1?)"),
        (
            status == 413,
            "the request is too large for the gateway: shrink the reference images or use JPEG",
        ),
        (
            status == 524,
            "a CDN cut the connection while the image was generating; "
            "streaming (the default) avoids this",
        ),
        (
            said.code == "insufficient_quota",
            "the account is out of credit; add billing or use another key",
        ),
        (status == 429, "rate limited; wait a moment or lower --concurrency"),
    )
    return next((hint for applies, hint in rules if applies), "")


def gateway_retried(headers: Any, message: str) -> bool:
    """Whether an error answer shows that the gateway retried the request itself."""
    attempted = str(headers.get("x-litellm-attempted-retries") or "").strip()
    if attempted.isdigit():  # where LiteLLM counts them, the count decides
        return int(attempted) > 0
    names = [str(name).lower() for name in headers.keys()]
    if any(name.startswith(RELAY_RETRY_HEADER_PREFIXES) for name in names):
        return True
    return re.search(RELAY_RETRIED_WORDS, message.lower()) is not None


# -- requests ---------------------------------------------------------------------------------


class Request:
    """One HTTP request to the gateway: path under base_url, body, content type, method
    (a GET, to fetch a stored response, has no body)."""

    __slots__ = ("path", "body", "content_type", "stream", "method")

    def __init__(
        self, path: str, body: Body, content_type: str, stream: bool, method: str = "POST"
    ) -> None:
        self.path = path
        self.body = body
        self.content_type = content_type
        self.stream = stream
        self.method = method


def responses_request(payload: Mapping[str, Any]) -> Request:
    return Request("/responses", encode_body(payload), "application/json", bool(payload["stream"]))


def fetch_request(response_id: str, *, stream: bool, after: int = -1) -> Request:
    """GET a stored response: its JSON, or (stream) its events after sequence number `after`
    (from the start when none was seen). Never a new, paid request."""
    from urllib.parse import quote

    path = "/responses/" + quote(response_id, safe="")
    if stream:
        path += "?stream=true" + (f"&starting_after={after}" if after >= 0 else "")
    return Request(path, Body([]), "", stream, method="GET")


def images_request(job: Job, size: str, drop: Iterable[str] = ()) -> Request:
    """The Images API equivalent: JSON to /images/generations, or multipart to /images/edits
    (built here with the standard library) when there are reference images or a mask."""

    fields: dict[str, Any] = {
        "model": job.tool_options.get("model") or DEFAULT_IMAGES_MODEL,
        "prompt": job.prompt,
        "size": size,
    }
    fields.update((k, v) for k, v in job.tool_options.items() if k != "model" and k not in drop)
    if not job.images:
        body = json.dumps(fields, ensure_ascii=False).encode("utf-8")
        return Request("/images/generations", Body([body]), "application/json", False)
    boundary = "----codex-imagegen-" + os.urandom(12).hex()
    parts: list[bytes | InputImage | RawFile] = []
    for name, value in fields.items():
        parts.append(
            '--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'.format(
                boundary, name, value
            ).encode("utf-8")
        )
    files = [("image[]", image) for image in job.images]
    if job.mask is not None:
        files.append(("mask", job.mask))
    for name, image in files:
        # a file name is only a label here: keep it one printable line, and a name that is not
        # UTF-8 (kept as lone surrogates) becomes "?"s rather than an error after the upload
        base = os.path.basename(image.path)
        filename = "".join(c if c.isprintable() and c != '"' else "_" for c in base)
        parts.append(
            '--{}\r\nContent-Disposition: form-data; name="{}"; filename="{}"\r\n'
            "Content-Type: {}\r\n\r\n".format(boundary, name, filename, image.mime).encode(
                "utf-8", "replace"
            )
        )
        parts.append(RawFile(image.path, image.size))
        parts.append(b"\r\n")
    parts.append("--{}--\r\n".format(boundary).encode("ascii"))
    return Request("/images/edits", Body(parts), "multipart/form-data; boundary=" + boundary, False)


# -- one attempt ------------------------------------------------------------------------------


def exchange(
    gw: Gateway,
    settings: Settings,
    request: Request,
    collector: Collector,
    deadline: float,
    console: Console,
) -> None:
    """One attempt over the wire: the request is sent and the answer (SSE or JSON) is fed to
    the collector as it arrives. The steps are helpers below; this keeps only their order and
    the one place where a transport exception becomes our error (attempt_failure)."""
    url = gw.url(request.path)
    headers = attempt_headers(gw, request)
    clock = Clock(settings.idle_timeout, deadline)
    wire: Wire | None = None
    status = 0  # nonzero once the gateway answered: a break after that is a cut stream
    try:
        wire = Wire(url, settings, clock)
        resp = open_and_send(wire, request, headers, collector.progress, clock, console)
        status = resp.status
        # a poll answer may say when to ask again
        collector.retry_after = parse_retry_after(resp.headers)
        refuse_answer_head(resp, wire, gw, request.path, console)
        collector.progress.phase("waiting")
        first, ctype = read_answer_start(wire, resp, console)
        if "event-stream" in ctype:
            ended_early = read_sse_body(wire, first, collector, clock)
        else:
            read_json_body(wire, first, status, collector, console)
            ended_early = False
        # a body the watchdog cut has already raised (Wire._read_raw): one that ended is whole,
        # and judged as such even if the budget ran out while its last bytes were handled
        collector.verdict(transport_ended_early=ended_early)
    except ImagegenError:
        raise
    except Exception as exc:
        if not is_transport_fault(exc):
            raise  # a bug, not the network: its traceback is wanted
        failure = attempt_failure(exc, wire, clock, settings, collector, status, url)
        if failure is not None:
            raise failure from None
    finally:
        if wire is not None:
            wire.close()


def attempt_headers(gw: Gateway, request: Request) -> dict[str, str]:
    """The gateway's headers (key, configured ones) plus what this request's body and the
    answer it wants (an event stream or one JSON document) need."""
    headers = gw.request_headers()
    if request.method == "POST":
        headers["Content-Type"] = request.content_type
    headers["Accept"] = "text/event-stream" if request.stream else "application/json"
    return headers


def open_and_send(
    wire: Wire,
    request: Request,
    headers: dict[str, str],
    progress: Quiet,
    clock: Clock,
    console: Console,
) -> Any:
    """Connect, send the request and wait for the head of the answer (status and headers).
    The progress sink learns the connection first: an MCP cancellation closes it, a stalled
    proxy or TLS handshake too."""
    progress.connected(wire)
    wire.open()
    progress.checkpoint()
    body = request.body
    if request.method == "POST":
        headers["Content-Length"] = str(body.length)
    console.debug(f"{request.method} {wire.url} ({body.length} bytes)")
    for name, value in {**headers, **wire.extra}.items():
        console.debug(f"  {name}: {mask_secret(value) if looks_secret(name, value) else value}")
    clock.arm()
    wire.send(request.method, headers, body.chunks())
    return wire.answer()


def refuse_answer_head(resp: Any, wire: Wire, gw: Gateway, path: str, console: Console) -> None:
    """Raise our error when the head alone shows the answer holds no image: an HTTP error, an
    HTML page (a captive portal or a proxy's login page instead of the gateway), a redirect
    (never followed: it would resend the key and the body)."""
    status = resp.status
    console.debug(
        "HTTP {} {} ({})".format(
            status, text_of(resp.reason, 80), text_of(resp.getheader("content-type"), 80)
        )
    )
    if status >= 400 or "html" in (resp.getheader("content-type") or "").lower():
        raise http_error(status, resp.reason, resp.headers, wire.read_limited(), gw, path, wire)
    if 300 <= status < 400:
        location = resp.getheader("location") or "no Location given"
        raise GatewayError(
            f"HTTP {status} from {host_of(wire.url)}: redirected to "
            + text_of(redact_url(location), 300),
            "set base_url to the address it redirects to (the script does not follow "
            "redirects: they would resend the key and the body)",
            status=status,
        )


def read_answer_start(wire: Wire, resp: Any, console: Console) -> tuple[bytes, str]:
    """The first bytes of the body and what they are ("text/event-stream" or JSON): the bytes
    decide, not the label, which relays get wrong."""
    label = (resp.getheader("content-type") or "").lower()
    first = wire.read()
    while first and not first.strip() and len(first) < MAX_EVENT_BYTES:
        more = wire.read()  # leading blank lines say nothing about what follows
        if not more:
            break
        first += more
    ctype = answer_kind(label, first)
    if ctype not in label:
        console.debug(f"the answer is labelled {label or 'nothing'!r} but reads as {ctype}")
    return first, ctype


def read_sse_body(wire: Wire, first: bytes, collector: Collector, clock: Clock) -> bool:
    """Feed an event stream to the collector to its end; True when the body ended before the
    response did (the collector judges what that means).

    Once the image is safe, the rest (message, response.completed with a second copy of the
    image) is read to its end for READ_TO_END_GRACE seconds at most: a relay records a
    completed request and its usage, and a stall there cannot hold the image up (a timeout
    then just returns)."""
    parser = SSEParser(collector.on_sse)
    if first:
        parser.feed(first)
    grace_set = False
    while not collector.finished:
        if collector.sink.has_image and not grace_set:
            grace_set = True
            clock.deadline = min(clock.deadline, time.monotonic() + READ_TO_END_GRACE)
        chunk = wire.read()
        if not chunk:
            break
        parser.feed(chunk)
    if not collector.finished and not collector.sink.has_image:
        parser.close()
    return not collector.finished


def read_json_body(
    wire: Wire, first: bytes, status: int, collector: Collector, console: Console
) -> None:
    """Read a JSON answer whole (spooled to disk past a size, never held twice in memory) and
    hand it to the collector; a body that is not JSON, or is cut short, is our error."""
    if first.lstrip()[:1] not in (b"{", b""):
        head = first + wire.read_limited(64 * 1024)
        raise GatewayError(
            "the gateway answered HTTP {} with something that is not JSON: {}".format(
                status, text_of(head.decode("utf-8", "replace"), 200)
            )
        )
    spool = JsonSpool()
    try:
        chunk = first
        while chunk:
            spool.feed(chunk)
            chunk = wire.read()
        try:
            obj = spool.parse()
        except ValueError as exc:
            raise GatewayError(
                f"the gateway's JSON answer is unreadable: {exc}",
                "the body may have been cut short; retry",
                retryable=True,
                started=True,
            ) from None
        # an object: the body's first byte was "{" (a blank body does not parse, and blanks
        # past MAX_EVENT_BYTES overflow the spool)
        if console.verbose:
            console.debug(json_answer_summary(obj))
        collector.handle_json(obj)
    finally:
        spool.close()
    collector.finished = True


def json_answer_summary(obj: Mapping[str, Any]) -> str:
    """One debug line for a JSON answer: its status and the type/status of each output item."""
    items = [
        f"{i.get('type')}/{i.get('status')}"
        for i in listed(obj.get("output"))
        if isinstance(i, dict)
    ]
    return f"JSON answer: status {obj.get('status')}, output {items}"


def is_transport_fault(exc: BaseException) -> bool:
    """Whether an exception is the network's or the answer's doing (socket, TLS, http.client,
    a decoder) rather than a bug in the script."""
    return isinstance(exc, (OSError, ValueError, EOFError)) or is_http_exception(exc)


def attempt_failure(
    exc: BaseException,
    wire: Wire | None,
    clock: Clock,
    settings: Settings,
    collector: Collector,
    status: int,
    url: str,
) -> ImagegenError | None:
    """Our error for a transport exception during one attempt, or None when the image is
    already safe: a connection that breaks or stalls after it does not matter.

    A stall is the idle limit's or the total budget's (the clock or the watchdog knows which);
    a break after the gateway answered is a cut stream (retryable, but the gateway had
    started: a retry may be billed); a break before is the network's (describe_network_error)."""
    import socket

    if isinstance(exc, socket.timeout):
        if collector.sink.has_image:
            return None
        if clock.total_limited or (wire is not None and wire.watchdog_fired()):
            return out_of_time(settings.timeout)
        return NetworkError(
            f"no data from the gateway for {settings.idle_timeout:g}s (--idle-timeout)",
            "the gateway stalled; raise --idle-timeout for slow renders, or retry",
        )
    if isinstance(exc, TimeoutError):  # the clock's own (Python 3.9: not a socket.timeout)
        return None if collector.sink.has_image else out_of_time(settings.timeout)
    if isinstance(exc, OSError) and exc.errno in DISK_FAULTS:  # a socket never says these
        return disk_error(exc, "while the answer arrived")
    if collector.sink.has_image:
        return None
    if wire is not None and wire.watchdog_fired():
        return out_of_time(settings.timeout)
    if status:
        return GatewayError(
            "the connection broke while reading the answer ({}: {})".format(
                type(exc).__name__, text_of(str(exc), 200)
            ),
            "the gateway or a proxy cut the stream; retrying may help",
            retryable=True,
            started=True,
        )
    return describe_network_error(exc, url)


# -- image downloads --------------------------------------------------------------------------


def download_image(
    url: str, settings: Settings, deadline: float, sink: ImageSink, progress: Quiet = QUIET
) -> bool:
    """GET an image URL from an answer into the sink; True when it kept a complete image.

    The URL is a third-party address: no Authorization and no configured header go there.
    http(s) only, redirects followed (to http(s) only) up to MAX_REDIRECTS, at most
    MAX_DOWNLOAD_BYTES, within the run's connect/idle/total timeouts; proxies and CA rules
    are those of every request (Wire). The bytes stream into a Blob, never memory."""
    for _ in range(MAX_REDIRECTS + 1):
        if not is_web_url(url):
            raise GatewayError(f"the image address is not an http(s) URL: {text_of(url, 80)}")
        kept = download_hop(url, settings, deadline, sink, progress)
        if isinstance(kept, bool):
            return kept
        url = kept  # a redirect: checked again at the top before anything is sent there
    raise GatewayError(f"the image URL redirected more than {MAX_REDIRECTS} times")


def is_web_url(url: str) -> bool:
    """Whether an address from an answer may be fetched: http(s), a host, a port that is not
    0; an unparsable one (a bad port or IPv6 literal) is not."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        web = parts.scheme in ("http", "https") and bool(parts.hostname)
        return web and parts.port != 0
    except ValueError:
        return False


DOWNLOAD_HINT = "image URLs from relays are often short-lived; run again soon after"


def download_hop(
    url: str, settings: Settings, deadline: float, sink: ImageSink, progress: Quiet
) -> bool | str:
    """One GET of download_image: whether the sink kept the image, or the address a redirect
    names. A transport failure is retryable: a GET costs nothing."""
    import socket
    from urllib.parse import urljoin

    host = host_of(url)
    clock = Clock(settings.idle_timeout, deadline)
    wire: Wire | None = None
    blob: Blob | None = None
    try:
        wire = Wire(url, settings, clock)
        progress.connected(wire)  # an MCP cancellation closes the download too
        wire.open()
        progress.checkpoint()
        wire.send("GET", {"User-Agent": USER_AGENT, "Accept": "image/*"}, ())
        resp = wire.answer()
        location: str | None = resp.getheader("location")
        if 300 <= resp.status < 400 and location:
            try:
                return urljoin(url, location)
            except ValueError:  # e.g. a broken IPv6 literal
                return location  # refused, as not an http(s) URL, by download_image
        refuse_download_head(resp, host)
        blob = Blob()
        stream_base64(wire, blob, host)
        return sink.save(blob)
    except (socket.timeout, TimeoutError):
        raise NetworkError(f"downloading the image from {host} timed out", retryable=True) from None
    except (GatewayError, NetworkError) as exc:
        if "the image" not in exc.message:  # the wire's words (a refused connection, a body
            exc.message = "downloading the image: " + exc.message  # cut short): say whose
            exc.hint = DOWNLOAD_HINT  # not base_url's: the link's host is the relay's choice
        exc.retryable = exc.retryable or isinstance(exc, NetworkError)  # a GET costs nothing
        raise
    except ImagegenError:
        raise
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError)) and not is_http_exception(exc):
            raise
        err = describe_network_error(exc, url)
        err.message = "downloading the image: " + err.message
        err.retryable = True  # a GET: retrying it costs nothing
        raise err from None
    finally:
        if blob is not None:
            blob.close()
        if wire is not None:
            wire.close()


def refuse_download_head(resp: Any, host: str) -> None:
    """Raise our error when the answer's head shows no image will come: not a 200 (a 5xx or
    a rate limit may pass on retry), or a Content-Length above MAX_DOWNLOAD_BYTES."""
    if resp.status != 200:
        raise GatewayError(
            f"downloading the image from {host} failed: HTTP {resp.status} "
            + text_of(resp.reason, 100),
            DOWNLOAD_HINT,
            status=resp.status,
            retryable=resp.status >= 500 or resp.status in RETRY_STATUSES,
        )
    length = (resp.getheader("content-length") or "").strip()
    if length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
        raise GatewayError(f"the image at {host} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MB")


def stream_base64(wire: Wire, blob: Blob, host: str) -> None:
    """Copy the body into the blob as base64 (what the sink decodes and checks), whole 3-byte
    groups at a time, refusing it past MAX_DOWNLOAD_BYTES whatever Content-Length said."""
    import base64

    carry, total = b"", 0
    while True:
        chunk = wire.read()
        if not chunk:
            blob.write(base64.b64encode(carry))
            return
        total += len(chunk)
        if total > MAX_DOWNLOAD_BYTES:
            raise GatewayError(
                f"the image at {host} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MB"
            )
        data = carry + chunk
        usable = len(data) - len(data) % 3  # whole base64 groups only
        blob.write(base64.b64encode(data[:usable]))
        carry = data[usable:]


# -- outcomes, resume commands and image URLs -------------------------------------------------


class Outcome:
    """What one job produced, for printing, --json and the sidecar."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.image: SavedImage | None = None
        self.response_id = ""
        self.item_id = ""
        self.revised_prompt = ""
        self.final_size = job.size
        self.item_size = ""
        self.item_format = ""
        self.stream = job.stream
        self.retries = 0
        self.fallbacks: list[str] = []
        self.elapsed = 0.0
        self.started_at = 0.0
        self.api = "responses"
        self.used_previous = False
        self.error: ImagegenError | None = None
        self.stored = False  # the gateway keeps the response: --resume / --edit-from can use it
        self.resumes = 0  # times a broken stream was resumed or a stored response fetched
        self.extra_images: list[SavedImage] = []  # distinct further images (STEM-2.EXT, ...)
        self.main_usage: dict[str, Any] | None = None  # tokens of the Responses model
        self.image_usage: dict[str, Any] | None = None  # tokens of the image model

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.error is None else self.error.exit_code


def gateway_id(value: str, limit: int = MAX_GATEWAY_ID) -> str:
    """An id the gateway chose, as we keep it: one clean line, bounded, secrets masked."""
    text = redact(sanitize(value))
    return clip(text, limit)


def backoff(retry_index: int) -> float:
    import random

    return float(min(BACKOFF_BASE * 2**retry_index, BACKOFF_MAX) * (1 - 0.25 * random.random()))


def retry_wait(exc: ImagegenError, retry_index: int) -> float:
    """The one rule for how long to wait before trying again: what the gateway said
    (Retry-After, retry-after-ms, already capped), else backoff with jitter."""
    after = getattr(exc, "retry_after", None)
    return float(after) if after is not None else backoff(retry_index)


PENDING_RESUMES: dict[str, str] = {}  # --out -> id of a stored response in flight (for Ctrl-C)
RESUME_ARGS: list[str] = []  # how this run reaches its gateway (set by run()), for --resume hints


def resume_command(response_id: str, out: str) -> str:
    """The exact command that fetches a stored response's image later without paying again.
    An id with characters a shell or cmd.exe acts on (%, &, quotes: shlex quoting is POSIX
    only) is not pasted into it: the command names RESPONSE_ID and says where the id is."""

    script = sys.argv[0] if sys.argv and sys.argv[0] else PROG
    python = "py -3 " if os.name == "nt" else "python3 "  # python3 is often a store stub there
    head = python + shlex.quote(script) if script.endswith(".py") else shlex.quote(script)
    plain = plain_response_id(response_id)
    words = [*RESUME_ARGS, "--resume", response_id if plain else "RESPONSE_ID", "--out", out]
    command = head + " " + " ".join(shlex.quote(w) for w in words)
    return command if plain else command + " (RESPONSE_ID: the response id above, quoted)"


def link_host(url: str) -> str:
    """What messages show of an image URL: its host (the rest is often a signature)."""
    return "a data: URL" if url.startswith("data:") else host_of(url)


def fetch_image_urls(
    collector: Collector, settings: Settings, deadline: float, console: Console, label: str
) -> None:
    """Download the image URLs an answer gave instead of base64: the first image into the
    collector's sink, distinct further ones beside it. GETs only: a failure is retried within
    --retries and the time budget, never by sending the prompt again."""

    sink = collector.sink
    progress = collector.progress or QUIET
    failure: ImagegenError | None = None
    for url in collector.urls:
        target = sink if not sink.has_image else collector.extra_sink()
        if target is None:
            break
        for attempt in range(settings.retries + 1):
            try:
                if url.startswith("data:"):
                    target.save(data_url_payload(url))
                else:
                    console.debug(f"downloading the image from {host_of(url)} (no gateway headers)")
                    download_image(url, settings, deadline, target, collector.progress)
                break
            except (GatewayError, NetworkError) as exc:
                progress.checkpoint()  # a cancelled call is not retried
                failure = exc
                wait = backoff(attempt)
                if not exc.retryable or attempt >= settings.retries:
                    break
                if time.monotonic() + wait >= deadline:
                    break
                console.warn(f"{label}{exc.message}; retrying the download in {wait:.1f}s")
                progress.pause(wait)
        progress.checkpoint()
        if target is not sink:
            collector.keep_extra(target)
        elif not sink.has_image and sink.last_error is not None:
            failure = sink.last_error
            failure.message = f"the image URL ({link_host(url)}) gave no image: {failure.message}"
    if not sink.has_image:
        raise failure or NoImageError("the answer's image URL gave no image")
    if collector.links_in_text:  # not an image item: say where the picture came from
        console.warn(
            f"{label}no image item came back; saved the image the model's text links to "
            f"({link_host(collector.urls[0])})"
        )


# =============================================================================================
# 11. Exchange policy: what may change between attempts (the plan), the gateway quirks (one
#    table), and one function that turns a failure into exactly one decision
# =============================================================================================


def client_rejection(exc: ImagegenError) -> GatewayError | None:
    """The one guard in front of every quirk that reads a refusal: a 4xx answer that is not an
    authentication failure (401/403 are never a quirk)."""
    if isinstance(exc, GatewayError) and not isinstance(exc, AuthError) and 400 <= exc.status < 500:
        return exc
    return None


def rejected_tool_option(exc: GatewayError, tool: Mapping[str, Any]) -> str | None:
    """The image-tool option a 400 names (tools[0].quality, input_fidelity, ...), if it was
    sent and is one the image can do without."""

    param = exc.param.lower()
    match = re.fullmatch(r"tools\[\d+\]\.(\w+)", param)
    name = match.group(1) if match else param
    if not name:
        msg = exc.detail.lower()
        found = re.search(r"tools\[\d+\]\.(\w+)", msg)
        if found:
            name = found.group(1)
        elif re.search(r"unsupported|unknown|invalid|not supported|not allowed|not available", msg):
            named = [n for n in DROPPABLE_TOOL_OPTIONS if re.search(rf"[`'\"]{n}[`'\"]", msg)]
            name = named[0] if len(named) == 1 else ""
    return name if name in DROPPABLE_TOOL_OPTIONS and name in tool else None


def relay_cut_stream(exc: ImagegenError) -> bool:
    """A stream failure that is a relay's broken upstream connection, not the response's own
    end (see RELAY_CUT_WORDS): a stored response is fetched, not taken as failed."""
    return (
        isinstance(exc, GatewayError)
        and exc.code == "server_error"
        and re.search(RELAY_CUT_WORDS, exc.detail.lower()) is not None
    )


IMAGE_TOOL_UNSUPPORTED = (
    r"image_generation\W.*(not supported|unsupported|not found|unknown|not enabled|not available)"
    r"|(not supported|unsupported|unknown|invalid).*\bimage_generation\b"
)


def images_fallback_reason(exc: ImagegenError, request_path: str) -> str | None:
    """Why /responses cannot make images here (for --api auto), or None."""

    refusal = client_rejection(exc)
    if refusal is None or request_path != "/responses":
        return None
    msg = refusal.detail.lower()
    if refusal.status == 404:
        return "the gateway has no /responses endpoint"
    if re.search(IMAGE_TOOL_UNSUPPORTED, msg):
        return "the gateway's /responses does not support the image tool"
    if "tool_choice" in msg or "tool choice" in msg or refusal.param == "tool_choice":
        return "the gateway rejects a forced tool_choice"
    return None


def rejects_background(exc: ImagegenError) -> bool:
    """The gateway will not keep responses: store: true or background: true refused (relays on
    ChatGPT accounts answer "Store must be set to false"), over HTTP or in the stream (an
    error event has no status)."""

    if not isinstance(exc, GatewayError):
        return False
    if exc.status and client_rejection(exc) is None:  # a 401/403 (AuthError) included
        return False
    param = exc.param.lower()
    if param in ("store", "background"):
        return True
    msg = exc.detail.lower()
    if param.startswith("tools") or "transparent" in msg or "opaque" in msg:
        return False  # the image tool's background option, not background mode
    refused = r"[^.]*\b(false|not (be )?supported|unsupported|not allowed|disabled|not available)"
    return bool(
        re.search(r"\bstore\b" + refused, msg) or re.search(r"\bbackground\b" + refused, msg)
    )


def rejects_previous_response(exc: ImagegenError) -> bool:
    if not isinstance(exc, GatewayError) or not 400 <= exc.status < 500:
        return False
    msg = exc.detail.lower()
    return (
        "previous_response" in msg
        or "previous response" in msg
        or exc.param == "previous_response_id"
    )


def keep_cause(first: GatewayError | None, last: ImagegenError) -> None:
    """The cause stays the cause: after a meaningful first failure (a 429 or a 5xx), a later
    attempt's different, generic error (no param: a relay's own 400/500, as claude-relay-service
    answers once it has parked its upstream account) is not the cause. The final error then
    names the first failure, and the hint says why the later one may look unrelated."""
    if first is None or last is first or not isinstance(last, GatewayError):
        return
    if not (last.status == 400 or last.status >= 500) or last.param:
        return
    if last.code not in ("", str(last.status)):
        return  # a specific error (it names its code): that one is the cause
    if last.status == first.status and last.detail == first.detail:
        return  # the same failure again: its own message says it all
    last.message = f"{first.message}; a later attempt got {last.message}"
    paused = (
        f"the relay may have paused its upstream account after that {first.status} and "
        "answers a generic error meanwhile (claude-relay-service parks it for up to an hour "
        "after a 429, 5 minutes after a 500): wait, then run again"
    )
    last.hint = "; ".join(h for h in (paused, first.hint) if h)


class Plan:
    """What may change between the attempts of one job; the policy (decide()) changes it,
    run_job() sends what it says."""

    __slots__ = (
        "api",
        "stream",
        "force_tool",
        "size",
        "use_previous",
        "keep",
        "dropped",
        "fetch",
        "stored_id",
        "used",
        "poll_wait",
        "resume_wait",
    )

    def __init__(self, job: Job) -> None:
        self.api = "images" if job.api == "images" else "responses"
        self.stream = job.stream
        self.force_tool = True  # tool_choice forces the image tool
        self.size = job.size
        self.use_previous = bool(job.previous_response_id)
        self.keep = job.resumable and self.api == "responses"  # background mode: it is stored
        self.dropped: list[str] = []  # image-tool options a gateway refused
        self.fetch = "poll" if job.resume_id else ""  # "": POST; "stream"/"poll": GET stored
        self.stored_id = job.resume_id
        self.used: set[str] = set()  # adaptations made (each at most once)
        # the pace of free GETs of the stored response: polls, and resumes of a cut stream
        self.poll_wait = POLL_FIRST
        self.resume_wait = 0.0  # the first resume is at once, then RESUME_FIRST doubling

    @property
    def stored(self) -> bool:
        """A stored response is in play: it is fetched, never sent again."""
        return self.keep or bool(self.fetch)

    def tool(self, job: Job) -> dict[str, Any]:
        """The image tool's options as this plan sends them."""
        if self.api != "responses":
            return dict(job.tool_options)
        tool: dict[str, Any] = build_payload(job, stream=self.stream, size=self.size)["tools"][0]
        for name in self.dropped:
            tool.pop(name, None)
        return tool

    def request(self, job: Job, after: int) -> Request:
        if self.fetch:
            return fetch_request(self.stored_id, stream=self.fetch == "stream", after=after)
        if self.api == "images":
            return images_request(job, self.size, self.dropped)
        payload = build_payload(
            job,
            stream=self.stream,
            size=self.size,
            force_tool=self.force_tool,
            use_previous=self.use_previous,
            background=self.keep,
            drop=self.dropped,
        )
        return responses_request(payload)


class Situation:
    """Everything the policy may look at after a failed attempt."""

    __slots__ = ("exc", "plan", "job", "outcome", "collector", "seen", "settings", "deadline")

    def __init__(
        self,
        exc: ImagegenError,
        plan: Plan,
        job: Job,
        outcome: Outcome,
        collector: Collector,
        seen: int,
        settings: Settings,
        deadline: float,
    ) -> None:
        self.exc = exc
        self.plan = plan
        self.job = job
        self.outcome = outcome
        self.collector = collector
        self.seen = seen  # the last event number before this attempt
        self.settings = settings
        self.deadline = deadline

    @property
    def response_id(self) -> str:
        return self.collector.response_id or self.plan.stored_id

    @property
    def client_error(self) -> bool:
        """A 4xx that no retry changes (401/403 included)."""
        exc = self.exc
        return (
            isinstance(exc, GatewayError)
            and 400 <= exc.status < 500
            and exc.status not in RETRY_STATUSES
        )

    def fits(self, wait: float) -> bool:
        return time.monotonic() + wait < self.deadline


class Decision:
    """What to do next: wait and go on (a retry, a resume, a poll or an adapted plan, with
    the one line the user sees), or give up with `error`."""

    __slots__ = ("wait", "warning", "fallback", "error", "hold", "phase", "debug")

    def __init__(
        self,
        wait: float = 0.0,
        warning: str = "",
        *,
        fallback: bool = False,
        error: ImagegenError | None = None,
        hold: bool = False,
        phase: str = "",
        debug: str = "",
    ) -> None:
        self.debug = debug  # a line for --verbose only
        self.wait = wait
        self.warning = warning
        self.fallback = fallback  # the warning is an adaptation, listed in `fallbacks`
        self.error = error
        self.hold = hold  # a 429: every concurrent job waits too
        self.phase = phase


def give_up(exc: ImagegenError) -> Decision:
    return Decision(error=exc)


# -- gateway quirks: one entry each (how to recognise it, what it changes, what the user reads)


class Quirk:
    """A gateway quirk: `recognise` reads the failure (None: not this one; else the line the
    user is told), `change` adapts the plan. Each is applied at most once a job; `paid` ones
    repeat a request that may have rendered (they count as a retry); under --strict the
    `strict_hint` is given instead of the change when one is set."""

    __slots__ = ("name", "recognise", "change", "paid", "strict_hint")

    def __init__(
        self,
        name: str,
        recognise: Callable[[Situation], str | None],
        change: Callable[[Situation], None],
        *,
        paid: bool = False,
        strict_hint: Callable[[Situation], str] | None = None,
    ) -> None:
        self.name = name
        self.recognise = recognise
        self.change = change
        self.paid = paid
        self.strict_hint = strict_hint


def _images_api(s: Situation) -> str | None:
    if s.job.api != "auto" or s.job.image_urls or s.plan.api != "responses":
        return None
    reason = images_fallback_reason(s.exc, "/responses")
    return reason and reason + "; switching to the Images API (/images/...)"


def _to_images_api(s: Situation) -> None:
    s.plan.api, s.plan.keep = "images", False


def _previous_refused(s: Situation) -> str | None:
    if not (s.plan.use_previous and rejects_previous_response(s.exc)):
        return None
    return "the gateway rejected previous_response_id; re-uploading the image"


def _store_refused(s: Situation) -> str | None:
    if not (s.plan.keep and rejects_background(s.exc)):
        return None
    return (
        "the gateway does not keep responses (store/background refused); sending a normal "
        "request, which cannot be resumed if the connection breaks"
    )


def _relay_stream_failure(s: Situation) -> str | None:
    """Portkey's quirk: a relay's own 5xx (not an OpenAI error) to a streamed request, sent
    after the upstream delivered the image. Repeating the same request would pay again for
    the same failure; one non-streamed retry works."""
    exc = s.exc
    if not (isinstance(exc, GatewayError) and exc.relay_failure):
        return None
    if not (s.plan.stream and s.plan.api == "responses"):
        return None
    return (
        f"the relay failed the streamed request with its own HTTP {exc.status} "
        f"({text_of(exc.detail, 120)}), not an OpenAI error: the image may already have been "
        "rendered and billed; retrying once without streaming (use --no-stream with this "
        "gateway)"
    )


def _refused_option(s: Situation) -> str | None:
    refusal = client_rejection(s.exc)
    tool = s.plan.tool(s.job)
    name = rejected_tool_option(refusal, tool) if refusal is not None else None
    if name is None or "drop:" + name in s.plan.used:
        return None
    return f"the gateway rejected the image option {name}={tool[name]!r}; resending once without it"


def _drop_option(s: Situation) -> None:
    refusal = client_rejection(s.exc)
    assert refusal is not None
    name = rejected_tool_option(refusal, s.plan.tool(s.job))
    assert name is not None
    s.plan.dropped.append(name)
    s.plan.used.add("drop:" + name)


def _small_size(s: Situation) -> str | None:
    refusal = client_rejection(s.exc)
    if refusal is None or "minimum pixel budget" not in refusal.detail.lower():
        return None
    if s.settings.strict_size or s.job.strict:
        return None
    bigger = larger_known_size(s.plan.size)
    if not bigger:
        return None
    return (
        f"the gateway rejected {s.plan.size} as below its minimum pixel budget; "
        f"retrying once with {bigger}"
    )


def _bigger_size(s: Situation) -> None:
    s.plan.size = larger_known_size(s.plan.size) or s.plan.size


def _forced_tool_refused(s: Situation) -> str | None:
    refusal = client_rejection(s.exc)
    if refusal is None or not s.plan.force_tool:
        return None
    msg = refusal.detail.lower()
    if "tool_choice" in msg or "tool choice" in msg or refusal.param.lower() == "tool_choice":
        return "the gateway rejected the forced tool_choice; retrying once with tool_choice auto"
    return None


def _stream_words(s: Situation, pattern: str, streaming: bool) -> bool:
    refusal = client_rejection(s.exc)
    if refusal is None or s.plan.stream != streaming or s.plan.api != "responses":
        return False
    msg = refusal.detail.lower()
    mentions = "stream" in msg or refusal.param.lower() == "stream"
    return mentions and re.search(pattern, msg) is not None


def _stream_required(s: Situation) -> str | None:
    pattern = r"must be (set to )?true|only .*stream|stream\w* (is )?required|requires? stream"
    if not _stream_words(s, pattern + r"|must stream", streaming=False):
        return None
    return "the gateway only accepts streaming requests; retrying once with stream: true"


def _stream_refused(s: Situation) -> str | None:
    pattern = (
        r"not (be )?supported|unsupported|not allowed|must be (set to )?false"
        r"|disabled|does not support|cannot stream"
    )
    if not _stream_words(s, pattern, streaming=True):
        return None
    return "the gateway refuses streaming requests; retrying once with stream: false"


def _flip_stream(s: Situation) -> None:
    s.plan.stream = not s.plan.stream


def _keep_option_hint(s: Situation) -> str:
    refusal = client_rejection(s.exc)
    name = rejected_tool_option(refusal, s.plan.tool(s.job)) if refusal is not None else None
    return f"--strict keeps {name}: leave it out, or run without --strict"


def _unset(attr: str) -> Callable[[Situation], None]:
    return lambda s: setattr(s.plan, attr, False)


# In the order they are tried. The `name` is what "applied once" means: the three stream
# entries share one, so a gateway cannot make the script flip back and forth.
QUIRKS = (
    Quirk("images", _images_api, _to_images_api),
    Quirk("previous", _previous_refused, _unset("use_previous")),
    Quirk(
        "store",
        _store_refused,
        _unset("keep"),
        strict_hint=lambda s: (
            "this gateway does not keep responses; without --strict, "
            "--resumable falls back to a normal request"
        ),
    ),
    Quirk("stream", _relay_stream_failure, _flip_stream, paid=True),
    Quirk("drop", _refused_option, _drop_option, strict_hint=_keep_option_hint),
    Quirk("size", _small_size, _bigger_size),
    Quirk("tool_choice", _forced_tool_refused, _unset("force_tool")),
    Quirk("stream", _stream_required, _flip_stream),
    Quirk("stream", _stream_refused, _flip_stream),
)
QUIRK_BY_RULE = {quirk.recognise: quirk for quirk in QUIRKS}


def adapt(s: Situation) -> Decision | None:
    """The first quirk that explains this failure, applied to the plan (a request that was
    already POSTed: a GET of a stored response has none)."""
    if s.plan.fetch:
        return None
    for quirk in QUIRKS:
        if quirk.name in s.plan.used and quirk.name != "drop":
            continue
        note = quirk.recognise(s)
        if note is None:
            continue
        if s.job.strict and quirk.strict_hint is not None:
            s.exc.hint = quirk.strict_hint(s)
            continue
        if quirk.paid:
            if s.outcome.retries >= s.settings.retries:
                continue
            s.outcome.retries += 1
        quirk.change(s)
        if quirk.name != "drop":
            s.plan.used.add(quirk.name)
        return Decision(warning=note, fallback=True)
    return None


# -- the policy: small rules, tried in order; the first that decides, decides ---------------------


def stored_response_gone(s: Situation) -> Decision | None:
    exc = s.exc
    if not (s.plan.fetch and isinstance(exc, GatewayError) and exc.status == 404):
        return None
    exc.message = (
        f"the gateway has no stored response {s.response_id} (HTTP 404): it was not stored, "
        "has expired, or the id is wrong"
    )
    exc.hint = (
        "check the id; only a run with --resumable, on a gateway that keeps responses, can be "
        "resumed"
        if s.job.resume_id
        else "this gateway accepts background mode but does not keep responses; run again "
        "without --resumable (that request is billed again)"
    )
    return give_up(exc)


def stream_replay_refused(s: Situation) -> Decision | None:
    if s.plan.fetch != "stream" or not s.client_error:
        return None
    s.plan.used.add("stream-fetch")  # this gateway cannot replay a stream: poll it
    s.plan.fetch = "poll"
    return Decision(debug=f"resuming the stream was refused ({s.exc.message}); polling")


def response_ended(s: Situation) -> Decision | None:
    """A fetched response that has ended (failed, incomplete, cancelled) is the answer."""
    return give_up(s.exc) if s.plan.fetch and ended(s) else None


def ended(s: Situation) -> bool:
    if s.collector.status not in TERMINAL_STATUSES:
        return False
    return bool(s.plan.fetch) or not relay_cut_stream(s.exc)  # a relay's "failed": it runs on


def resume_stored(s: Situation) -> Decision | None:
    """The stored response keeps running on the gateway: fetch it, never POST it again. A
    resume that brought nothing new counts as a retry; all resumes are paced (RESUME_FIRST
    doubling to RESUME_MAX) and stop at MAX_RESUMES."""
    plan, outcome, exc = s.plan, s.outcome, s.exc
    if not (plan.stored and s.response_id) or ended(s) or s.client_error:
        return None
    if s.collector.status in TERMINAL_STATUSES and s.collector.sequence > s.seen:
        s.collector.sequence -= 1  # a relay's own "failed" event is not the gateway's
    plan.stored_id = s.response_id
    if outcome.resumes >= MAX_RESUMES:
        return give_up(
            GatewayError(
                f"{exc.message}; the stored response {s.response_id} was fetched "
                f"{outcome.resumes} times without the image (the limit)",
                "the gateway keeps cutting the stream; try --no-stream",
                status=getattr(exc, "status", 0),
            )
        )
    progress = s.collector.sequence > s.seen
    wait = plan.resume_wait if progress else retry_wait(exc, outcome.retries)
    if not s.fits(wait) or (not progress and outcome.retries >= s.settings.retries):
        return give_up(exc)
    outcome.retries += not progress
    plan.resume_wait = min(max(plan.resume_wait * 2, RESUME_FIRST), RESUME_MAX)
    plan.fetch = plan.fetch or ("stream" if plan.stream else "poll")
    outcome.resumes += 1
    after = s.collector.sequence
    return Decision(
        wait,
        f"{exc.message}; fetching the stored response {s.response_id}"
        + (f" after event {after}" if plan.fetch == "stream" and after >= 0 else "")
        + " (no new request is paid)",
    )


def retry_same(s: Situation) -> Decision | None:
    """A failure worth trying again as it was (see GatewayError.retryable), within --retries
    and the time budget."""
    exc, outcome, settings = s.exc, s.outcome, s.settings
    if not isinstance(exc, (GatewayError, NetworkError)):
        return None
    if not exc.retryable or outcome.retries >= settings.retries:
        return None
    wait = retry_wait(exc, outcome.retries)
    if not s.fits(wait):
        return None
    outcome.retries += 1
    billed = exc.started and not s.plan.fetch
    return Decision(
        wait,
        f"attempt {outcome.retries}/{settings.retries + 1} failed: {exc.message}; retrying in "
        f"{wait:.1f}s"
        + (" (the gateway had already started, so this may be billed twice)" if billed else ""),
        hold=isinstance(exc, GatewayError) and exc.status == 429,
    )


POLICY: tuple[Callable[[Situation], Decision | None], ...] = (
    stored_response_gone,
    stream_replay_refused,
    response_ended,
    resume_stored,
    adapt,
    retry_same,
)


def decide(s: Situation) -> Decision:
    """Exactly one decision for a failed attempt: the first rule of POLICY that has one, else
    give up with the failure as the cause."""
    for rule in POLICY:
        decision = rule(s)
        if decision is not None:
            return decision
    return give_up(s.exc)


def still_running(exc: StillRunning, s: Situation) -> Decision:
    """A stored response that is queued or in progress: follow its stream once, else poll it
    (POLL_FIRST doubling to POLL_MAX, or what the gateway's Retry-After says)."""
    plan = s.plan
    if not (plan.keep or s.job.resume_id):
        return give_up(exc)
    plan.stored_id = s.collector.response_id or plan.stored_id
    if s.job.stream and plan.fetch != "stream" and "stream-fetch" not in plan.used:
        plan.fetch, wait = "stream", 0.0  # follow its stream from here on
    else:
        plan.fetch = "poll"
        after = s.collector.retry_after
        wait = after if after is not None else plan.poll_wait
        plan.poll_wait = min(plan.poll_wait * 2, POLL_MAX)
    if not s.fits(wait):
        status = exc.response_status
        return give_up(out_of_time(s.settings.timeout, f" while the response was still {status}"))
    return Decision(
        wait,
        phase=exc.response_status.replace("_", " "),
        debug=f"response {plan.stored_id} is {exc.response_status}; next look in {wait:.1f}s",
    )


# =============================================================================================
# 12. Output: console (stderr, redacted), progress line, results on stdout
# =============================================================================================


class Console:
    """Every line the script prints goes through here, so the key is redacted and control
    characters are replaced everywhere."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        import _thread  # threading itself costs start-up time that --help does not need

        self.quiet = quiet
        self.verbose = verbose
        self.lock = _thread.RLock()
        self.status_shown = False  # a TTY status line is on screen and must be cleared first

    def add_secret(self, value: str) -> None:
        add_secret(value)

    def redact(self, text: str) -> str:
        """What may reach the terminal: no secrets, no escape sequences (line breaks and tabs
        of our own multi-line output stay)."""
        return redact(sanitize(text, lines=True))

    def _err(self, line: str) -> None:
        with self.lock:
            if self.status_shown:
                sys.stderr.write("\r\x1b[2K")
                self.status_shown = False
            sys.stderr.write(self.redact(line) + "\n")
            sys.stderr.flush()

    def info(self, message: str) -> None:
        if not self.quiet:
            self._err(message)

    def warn(self, message: str) -> None:
        self._err("warning: " + message)

    def debug(self, message: str) -> None:
        if self.verbose:  # one line each: event names and headers come from the gateway
            self._err("debug: " + sanitize(message))

    def error(self, exc: ImagegenError) -> None:
        self._err("error: " + exc.message + ("\n  hint: " + exc.hint if exc.hint else ""))

    def status(self, line: str, tty: bool) -> None:
        """A progress line: rewritten in place on a terminal, a plain line otherwise."""
        if self.quiet:
            return
        with self.lock:
            if tty:
                dim = "" if os.environ.get("NO_COLOR") else "\x1b[2m"
                reset = "\x1b[0m" if dim else ""
                sys.stderr.write("\r\x1b[2K" + dim + redact(sanitize(line)) + reset)
                sys.stderr.flush()
                self.status_shown = True
            else:
                self._err(line)

    def result(self, line: str) -> None:
        with self.lock:
            if self.status_shown:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
                self.status_shown = False
            sys.stdout.write(self.redact(line) + "\n")
            sys.stdout.flush()


class Progress(Quiet):
    """Elapsed time and stream phase on stderr: in place on a TTY, else a line per phase change
    and a heartbeat at least every HEARTBEAT_SECONDS so an agent's log shows we are alive."""

    def __init__(self, console: Console, total: int = 1) -> None:
        import threading

        self.console = console
        self.total = total
        self.done = 0
        self.phases: dict[int, str] = {}
        self.started = time.monotonic()
        self.last_line = self.started
        self.seen: set[str] = set()  # phase names shown so far
        self.phase_shown = 0.0  # when a phase change was last shown
        self.tty = sys.stderr.isatty()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.thread: Any = None
        self.local = threading.local()

    def start(self) -> None:
        import threading

        if self.console.quiet:
            return
        self.thread = threading.Thread(target=self._tick, name="progress", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
        if self.console.status_shown:
            with self.console.lock:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
                self.console.status_shown = False

    def job(self, index: int) -> None:
        """Bind the calling thread to job `index` (for concurrent runs)."""
        self.local.index = index

    def phase(self, name: str) -> None:
        index = getattr(self.local, "index", 0)
        with self.lock:
            changed = self.phases.get(index) != name
            self.phases[index] = name
            # a new phase at once, one seen before at most once a second: a gateway that
            # flips between two phases must not flood the log (the tick shows the rest)
            now = time.monotonic()
            changed = changed and (name not in self.seen or now - self.phase_shown >= 1.0)
            if changed:
                self.seen.add(name)
                self.phase_shown = now
        if changed:  # off a terminal, concurrent jobs report on finishing and heartbeats only
            self._show(force=not self.tty and self.total == 1)

    def finish_one(self) -> None:
        index = getattr(self.local, "index", 0)
        with self.lock:
            self.done += 1
            self.phases.pop(index, None)
        if self.total > 1:
            self._show(force=True)

    def line(self) -> str:

        elapsed = time.monotonic() - self.started
        with self.lock:
            phases = list(self.phases.values())
        if self.total == 1:
            return "[{:4.0f}s] {}".format(elapsed, phases[0] if phases else "sending")
        running = ", ".join(sorted(set(phases))) or "-"
        return f"[{elapsed:4.0f}s] {self.done}/{self.total} done; running: {running}"

    def _show(self, force: bool = False) -> None:

        if self.console.quiet:
            return
        now = time.monotonic()
        if self.tty or force or now - self.last_line >= HEARTBEAT_SECONDS:
            self.last_line = now
            self.console.status(self.line(), self.tty)

    def _tick(self) -> None:
        while not self.stop_event.wait(1.0):
            self._show()

    # Hooks for the MCP server's calls (McpProgress): cancellation reaches a running job here.
    def connected(self, wire: Wire) -> None:
        """The current job is about to open this connection (shut down on cancellation)."""

    def checkpoint(self) -> None:
        """Raise Cancelled if the job should stop here."""

    def pause(self, seconds: float) -> None:

        time.sleep(seconds)


def usage_fields(outcome: Outcome) -> dict[str, Any]:
    """The token counts the answer carried, under names that say whose they are; a field the
    answer did not carry is left out (never reported as zero)."""
    fields: dict[str, Any] = {}
    if outcome.main_usage:
        fields["main_model_usage"] = outcome.main_usage
    if outcome.image_usage:
        fields["image_model_usage"] = outcome.image_usage
    return fields


def usage_totals(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Summed token counts of several images (--n, --batch, an MCP call with n)."""
    totals: dict[str, Any] = {}
    for outcome in outcomes:
        for name, counts in usage_fields(outcome).items():
            add_token_counts(totals.setdefault(name + "_total", {}), counts)
    return totals


def outcome_record(outcome: Outcome, gw: Gateway) -> dict[str, Any]:
    """The JSON-able summary of one job (for --json)."""
    image = outcome.image
    record: dict[str, Any] = {
        "ok": outcome.error is None,
        "path": image.path if image else None,
        "prompt": outcome.job.prompt,
        "revised_prompt": outcome.revised_prompt or None,
        "response_id": outcome.response_id or None,
        "image_call_id": outcome.item_id or None,
        "requested_size": outcome.job.size,
        "final_requested_size": outcome.final_size,
        "size": "{}x{}".format(*image.dims)
        if image and image.dims
        else (outcome.item_size or None),
        "requested_format": outcome.job.output_format,
        "format": image.kind if image else None,
        "bytes": image.nbytes if image else None,
        "elapsed_seconds": round(outcome.elapsed, 3),
        "retries": outcome.retries,
        "fallbacks": outcome.fallbacks,
        "stream": outcome.stream,
        "endpoint_host": host_of(gw.base_url),
        "stored": outcome.stored,
        "resumes": outcome.resumes,
        "extra_paths": [extra.path for extra in outcome.extra_images],
    }
    record.update(usage_fields(outcome))
    record["exit_code"] = outcome.exit_code
    if outcome.error is not None:
        record["error"] = outcome.error.message
        record["hint"] = outcome.error.hint or default_hint(outcome.error.exit_code)
    return dict(redact_obj(record))


def report_saved(outcome: Outcome, console: Console, quiet_success: bool = False) -> None:
    """Notes on stderr about the saved image: size, and mismatches with what was asked."""
    image = outcome.image
    if image is None:
        return
    expected = EXTENSION_FORMATS.get(os.path.splitext(outcome.job.out)[1].lower())
    if expected and expected != image.kind:
        console.warn(
            f"the gateway returned {image.kind.upper()} bytes but "
            f"{os.path.basename(outcome.job.out)} says {expected.upper()}; kept the path"
        )
    if image.kind == "svg":
        risks = svg_risks(image.path)
        if risks:
            console.warn(
                "{} is an SVG with {}: opened in a browser it can run code or load other "
                "files; show it as an image (<img>) or sanitise it before embedding it".format(
                    image.path, ", ".join(risks)
                )
            )
    requested = parse_size(outcome.final_size) if outcome.final_size != "auto" else None
    if requested and image.dims and tuple(image.dims) != requested:
        console.warn(
            "asked for {}x{} but the image is {}x{}".format(requested[0], requested[1], *image.dims)
        )
    job = outcome.job
    reference = job.images[0] if job.images else None
    if (
        reference is not None
        and reference.dims
        and image.dims
        and min(image.dims) > 0
        and min(reference.dims) > 0
        and (job.size_reason or job.size == "auto")  # an explicit WxH says the shape itself
        and aspect_differs(image.dims, reference.dims)
    ):
        console.warn(
            "the image is {}x{} but the reference {} is {}x{}: the edit changed the picture's "
            "shape; pass --size with the reference's shape (or crop) to keep it".format(
                *image.dims, os.path.basename(reference.path), *reference.dims
            )
        )
    if quiet_success:  # several images: the summary lines on stdout say it
        return
    dims = "{}x{} ".format(*image.dims) if image.dims else ""
    tokens = usage_words(outcome.main_usage, outcome.image_usage)
    console.info(
        f"saved {image.path} ({dims}{image.kind.upper()}, {image.nbytes:,} bytes) "
        f"in {outcome.elapsed:.1f}s" + (f"; tokens: {tokens}" if tokens else "")
    )
    for extra in outcome.extra_images:
        console.info(f"the answer held a further, different image: saved {extra.path}")


SVG_RISKS = (  # what a browser would act on when it opens the file, and how we name it
    (rb"<script", "a <script> element"),
    (rb"[\s\"'/]on[a-z]+\s*=", "event-handler attributes (on...=)"),
    (rb"javascript:", "javascript: URLs"),
    (rb"<foreignobject", "embedded HTML (<foreignObject>)"),
    (rb"<!doctype|<!entity", "a DTD (entity declarations)"),
    (rb"<!entity[^>]{0,512}\b(?:system|public)\b", "an external entity"),  # bounded: linear
    (
        rb"(?:href|src)\s*=\s*[\"']\s*(?!#|data:image/)[^\"'\s]|url\(\s*[\"']?\s*(?!#|data:image/)"
        rb"[^\s\"')]|@import",
        "external references (href, src, url() or @import to another file or site)",
    ),
)


def svg_risks(path: str) -> list[str]:
    """What in an SVG file could run code or fetch something when it is opened (in order of
    SVG_RISKS); read in chunks, so a large file costs no memory."""

    found: set[str] = set()
    tail = b""
    try:
        with open(path, "rb") as f:
            while len(found) < len(SVG_RISKS):
                chunk = f.read(READ_CHUNK)
                if not chunk:
                    break
                text = tail + chunk.lower()
                for pattern, name in SVG_RISKS:
                    if name not in found and re.search(pattern, text):
                        found.add(name)
                tail = text[-SVG_SCAN_OVERLAP:]
    except OSError:
        return []
    return [name for _, name in SVG_RISKS if name in found]


def dry_run_warnings(args: Any, jobs: Sequence[Job], gw: Gateway) -> list[str]:
    """What a real run of the same command would refuse, found without sending or writing
    anything lasting (--dry-run still exits 0: it shows the request, it does not run it)."""
    warnings: list[str] = []
    no_credential = not gw.api_key and not gw.header_credential and gw.key_command is None
    if no_credential and not args.base_url:
        configs = [label for label, _ in gw.layers if label != "auth"]
        if gw.key_problem:
            problem, hint = gw.key_problem, gw.key_hint
        elif not configs:
            problem = "no Codex configuration found"
            hint = "create config.toml naming your gateway, or pass --base-url URL"
        else:
            problem, hint = f"no API key found for provider {gw.provider!r}", gw.key_hint
        warnings.append(
            f"a real run stops here (exit 3): {problem}" + (f"; hint: {hint}" if hint else "")
        )
    for job in jobs:
        if job.resume_id or not job.out:
            if not job.out:
                warnings.append("a real run stops here (exit 2): no --out given")
            continue
        try:
            check_output_path(job.out, job.force)  # its write test leaves nothing behind
            if args.sidecar:
                check_sidecar_path(job.out, job.force)
        except ImagegenError as exc:
            warnings.append(
                f"a real run stops here (exit {exc.exit_code}): {exc.message}"
                + (f"; hint: {exc.hint}" if exc.hint else "")
            )
    return warnings


def print_dry_run(
    gw: Gateway,
    request: Request,
    console: Console,
    payload: Mapping[str, Any] | None = None,
    *,
    notes: Sequence[str] = (),
    warnings: Sequence[str] = (),
    more: Sequence[Job] = (),
    as_json: bool = False,
) -> None:
    """The request as it would be sent: endpoint, headers (credentials masked), body; with
    --json as one object that also lists the warnings."""
    headers = gw.request_headers()
    if request.method == "POST":
        headers["Content-Type"] = request.content_type
    headers["Accept"] = "text/event-stream" if request.stream else "application/json"
    shown: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() == "authorization" and value.lower().startswith("bearer "):
            value = "Bearer " + mask_secret(value[7:])
        elif looks_secret(name):
            value = mask_secret(value)
        shown[name] = value
    comments = list(notes)
    if gw.key_command is not None and not gw.api_key:
        comments.append("the key would come from auth.command (not run by --dry-run)")
    elif gw.key_problem and not gw.api_key:
        comments.append(f"{gw.key_problem}: a real run stops here (exit 3)")
    elif not gw.api_key and not gw.header_credential:
        comments.append("no API key found: no Authorization header would be sent")
    body = display_payload(payload) if payload is not None else display_body(request.body)
    if as_json:
        record: dict[str, Any] = {
            "ok": True,
            "exit_code": EXIT_OK,
            "dry_run": True,
            "method": request.method,
            "url": gw.url(request.path),
            "headers": shown,
            "body": json.loads(body) if payload is not None else body,
            "notes": comments,
            "warnings": list(warnings),
            "more_requests": [{"out": job.out, "prompt": job.prompt} for job in more],
        }
        console.result(json_dumps(redact_obj(record)))
        return
    lines = ["# " + line for line in notes]
    lines.append(request.method + " " + gw.url(request.path))
    lines += [f"{name}: {value}" for name, value in shown.items()]
    lines += ["# " + line for line in comments[len(notes) :]]
    lines.append("")
    lines.append(body)
    if more:
        lines.append(f"# and {len(more)} more request(s) like it:")
        lines += [f"#   {job.out}: {text_of(job.prompt, 80)}" for job in more]
    console.result("\n".join(lines))


def display_body(body: Body) -> str:
    """A non-JSON-payload body for --dry-run: text parts as they are, files as placeholders."""
    out = []
    for part in body.parts:
        if isinstance(part, bytes):
            out.append(part.decode("utf-8", "replace"))
        else:
            out.append(f"<{part.length()} bytes from {part.path}>")
    return "".join(out)


# =============================================================================================
# 13. Job runner: one job through the plan and the policy; planning jobs (single, variants,
#    batch, resume) and running them
# =============================================================================================

# -- one job ----------------------------------------------------------------------------------


def new_collector(
    job: Job,
    sink: ImageSink,
    extras: list[ImageSink],
    before: Collector | None,
    plan: Plan,
    console: Console,
    progress: Progress | None,
    on_partial: Callable[[int, str | Blob], None] | None,
) -> Collector:
    """A collector for the next attempt; a fetch of the stored response continues the last."""
    collector = Collector(sink, progress)
    collector.extras = extras

    def remember(response_id: str) -> None:
        if plan.keep or job.resume_id:
            PENDING_RESUMES[job.out] = response_id

    collector.on_id = remember
    if plan.fetch and before is not None:
        collector.carry_over(before)
    sink.last_error = None  # a bad result of an earlier attempt says nothing about this one
    collector.on_partial = on_partial
    collector.max_previews = job.partial_images
    collector.warn = console.warn
    if console.verbose:
        collector.debug = console.debug
    return collector


def act(decision: Decision, s: Situation, console: Console, label: str) -> None:
    """Carry out a decision that goes on: the user's line, then the wait."""
    if decision.error is not None:
        raise decision.error
    progress = s.collector.progress or QUIET
    if decision.fallback:
        s.outcome.fallbacks.append(decision.warning)
    if decision.warning:
        console.warn(label + decision.warning)
    if decision.phase:
        progress.phase(decision.phase)
    if decision.debug:
        console.debug(decision.debug)
    if decision.hold:
        s.settings.gate.hold(decision.wait)  # slows every concurrent job, not just this one
    progress.pause(decision.wait)


def settle(outcome: Outcome, plan: Plan, collector: Collector, job: Job) -> None:
    """What the answer said about the image, into the outcome."""
    # whole, as --resume and --edit-from need it (a Responses id passed usable_response_id)
    outcome.response_id = gateway_id(collector.response_id or plan.stored_id, RESPONSE_ID_MAX)
    outcome.item_id = gateway_id(collector.item_id)
    outcome.revised_prompt = collector.revised_prompt
    outcome.main_usage, outcome.image_usage = collector.main_usage, collector.image_usage
    outcome.item_size = gateway_id(collector.item_size)  # the gateway's words, like ids
    outcome.item_format = gateway_id(collector.item_format)
    outcome.final_size = plan.size
    outcome.stream = plan.stream and plan.api == "responses"
    outcome.api = plan.api
    outcome.used_previous = plan.use_previous and plan.api == "responses"
    outcome.stored = plan.api == "responses" and (plan.keep or job.store or bool(job.resume_id))


def commit_images(
    outcome: Outcome, sink: ImageSink, extras: Sequence[ImageSink], console: Console, label: str
) -> None:
    outcome.image = sink.commit()
    PENDING_RESUMES.pop(outcome.job.out, None)
    for extra in extras:
        try:
            outcome.extra_images.append(extra.commit())
        except OutputError as exc:
            console.warn(f"{label}a second image: {exc.message}")
            if extra.image is not None:
                outcome.extra_images.append(extra.image)


def explain_failure(
    exc: ImagegenError, outcome: Outcome, plan: Plan, collector: Collector | None, sink: ImageSink
) -> None:
    """A failed job's error, completed: the response it concerns and whether (and how) the
    gateway's stored copy can still be fetched without paying again."""
    job = outcome.job
    response_id = (collector.response_id if collector is not None else "") or plan.stored_id
    if response_id and not isinstance(exc, (OutputError, UsageError)):
        if response_id not in exc.message:
            exc.message += f" (response {response_id})"
        terminal = collector is not None and collector.status in TERMINAL_STATUSES
        gone = isinstance(exc, GatewayError) and exc.status == 404 and bool(plan.fetch)
        if not terminal and not gone and not isinstance(exc, NoImageError):
            if plan.keep or job.resume_id:
                more = (
                    "the gateway keeps the response: fetch its image later, without paying "
                    "again, with: " + resume_command(response_id, job.out)
                )
            else:
                more = (
                    "the response was not stored (store: false), so it cannot be fetched "
                    "again; --resumable keeps it on gateways that allow it"
                )
            exc.hint = f"{exc.hint}; {more}" if exc.hint else more
    outcome.response_id = response_id
    if collector is not None:  # a failed answer may still have been billed
        outcome.main_usage, outcome.image_usage = collector.main_usage, collector.image_usage
    outcome.stored = (  # no response id: the gateway has nothing kept (e.g. it refused store)
        plan.api == "responses"
        and bool(response_id)
        and (plan.keep or job.store or bool(job.resume_id))
    )
    outcome.image = sink.image if isinstance(exc, OutputError) else None
    exc.outcome = outcome  # type: ignore[attr-defined]


def run_job(
    job: Job,
    gw: Gateway,
    settings: Settings,
    console: Console,
    progress: Progress | None = None,
    on_partial: Callable[[int, str | Blob], None] | None = None,
    want_sha256: bool = False,
) -> Outcome:
    """Send the job, save the image, return the outcome: each failed attempt goes to the
    policy (decide()), which retries, resumes or polls a stored response, adapts the plan, or
    gives up. A stored response (--resumable, --resume) is never sent twice. Raises
    ImagegenError; the image, once received, is never lost (see ImageSink)."""

    started = time.monotonic()
    deadline = started + settings.timeout
    outcome = Outcome(job)
    outcome.started_at = time.time()
    SPOOL.folders = [os.path.dirname(os.path.abspath(job.out))]  # not a RAM-backed /tmp
    plan = Plan(job)
    sink = ImageSink(job.out, job.force, want_sha256)
    extras: list[ImageSink] = []
    label = "" if job.name == job.out else job.name + ": "
    collector: Collector | None = None
    first_failure: GatewayError | None = None  # a 429 or 5xx: the cause (see keep_cause)
    pace = progress or QUIET
    try:
        while True:
            settings.gate.wait(deadline, pace.pause)
            pace.checkpoint()
            collector = new_collector(
                job, sink, extras, collector, plan, console, progress, on_partial
            )
            seen = collector.sequence
            try:
                exchange(gw, settings, plan.request(job, after=seen), collector, deadline, console)
                break
            except StillRunning as exc:
                s = Situation(exc, plan, job, outcome, collector, seen, settings, deadline)
                act(still_running(exc, s), s, console, label)
            except (GatewayError, NetworkError) as exc:
                if sink.has_image:
                    break
                if first_failure is None and isinstance(exc, GatewayError):
                    first_failure = exc if exc.status == 429 or exc.status >= 500 else None
                pace.checkpoint()  # a cancelled call is neither retried nor switched
                s = Situation(exc, plan, job, outcome, collector, seen, settings, deadline)
                act(decide(s), s, console, label)
        if not sink.has_image and collector.urls:
            fetch_image_urls(collector, settings, deadline, console, label)
        settle(outcome, plan, collector, job)
        commit_images(outcome, sink, extras, console, label)
        outcome.elapsed = time.monotonic() - started
        return outcome
    except ImagegenError as exc:
        PENDING_RESUMES.pop(job.out, None)
        keep_cause(first_failure, exc)
        explain_failure(exc, outcome, plan, collector, sink)
        outcome.elapsed = time.monotonic() - started
        raise
    finally:
        sink.discard()
        for extra in extras:
            extra.discard()


# -- planning: prompts, variants, batches, --edit-from, --resume ------------------------------


def read_text(path: str, what: str, cap: int, timeout: float) -> str:
    """A small text input (a prompt, a batch): a regular file, stdin ("-") or a pipe, UTF-8."""
    try:
        raw = read_input(path, what, cap, timeout=timeout)
    except (AttributeError, ValueError):  # no stdin at all (closed, or an embedding host)
        raise UsageError(f"{_label(what, path)}: cannot read stdin: it is closed") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{what}: not UTF-8 text") from None


def read_prompt(args: Any) -> str:
    if args.prompt is not None and args.prompt_file:
        raise UsageError("give either --prompt or --prompt-file, not both")
    timeout = args.timeout or DEFAULT_TIMEOUT
    if args.prompt_file:
        return read_text(args.prompt_file, "--prompt-file", MAX_PROMPT_BYTES, timeout)
    if args.prompt == "-":
        return check_text(read_text("-", "--prompt", MAX_PROMPT_BYTES, timeout), "the prompt")
    if args.prompt is None:
        raise UsageError(
            "no prompt given", "pass --prompt TEXT, --prompt - (stdin) or --prompt-file PATH"
        )
    return check_text(str(args.prompt), "--prompt")


def job_options(args: Any, prompt: str, env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "out": args.out,
        "model": args.model or env.get("CODEX_IMAGEGEN_MODEL") or DEFAULT_MODEL,
        "size": args.size,
        "action": args.action,
        "detail": args.detail,
        "images": list(args.image),
        "image_urls": list(args.image_url),
        "mask": args.mask,
        "image_model": args.image_model,
        "quality": args.quality,
        "background": args.background,
        "format": args.format,
        "compression": args.compression,
        "moderation": args.moderation,
        "input_fidelity": args.input_fidelity,
        "partial_images": args.partial_images,
        "stream": args.stream,
        "force": args.force,
        "api": args.api,
        "store": args.store,
        "resumable": args.resumable,
        "strict": args.strict,
    }


BATCH_KEYS: dict[str, Any] = {
    "prompt": str,
    "out": str,
    "size": str,
    "image": (str, list),
    "image_url": (str, list),
    "mask": str,
    "action": str,
    "format": str,
    "quality": str,
    "background": str,
    "compression": int,
    "moderation": str,
    "input_fidelity": str,
    "image_model": str,
    "model": str,
    "detail": str,
}
BATCH_CHOICES = {
    "action": ACTIONS,
    "format": FORMATS + ("jpg",),
    "quality": QUALITIES,
    "background": BACKGROUNDS,
    "moderation": MODERATIONS,
    "input_fidelity": FIDELITIES,
    "detail": DETAILS,
}
WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [
        f"{port}{n}"
        for port in ("COM", "LPT")
        for n in (*"123456789", "\u00b9", "\u00b2", "\u00b3")
    ]
)
FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif", "svg": ".svg"}


def slugify(text: str, limit: int = 40) -> str:

    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "image"


def batch_line_options(text: str) -> dict[str, Any]:
    """One JSONL line: a JSON string (the prompt), a JSON object, or bare prompt text."""

    try:
        value = json.loads(text)
    except RecursionError:
        raise UsageError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        if text.startswith(("{", '"')):
            raise UsageError(f"invalid JSON: {exc}") from None
        value = text  # bare prompt text
    if isinstance(value, str):
        return {"prompt": value}
    if not isinstance(value, dict):
        raise UsageError("expected a prompt string or a JSON object")
    for key, item in value.items():
        if key not in BATCH_KEYS:
            raise UsageError(f"unknown key {key!r} (allowed: {', '.join(sorted(BATCH_KEYS))})")
        kind = BATCH_KEYS[key]
        if not isinstance(item, kind) or isinstance(item, bool):
            raise UsageError(f"{key!r} has the wrong type")
        if key in BATCH_CHOICES and item not in BATCH_CHOICES[key]:
            raise UsageError(f"{key}={item!r} is not one of {', '.join(BATCH_CHOICES[key])}")
    return dict(value)


def check_batch_out(name: str, out_dir: str) -> None:
    """A batch line's `out` must name a file inside --out-dir, the same on every platform:
    no absolute path, drive letter or other ':', backslash, NUL or Windows device name, and no
    way out of the folder, neither by '..' nor through a symlinked subfolder."""

    problem = ""
    parts = name.split("/")
    if "\0" not in name:
        check_text(name, f"out {name!r}", path=True)  # bytes that were not UTF-8
    if "\0" in name:
        problem = "contains a NUL character"
    elif "\\" in name:
        problem = "contains a backslash (use / between folders)"
    elif name.startswith("/") or os.path.isabs(name):
        problem = "is an absolute path"
    elif ":" in name:
        problem = "contains ':' (a drive letter or a Windows stream name)"
    elif any(
        re.split(r"[. ]", part, maxsplit=1)[0].upper() in WINDOWS_DEVICE_NAMES for part in parts
    ):
        problem = "uses a Windows device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9)"
    else:
        inside = os.path.abspath(out_dir)
        target = os.path.abspath(os.path.join(out_dir, name))
        if os.path.commonpath([inside, target]) != inside or target == inside:
            problem = "leaves --out-dir"
        else:
            # what the name resolves to once the existing part of the path is followed
            real_inside = os.path.realpath(out_dir)
            real = os.path.realpath(target)
            if os.path.commonpath([real_inside, real]) != real_inside or real == real_inside:
                problem = f"leads out of --out-dir through a symlink (to {real})"
    if problem:
        raise UsageError(f"out {name!r} must be a relative path inside --out-dir: it {problem}")


def plan_batch(args: Any, env: Mapping[str, str]) -> list[Job]:
    """Every job of the JSONL file, validated before anything is sent (errors name the line)."""
    _check_batch_flags(args)
    text = read_text(args.batch, "--batch", MAX_BATCH_BYTES, args.timeout or DEFAULT_TIMEOUT)
    lines = text.splitlines()
    jobs: list[Job] = []
    errors: list[ImagegenError] = []
    outs: dict[str, int] = {}
    linenos: list[int] = []
    number = 0
    for lineno, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        number += 1
        try:
            jobs.append(_batch_line_job(args, env, text, lineno, number, outs))
            linenos.append(lineno)
        except ImagegenError as exc:
            errors.append(type(exc)(f"{args.batch}:{lineno}: {exc.message}", exc.hint))
    errors += batch_overlaps(args.batch, jobs, linenos, outs)
    if errors:
        worst = max(errors, key=lambda e: e.exit_code)
        message = "\n".join(e.message for e in errors)
        hint = "pass --force to overwrite existing outputs" if "--force" in message else ""
        raise type(worst)(
            f"{len(errors)} bad line(s) in the batch, nothing was sent:\n{message}", hint
        )
    if not jobs:
        raise UsageError(f"--batch {args.batch}: no jobs (only blank or # lines)")
    return jobs


def _check_batch_flags(args: Any) -> None:
    """The flags that name one image's prompt or output cannot apply to a file of them: refused
    before the file is read, as is a batch with nowhere to put its results."""
    for flag, value in (
        ("--prompt", args.prompt is not None),
        ("--prompt-file", args.prompt_file),
        ("--out", args.out),
        ("--n", args.n != 1),
        ("--edit-from", args.edit_from),
    ):
        if value:
            raise UsageError(
                f"{flag} cannot be combined with --batch",
                "prompts and names come from the file; results go to --out-dir",
            )
    if not args.out_dir:
        raise UsageError("--batch needs --out-dir DIR")


def _batch_line_job(
    args: Any, env: Mapping[str, str], text: str, lineno: int, number: int, outs: dict[str, int]
) -> Job:
    """One line's job: the command line's options with the line's own on top, its output name
    (given, or numbered from the prompt), refused when another line already writes there or,
    for a real run, when the output cannot be written. Records its output in `outs`."""
    if len(text.encode()) > MAX_BATCH_LINE_BYTES:
        raise UsageError(f"longer than {MAX_BATCH_LINE_BYTES:,} bytes, the line limit")
    line = batch_line_options(text)
    opts = job_options(args, str(line.get("prompt") or ""), env)
    for key in ("size", "mask", "action", "format", "quality", "background", "detail"):
        if key in line:
            opts[key] = line[key]
    for key in ("compression", "moderation", "input_fidelity", "image_model", "model"):
        if key in line:
            opts[key] = line[key]
    if "image" in line:
        opts["images"] = [line["image"]] if isinstance(line["image"], str) else line["image"]
    if "image_url" in line:
        value = line["image_url"]
        opts["image_urls"] = [value] if isinstance(value, str) else value
    name = line.get("out")
    if name:
        check_batch_out(name, args.out_dir)
    else:
        ext = FORMAT_EXTENSIONS[format_for(None, opts.get("format"))]
        name = f"{number:03d}-{slugify(opts['prompt'])}{ext}"
    opts["out"] = os.path.join(args.out_dir, name)
    job = build_job(opts)
    job.name = f"line {lineno} ({name})"
    key = os.path.normcase(os.path.abspath(job.out))
    if key in outs:
        raise UsageError(f"writes {name}, like line {outs[key]}")
    outs[key] = lineno
    if not args.dry_run:
        try:
            check_output_path(job.out, job.force)
        except OutputError as exc:
            if "already exists" in exc.message:  # the line's hint is lost in the batch's error
                exc.message += " (--force overwrites it, or give the line another out)"
            raise
        if args.sidecar:
            check_sidecar_path(job.out, job.force)
    return job


def batch_overlaps(
    batch: str, jobs: Sequence[Job], linenos: Sequence[int], outs: Mapping[str, int]
) -> list[ImagegenError]:
    """Jobs of one batch run side by side, so one job's output must be neither a folder on
    another's output path nor another's input image (it would change while being sent)."""
    folders: dict[str, int] = {}
    for key, lineno in outs.items():
        parent = os.path.dirname(key)
        while parent and parent not in folders and os.path.dirname(parent) != parent:
            folders[parent] = lineno
            parent = os.path.dirname(parent)
    errors: list[ImagegenError] = []
    for job, lineno in zip(jobs, linenos):
        key = os.path.normcase(os.path.abspath(job.out))
        if key in folders:
            errors.append(
                UsageError(f"{batch}:{lineno}: writes {job.out}, a folder of line {folders[key]}")
            )
        for image in [*job.images, *([job.mask] if job.mask is not None else [])]:
            source = os.path.normcase(os.path.abspath(image.path))
            if source in outs:
                errors.append(
                    UsageError(
                        f"{batch}:{lineno}: reads {image.path}, which line {outs[source]} "
                        "writes; run the two in separate batches"
                    )
                )
    return errors


def resolve_edit_from(path: str) -> tuple[str, str | None]:
    """(image path, previous_response_id or None) from an image or its sidecar."""
    sidecar_path = path if path.lower().endswith(".json") else path + ".json"
    data: Any = None
    if os.path.isfile(sidecar_path):
        try:
            data = load_json_file(sidecar_path)
        except ConfigError as exc:
            raise UsageError(f"--edit-from: {exc.message}") from None
    if path.lower().endswith(".json"):
        if not isinstance(data, dict) or not data.get("path"):
            raise UsageError(f"--edit-from {path}: not a sidecar written by --sidecar")
        name = str(data["path"])
        # the sidecar's image is its neighbour, as write_sidecar() names it: a path anywhere
        # else (a planted sidecar naming ~/passport.png) would upload that file
        if name in (".", "..") or re.search(r"[/\\\0]", name) or os.path.basename(name) != name:
            raise UsageError(
                f"--edit-from {path}: its image {text_of(name, 120)!r} is not a file name "
                "beside the sidecar",
                "a sidecar written by --sidecar names only the image next to it",
            )
        image = os.path.join(os.path.dirname(path), name)
    else:
        image = path
    previous = None
    if isinstance(data, dict) and data.get("stored") and data.get("response_id"):
        previous = str(data["response_id"])
        if data.get("sha256") != file_sha256(image):
            # the image was replaced since the sidecar was written (e.g. --force without
            # --sidecar): the stored response is another picture, so send this file instead
            previous = None
    return image, previous


def file_sha256(path: str) -> str | None:
    import hashlib

    digest = hashlib.sha256()
    try:
        with os.fdopen(open_input(path, "", UsageError), "rb") as f:
            for block in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(block)
    except (OSError, UsageError):
        return None
    return digest.hexdigest()


def plan_jobs(args: Any, env: Mapping[str, str], prompt: str | None = None) -> list[Job]:
    """All jobs of this run (one, --n variants, or a --batch file), validated up front.
    `prompt` (the MCP server's) replaces --prompt/--prompt-file: stdin is not for prompts there."""
    if not 1 <= args.n <= 10:
        raise UsageError("--n must be between 1 and 10")
    if not 1 <= args.concurrency <= 16:
        raise UsageError("--concurrency must be between 1 and 16")
    if args.resume is not None:
        return [plan_resume(args)]
    if args.batch:
        return plan_batch(args, env)
    if args.out_dir:
        raise UsageError("--out-dir is for --batch; use --out for a single image")
    prompt = read_prompt(args) if prompt is None else check_text(prompt, "the prompt")
    if not args.out and not args.dry_run:
        raise UsageError(
            "no --out given", "pass --out PATH for the image file, e.g. --out image.png"
        )
    opts = job_options(args, prompt, env)
    if args.edit_from:
        opts["edit_from_image"], opts["previous_response_id"] = resolve_edit_from(args.edit_from)
    if args.n == 1:
        job = build_job(opts)
        if not args.dry_run:
            check_output_path(job.out, job.force)
            if args.sidecar:
                check_sidecar_path(job.out, job.force)
        return [job]
    stem, ext = os.path.splitext(args.out or "image.png")
    jobs = []
    for i in range(1, args.n + 1):
        opts["out"] = f"{stem}-{i}{ext}"
        job = build_job(opts)
        job.name = f"variant {i} ({os.path.basename(job.out)})"  # labels its warnings
        if not args.dry_run:
            check_output_path(job.out, job.force)
            if args.sidecar:
                check_sidecar_path(job.out, job.force)
        jobs.append(job)
    return jobs


def plan_resume(args: Any) -> Job:
    """--resume RESPONSE_ID --out PATH: a job that only fetches a stored response."""

    for flag, given in (
        ("--prompt", args.prompt is not None),
        ("--prompt-file", args.prompt_file),
        ("--batch", args.batch),
        ("--n", args.n != 1),
        ("--edit-from", args.edit_from),
        ("--image", args.image),
        ("--image-url", args.image_url),
        ("--mask", args.mask),
        ("--resumable", args.resumable),
        ("--api images", args.api == "images"),
    ):
        if given:
            raise UsageError(
                f"{flag} cannot be combined with --resume",
                "--resume only fetches a response the gateway stored; nothing new is sent",
            )
    rid = check_text(args.resume.strip(), "--resume")
    if not usable_response_id(rid):
        raise UsageError(
            f"--resume {clip(ascii(rid), 80)}: not a response id",
            "pass the id from the --resumable run's message or --json output, e.g. resp_abc123 "
            f"(printable, no spaces, at most {RESPONSE_ID_MAX} characters)",
        )
    if not args.out and not args.dry_run:
        raise UsageError("--resume needs --out PATH for the image")
    job = Job("", args.out or "")
    job.resume_id = rid
    job.stream = args.stream
    job.force = args.force
    job.output_format = format_for(job.out, args.format)
    job.options = {"resume": rid, "stream": args.stream}
    if not args.dry_run:
        check_output_path(job.out, job.force)
    return job


def resume_args(args: Any) -> list[str]:
    """The flags a --resume command needs to reach the same gateway (no secret header)."""
    words: list[str] = []
    for flag, value in (
        ("--codex-home", args.codex_home),
        ("--profile", args.profile),
        ("--base-url", args.base_url),
    ):
        if value:
            words += [flag, value]
    for header in args.header:
        name, _, value = header.partition(":")
        if not looks_secret(name.strip(), value.strip()):
            words += ["--header", header]
    if not args.stream:
        words.append("--no-stream")
    if args.force:  # the run replaced --out: so may the fetch (else it stops at exit 7)
        words.append("--force")
    if args.sidecar:
        words.append("--sidecar")
    return words


# -- running jobs: settings, previews, sidecars, the thread pool ------------------------------


def make_settings(args: Any, env: Mapping[str, str]) -> Settings:
    settings = Settings(env)
    if args.retries < 0:
        raise UsageError("--retries must be 0 or more")
    for name in ("timeout", "idle_timeout", "connect_timeout"):
        if not 0 < getattr(args, name) < float("inf"):  # NaN fails this too
            raise UsageError("--{} must be more than 0 seconds".format(name.replace("_", "-")))
    settings.retries = args.retries
    settings.timeout = args.timeout
    settings.idle_timeout = args.idle_timeout
    settings.connect_timeout = args.connect_timeout
    settings.strict_size = args.strict_size or args.strict
    return settings


def partial_writer(job: Job, folder: str | None, console: Console) -> Callable[[int, Any], None]:
    """Writes each live preview as STEM.partial-K.EXT (never at --out) as soon as it arrives."""
    stem, ext = os.path.splitext(os.path.basename(job.out) or "image.png")
    target = folder or os.path.dirname(os.path.abspath(job.out))
    label = "" if job.name == job.out else job.name + ": "

    def write(index: int, data: Any) -> None:
        path = os.path.join(target, f"{stem}.partial-{index + 1}{ext or '.png'}")
        sink = ImageSink(path, force=True, rescue=False)
        try:
            if sink.save(data):
                sink.commit()
                console.info(f"{label}preview {index + 1} saved: {path}")
            else:
                reason = sink.last_error.message if sink.last_error else "unreadable"
                console.warn(f"{label}preview {index + 1} skipped: {reason}")
        except (OSError, ImagegenError) as exc:
            console.warn(f"{label}preview {index + 1} not saved: {exc}")
        finally:
            sink.discard()

    return write


def write_sidecar(outcome: Outcome, gw: Gateway) -> str:
    """OUT.json beside the image: everything needed to understand or continue it (no key)."""

    image = outcome.image
    assert image is not None
    job = outcome.job
    options = dict(job.options)
    options.pop("force", None)
    options["image_urls"] = [  # masked before they are cut short
        u if len(u) < 200 else redact(u)[:60] + "..." for u in job.image_urls
    ]
    record = {
        "version": __version__,
        "path": os.path.basename(image.path),
        "prompt": job.prompt,
        "revised_prompt": outcome.revised_prompt or None,
        "request": options,
        "model": job.model,
        "tool": {"type": "image_generation", "action": job.action, **job.tool_options},
        "api": outcome.api,
        "endpoint_host": host_of(gw.base_url),
        "response_id": outcome.response_id or None,
        "image_call_id": outcome.item_id or None,
        "stored": outcome.stored,
        "resumes": outcome.resumes,
        "extra_paths": [os.path.basename(extra.path) for extra in outcome.extra_images],
        "previous_response_id": job.previous_response_id if outcome.used_previous else None,
        "requested_size": job.size,
        "sent_size": outcome.final_size,
        "reported_size": outcome.item_size or None,
        "width": image.dims[0] if image.dims else None,
        "height": image.dims[1] if image.dims else None,
        "requested_format": job.output_format,
        "format": image.kind,
        "bytes": image.nbytes,
        "sha256": image.sha256 or None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(outcome.started_at)),
        "elapsed_seconds": round(outcome.elapsed, 3),
        "stream": outcome.stream,
        "retries": outcome.retries,
        "fallbacks": outcome.fallbacks,
        **usage_fields(outcome),
    }
    record = redact_obj(record)  # the gateway's ids and words may carry the key back to us
    path = image.path + ".json"
    fd, tmp = create_unique(os.path.dirname(path) or ".", ".sidecar.", ".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, ensure_ascii=False)
            f.write("\n")
        if job.force or is_own_sidecar(path):
            os.replace(tmp, path)
        else:
            place_new(tmp, path)  # whatever appeared there since the check stays
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return path


def run_all(
    jobs: Sequence[Job],
    gw: Gateway,
    settings: Settings,
    console: Console,
    args: Any,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Run the jobs on up to --concurrency daemon threads (one job: on this thread)."""
    import threading

    if progress is None:
        progress = Progress(console, total=len(jobs))
    outcomes: list[Outcome | None] = [None] * len(jobs)
    if args.partial_images and not args.stream:
        console.warn("--partial-images needs streaming; no previews with --no-stream")

    def one(index: int) -> None:
        job = jobs[index]
        progress.job(index)
        writer = partial_writer(job, args.partials_dir, console) if args.partial_images else None
        try:
            outcome = run_job(job, gw, settings, console, progress, writer, args.sidecar)
            if args.sidecar:
                try:
                    console.info(f"sidecar saved: {write_sidecar(outcome, gw)}")
                except OSError as exc:
                    console.warn(f"{job.name}: the image is saved but its sidecar is not: {exc}")
        except ImagegenError as exc:
            outcome = getattr(exc, "outcome", None) or Outcome(job)
            outcome.error = exc
            if len(jobs) > 1:
                console._err(f"error: {job.name}: {exc.message}")
        except Exception as exc:  # a bug in one job must not take the others down
            outcome = Outcome(job)
            outcome.error = ImagegenError(f"internal error: {type(exc).__name__}: {exc}")
            console._err(f"error: {job.name}: {outcome.error.message}")
        progress.finish_one()
        outcomes[index] = outcome

    progress.start()
    try:
        if len(jobs) == 1:
            one(0)
        else:
            limit = len(jobs) if not args.batch else args.concurrency
            pending = list(range(len(jobs)))
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    with lock:
                        if not pending:
                            return
                        index = pending.pop(0)
                    one(index)

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(limit)]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():  # join in slices so Ctrl-C still works
                    thread.join(0.2)
            time.sleep(0)
    finally:
        progress.stop()
    return [o for o in outcomes if o is not None]


def summary_line(outcome: Outcome) -> str:
    image = outcome.image
    if outcome.error is None and image is not None:
        dims = "{}x{} ".format(*image.dims) if image.dims else ""
        size = f"{dims}{image.kind.upper()}, {image.nbytes:,} bytes"
        tokens = usage_words(outcome.main_usage, outcome.image_usage)
        tokens = f", tokens: {tokens}" if tokens else ""
        return f"ok\t{image.path}\t{size}, {outcome.elapsed:.1f}s{tokens}"
    assert outcome.error is not None
    return f"failed\t{outcome.job.out}\texit {outcome.error.exit_code}: {outcome.error.message}"


def warn_plain_http(gw: Gateway, console: Console, dry_run: bool = False) -> None:
    """The key in clear text on the network: said on a real run, --dry-run and --doctor."""
    from urllib.parse import urlsplit

    parts = urlsplit(gw.base_url)
    has_key = bool(gw.api_key or gw.key_command)
    if parts.scheme == "http" and has_key and not is_loopback_host(parts.hostname or ""):
        console.warn(
            "the API key {} sent unencrypted over http:// to {}; use https://".format(
                "would be" if dry_run else "will be", parts.hostname
            )
        )


# =============================================================================================
# 14. Doctor (--doctor, --probe): the configuration and each network step, checked in order
# =============================================================================================

# -- checks -----------------------------------------------------------------------------------


class Check:
    """One doctor line: ok / failed / note, with a hint on failure."""

    def __init__(self, console: Console, to_stderr: bool = False) -> None:
        self.console = console
        self.to_stderr = to_stderr  # --doctor --json: stdout holds the one JSON object
        self.failures: list[int] = []
        self.entries: list[dict[str, str]] = []  # for --json and the MCP structured result

    def __call__(
        self, name: str, ok: bool | None, detail: str, hint: str = "", code: int = EXIT_NETWORK
    ) -> None:
        mark = "ok" if ok else ("note" if ok is None else "failed")
        self.entries.append({"check": name, "status": mark, "detail": self.console.redact(detail)})
        if hint and ok is False:
            self.entries[-1]["hint"] = self.console.redact(hint)
        line = f"{mark:<7}{name:<10}{detail}"
        if hint and ok is False:
            line += f"\n{'':17}hint: {hint}"
        if self.to_stderr:
            self.console.info(line)
        else:
            self.console.result(line)
        if ok is False:
            self.failures.append(code)

    def record(self, code: int) -> dict[str, Any]:
        """The whole check as one JSON-able object (--doctor --json): the first failure's
        detail and hint as error and hint, like every other --json answer."""
        record: dict[str, Any] = {"ok": code == EXIT_OK, "exit_code": code}
        failed = [entry for entry in self.entries if entry["status"] == "failed"]
        if failed:
            record["error"] = failed[0]["check"] + ": " + failed[0]["detail"]
            record["hint"] = failed[0].get("hint") or default_hint(code)
        record["checks"] = self.entries
        return record


def http_request(
    gw: Gateway, settings: Settings, method: str, path: str, body: bytes = b""
) -> tuple[int, Any, bytes]:
    """A small request for the doctor: (status, headers, up to 2 MB of body)."""

    clock = Clock(settings.idle_timeout, time.monotonic() + min(settings.timeout, 60.0))
    wire = Wire(gw.url(path), settings, clock)
    try:
        wire.open()
        headers = gw.request_headers()
        headers["Accept"] = "application/json"
        if body:
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(body))
        wire.send(method, headers, [body] if body else ())
        resp = wire.answer()
        return resp.status, resp.headers, wire.read_limited()
    finally:
        wire.close()


def doctor(
    args: Any,
    env: Mapping[str, str],
    settings: Settings,
    console: Console,
    check: Check | None = None,
) -> int:
    """Resolve and print the configuration, then probe the gateway step by step.

    Each network step needs the one before it (a name, then a connection, then TLS, then
    HTTP), so the first that fails ends the check with its own exit code."""
    from urllib.parse import urlsplit

    check = check if check is not None else Check(console)
    try:
        args.dry_run = True  # resolve without failing on a missing key: that is its own check
        gw = load_gateway(args, env, console, budget=settings.timeout)
    except ConfigError as exc:
        check("config", False, exc.message, exc.hint, EXIT_CONFIG)
        return EXIT_CONFIG
    _doctor_config(gw, env, check)
    warn_plain_http(gw, console)
    _doctor_key(gw, args, check)
    _doctor_image_tool(gw, check)
    parts = urlsplit(gw.base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = proxy_for(parts.scheme, host, port) if host else None
    check("proxy", None, redact_url(proxy) if proxy else "none (direct connection)")
    ca = env.get("CODEX_CA_CERTIFICATE", "").strip() or env.get("SSL_CERT_FILE", "").strip()
    if parts.scheme == "https":
        check("ca", None, f"system roots + {ca}" if ca else "system roots")
    failed = _doctor_connect(gw, settings, check, parts, port, proxy)
    if failed is not None:
        return failed
    _doctor_models(gw, settings, check)
    if args.probe and gw.key_problem:  # Codex would send nothing here: neither does the probe
        check("probe", None, "skipped: the key check failed, so no image request is sent")
    elif args.probe:
        probe(gw, settings, check, args.model or env.get("CODEX_IMAGEGEN_MODEL") or DEFAULT_MODEL)
    return max(check.failures) if check.failures else EXIT_OK


def _doctor_config(gw: Gateway, env: Mapping[str, str], check: Check) -> None:
    """Which files were read (and which system layers are absent), the provider chosen and by
    which layer, and the endpoint: what a user needs to see why this gateway was picked."""
    if gw.config_files:
        read = ", ".join(f"{label} {path}" for label, path in gw.layers)
        check("config", True, f"Codex home {gw.codex_home}; read: {read}")
    else:
        check("config", None, f"no config.toml or auth.json in {gw.codex_home}: using defaults")
    system_config, managed_config = system_layer_paths(gw.codex_home, env)
    unread = [p for p in (system_config, managed_config) if p not in gw.config_files]
    if unread:
        check("layers", None, "not present: " + ", ".join(unread))
    check(
        "provider",
        True,
        f"{gw.provider}, chosen by the {gw.provider_layer} (profile: {gw.profile or 'none'})",
    )
    check("endpoint", True, gw.url("/responses"))


def _doctor_key(gw: Gateway, args: Any, check: Check) -> None:
    """The credential and where it came from (masked); a header that carries it counts, and
    with --base-url none is a note (a gateway may need no key), otherwise a failure."""
    if gw.api_key:
        check("key", True, f"{mask_secret(gw.api_key)} from {gw.key_source}")
    elif gw.header_credential:
        if gw.header_credential.lower() == "authorization":
            check("key", True, "none of its own; the Authorization header given is sent as is")
        else:
            check("key", True, f"none in Authorization; header {gw.header_credential} carries it")
    elif args.base_url:
        check("key", None, "none: no Authorization header will be sent (--base-url)")
    else:
        check("key", False, gw.key_problem or "no API key found", gw.key_hint, EXIT_CONFIG)


def _doctor_image_tool(gw: Gateway, check: Check) -> None:
    """Whether Codex would offer its own image tool here (and what it lacks), then the
    resolution's informational notes."""
    offered, why = gw.image_tool
    if offered:
        check(
            "imagetool",
            None,
            f"Codex itself would offer its image tool here ({why}); its model cannot choose "
            "size, quality, image model or mask",
        )
    else:
        check("imagetool", None, f"Codex offers no image tool here: {why}; use this script")
    for line in gw.notes:
        check("env", None, line)


def _doctor_connect(
    gw: Gateway,
    settings: Settings,
    check: Check,
    parts: Any,
    port: int,
    proxy: str | None,
) -> int | None:
    """DNS, TCP and TLS to the gateway (`parts` is its split base URL), or to the proxy in
    front of it: the exit code of the first step that fails, else None."""
    dial_host, dial_port = parts.hostname or "", port
    via: Proxy | None = None
    if proxy:
        try:
            via = Proxy(proxy)
        except ConfigError as exc:
            check("proxy", False, exc.message, exc.hint, EXIT_CONFIG)
            return EXIT_CONFIG
        dial_host, dial_port = via.host, via.port
    try:
        infos = resolve(dial_host, dial_port, settings.connect_timeout)
        addresses = sorted({str(info[4][0]) for info in infos})
        check("dns", True, f"{dial_host} -> {', '.join(addresses[:4])}")
    except NetworkError as exc:
        check("dns", False, exc.message, exc.hint)
        return max(check.failures)
    except OSError as exc:
        err = describe_network_error(exc, gw.base_url)
        check("dns", False, f"{dial_host}: {exc}", err.hint)
        return max(check.failures)
    try:
        started = time.monotonic()
        connect((dial_host, dial_port), settings.connect_timeout).close()
        check(
            "tcp", True, f"{dial_host}:{dial_port} in {1000 * (time.monotonic() - started):.0f} ms"
        )
    except OSError as exc:
        err = describe_network_error(exc, gw.base_url)
        if via is not None and isinstance(exc, ConnectionRefusedError):
            err = proxy_unreachable(via.name)
        check("tcp", False, f"{dial_host}:{dial_port}: {err.message}", err.hint)
        return max(check.failures)
    return _doctor_tls(gw, settings, check, parts)


def _doctor_tls(gw: Gateway, settings: Settings, check: Check, parts: Any) -> int | None:
    """Open the connection a run would open (through the proxy, with TLS for https) and say
    which TLS version verified the certificate: the exit code when it fails, else None."""
    https = parts.scheme == "https"
    try:
        wire = Wire(gw.base_url, settings, Clock(settings.idle_timeout, time.monotonic() + 60.0))
        try:
            wire.open()
            if https:
                version = wire.conn.sock.version()
                check("tls", True, f"{version} with {parts.hostname}, certificate verified")
        finally:
            wire.close()
    except ImagegenError as exc:  # Wire turns every OSError into one (describe_network_error)
        check("tls" if https else "connect", False, exc.message, exc.hint, exc.exit_code)
        return max(check.failures)
    return None


def _doctor_models(gw: Gateway, settings: Settings, check: Check) -> None:
    """GET /models: the first authenticated request. A refusal there is a key problem (exit 3);
    a gateway without a model list is fine; a listing alone proves little about the key."""
    try:
        status, headers, body = http_request(gw, settings, "GET", "/models")
        if status < 300:
            # a listing proves little about the key: some relays list models for any key
            listed_with = (
                "models listed"
                if gw.api_key or gw.header_credential
                else "models listed, no key sent"
            )
            check("models", True, f"GET /models: HTTP {status}, {listed_with}")
        elif status in (401, 403):
            refused = http_error(status, "", headers, body, gw)
            check("models", False, refused.message, refused.hint, EXIT_CONFIG)
        elif status == 404:
            check("models", None, "GET /models: 404 (this gateway has no model list; not required)")
        else:
            check("models", None, http_error(status, "", headers, body, gw).message)
    except (OSError, ImagegenError) as exc:
        check("models", False, f"GET /models: {exc}", "", EXIT_NETWORK)


# -- the probe --------------------------------------------------------------------------------


def probe(gw: Gateway, settings: Settings, check: Check, model: str) -> None:
    """One small streaming /responses call in background mode: does it stream, accept a forced
    tool_choice and start the image tool, and does the gateway keep responses (store) so that
    --resumable can resume? Reading stops as soon as that is known; the stored response is then
    cancelled. A gateway that refuses store/background gets the same probe without them."""
    payload: dict[str, Any] = {
        "model": model,
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "A plain grey square."}],
            }
        ],
        "tools": [{"type": "image_generation", "size": "1024x1024", "quality": "low"}],
        "tool_choice": {"type": "image_generation"},
        "store": True,
        "background": True,
        "stream": True,
    }
    answer, streamed = _probe_answer(gw, settings, check, payload)
    refused = answer.get("refused")
    if "connect" in answer:
        check("probe", False, f"cannot connect: {answer['connect']}", "", EXIT_NETWORK)
        return
    if isinstance(refused, ImagegenError):
        _probe_refused(check, refused)
        return
    ctype = str(answer.get("ctype") or "")
    if streamed:
        check(
            "stream",
            None,
            "the gateway streams (SSE)"
            if "event-stream" in ctype
            else f"answered {ctype or 'no content type'} to a streaming request",
        )
    seen = answer.get("seen") or {}
    _probe_image_tool(check, answer, seen, streamed)
    response_id = str(seen.get("id") or "")
    if not payload.get("background"):
        return
    if not response_id:
        check("store", None, "background mode accepted, but the answer gave no response id")
        return
    _probe_store(gw, settings, check, response_id)


def _probe_answer(
    gw: Gateway, settings: Settings, check: Check, payload: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Send the probe, adapting it as a run would: without store/background when the gateway
    refuses them, then once without streaming when a relay fails streamed requests with its own
    error (Portkey's quirk). Returns the last answer and whether it was streamed; `payload` is
    left as last sent."""
    answer = probe_post(gw, settings, payload)
    refused = answer.get("refused")
    if isinstance(refused, GatewayError) and rejects_background(refused):
        check(
            "store",
            None,
            "the gateway does not keep responses (store/background refused): "
            "--resumable falls back to a normal request here",
        )
        payload.update(store=False, stream=True)
        del payload["background"]
        answer = probe_post(gw, settings, payload)
        refused = answer.get("refused")
    if isinstance(refused, GatewayError) and refused.relay_failure:
        # Portkey's quirk, as a run meets it: the same probe once more without streaming
        check(
            "stream",
            False,
            f"streamed requests fail with the relay's own HTTP {refused.status} "
            f"({text_of(refused.detail, 120)}), not an OpenAI error",
            "use --no-stream with this gateway (a run falls back once by itself, but the failed "
            "streamed request may be billed)",
            EXIT_GATEWAY,
        )
        payload.update(store=False, stream=False)
        payload.pop("background", None)
        return probe_post(gw, settings, payload), False
    return answer, True


def _probe_refused(check: Check, refused: ImagegenError) -> None:
    """The probe was refused: name the option the gateway objects to (a forced tool_choice,
    streaming) with the flag that avoids it, else pass its own error on."""
    lowered = refused.message.lower()
    if "tool_choice" in lowered or "tool choice" in lowered:
        check(
            "probe",
            False,
            "a forced tool_choice is rejected: " + refused.message,
            "the script retries with tool_choice auto; or try --api auto",
            EXIT_GATEWAY,
        )
    elif "stream" in lowered:
        check(
            "probe",
            False,
            "streaming is refused: " + refused.message,
            "use --no-stream",
            EXIT_GATEWAY,
        )
    else:
        check(
            "probe",
            False,
            refused.message,
            refused.hint or "try --api auto",
            refused.exit_code,
        )


def _probe_image_tool(
    check: Check, answer: Mapping[str, Any], seen: Mapping[str, Any], streamed: bool
) -> None:
    """What the accepted probe showed: the image tool started (the one good outcome), a text
    answer instead, an error event, or a connection lost while reading."""
    if "broken" in answer:
        check("probe", False, str(answer["broken"]), "", EXIT_NETWORK)
    elif seen.get("item") == "image_generation_call":
        how = "" if streamed else " (without streaming: --no-stream works here)"
        check("probe", True, "forced tool_choice accepted; the image tool started" + how)
    elif seen.get("item") == "message":
        check(
            "probe",
            False,
            "the model answered in text: the image tool did not run",
            "the model or gateway may not support image_generation; try --api auto",
            EXIT_NO_IMAGE,
        )
    else:
        check(
            "probe",
            False,
            seen.get("error", "no image tool activity in the answer"),
            "try --api auto",
            EXIT_GATEWAY,
        )


def _probe_store(gw: Gateway, settings: Settings, check: Check, response_id: str) -> None:
    """Does the gateway keep the background response, so that a run could resume it? Checked
    with exactly the rule and request a run uses (never a promise a run cannot keep); the
    probe's image is then cancelled, since background mode renders on after we hang up."""
    path = fetch_request(response_id, stream=False).path if usable_response_id(response_id) else ""
    if not path:  # the very rule a run applies: a run could not fetch it either
        check(
            "store",
            None,
            f"background mode accepted, but the response id {text_of(response_id, 80)!r} "
            f"is not one this script can fetch (printable, no spaces, at most {RESPONSE_ID_MAX} "
            "characters): a cut stream cannot be resumed here",
        )
        return
    try:
        status, _, _ = http_request(gw, settings, "GET", path)
    except (OSError, ImagegenError) as exc:
        status, detail = 0, str(exc)
    else:
        detail = f"HTTP {status}"
    if 200 <= status < 300:
        check(
            "store",
            True,
            f"the gateway keeps responses (GET /responses/{{id}}: {detail}): --resumable "
            "can resume a cut stream and --resume can fetch it",
        )
    else:
        check(
            "store",
            None,
            f"background mode accepted, but GET /responses/{{id}} answered {detail}: "
            "a cut stream cannot be resumed here",
        )
    try:  # background mode keeps rendering after we hang up: stop the probe's image
        http_request(gw, settings, "POST", path + "/cancel", b"{}")
    except (OSError, ImagegenError):
        pass


def probe_post(gw: Gateway, settings: Settings, payload: Mapping[str, Any]) -> dict[str, Any]:
    """POST the probe and read until the image tool (or text, or an error) shows:
    {"refused": error} for an HTTP error, {"connect": exc}, else {"ctype", "seen": {item, id,
    error}} and {"broken": exc} if the connection failed while reading."""

    seen: dict[str, str] = {}

    def on_event(name: str, spool: JsonSpool) -> None:
        if spool.blobs:  # only image data is that long
            seen.setdefault("item", "image_generation_call")
            return
        try:
            event = spool.parse()
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        etype = str(event.get("type") or name)
        item: dict[str, Any] = event["item"] if isinstance(event.get("item"), dict) else {}
        resp = event.get("response")
        if isinstance(resp, dict) and resp.get("id"):
            seen.setdefault("id", str(resp["id"]))
        if (
            etype.startswith("response.image_generation_call")
            or item.get("type") == "image_generation_call"
        ):
            seen.setdefault("item", "image_generation_call")
        elif item.get("type") == "message":
            seen.setdefault("item", "message")
        elif etype in ("error", "response.failed"):
            seen.setdefault("error", text_of(json.dumps(event), 200))

    body = json.dumps(payload).encode("utf-8")
    clock = Clock(settings.idle_timeout, time.monotonic() + min(settings.timeout, 300.0))
    try:
        wire = Wire(gw.url("/responses"), settings, clock)
        wire.open()
    except (OSError, ImagegenError) as exc:
        return {"connect": exc}
    answer: dict[str, Any] = {"seen": seen}
    try:
        headers = gw.request_headers()
        accept = "text/event-stream" if payload.get("stream") else "application/json"
        headers.update({"Content-Type": "application/json", "Accept": accept})
        headers["Content-Length"] = str(len(body))
        wire.send("POST", headers, [body])
        resp = wire.answer()
        ctype = (resp.getheader("content-type") or "").lower()
        if resp.status >= 400:
            answer["refused"] = http_error(
                resp.status, resp.reason, resp.headers, wire.read_limited(), gw, wire=wire
            )
            return answer
        answer["ctype"] = ctype
        streams = "event-stream" in ctype
        parser = SSEParser(on_event)
        while "item" not in seen and "error" not in seen:
            chunk = wire.read()
            if not chunk:
                break
            if streams:
                parser.feed(chunk)
            elif b"image_generation_call" in chunk:
                seen["item"] = "image_generation_call"
    except ImagegenError as exc:
        answer["broken"] = exc.message
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError)) and not is_http_exception(exc):
            raise
        import socket

        answer["broken"] = f"{type(exc).__name__}: {text_of(str(exc), 200)}"
        if isinstance(exc, socket.timeout):  # the idle limit: said as a run says it
            answer["broken"] = (
                f"no data from the gateway for {settings.idle_timeout:g}s (--idle-timeout)"
            )
    finally:
        wire.close()
    return answer


# =============================================================================================
# 15. MCP server (--mcp): the job runner and the doctor as tools, over stdio JSON-RPC
# =============================================================================================

# -- tools: arguments, schemas and results ----------------------------------------------------

MCP_SERVER_INFO = {
    "name": "codex-gateway-imagegen",
    "title": "Images through your Codex gateway",
    "version": __version__,
}

# name: (JSON type, allowed values or None, description); the CLI's checks run after these
MCP_GENERATE_ARGUMENTS: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "prompt": (
        "string",
        None,
        "What the image shows, written as a brief: subject, setting, style, composition, "
        "lighting, kind of output; text that must appear goes in quotes. For an edit: what "
        "must stay unchanged and what changes.",
    ),
    "out": (
        "string",
        None,
        "File to write (.png, .jpg, .webp; relative paths are inside the server's output "
        "folder; it must stay inside the folders the server may use). Default: a name made "
        "from the prompt that never replaces a file.",
    ),
    "size": (
        "string",
        None,
        "WxH or auto. 1024x1024 (default), 1024x1536 portrait, 1536x1024 landscape; other "
        "sizes need image_model gpt-image-2 (multiples of 16, longest side <= 3840, <= 3:1).",
    ),
    "quality": ("string", QUALITIES, "Render quality."),
    "background": ("string", BACKGROUNDS, "transparent needs png or webp."),
    "format": ("string", FORMATS + ("jpg",), "Output format (default: from out, else png)."),
    "compression": ("integer", None, "jpeg/webp compression, 0-100."),
    "moderation": ("string", MODERATIONS, "Moderation strictness."),
    "images": (
        "array",
        None,
        "Paths of local reference images inside the folders the server may use; the first "
        "one is the image being edited.",
    ),
    "image_urls": ("array", None, "http(s) or data: URLs of reference images."),
    "mask": (
        "string",
        None,
        "PNG with alpha, the size of the first image; transparent pixels are changed.",
    ),
    "action": ("string", ACTIONS, "generate, edit (needs an image) or auto (default)."),
    "input_fidelity": ("string", FIDELITIES, "How closely an edit keeps the input."),
    "image_model": ("string", None, "Image model inside the tool, e.g. gpt-image-2."),
    "model": ("string", None, "Responses model (default: the server's)."),
    "partial_images": (
        "integer",
        None,
        "0-3 live previews while it renders; the last one comes back as a small image.",
    ),
    "n": ("integer", None, "1-10 variants, saved as NAME-1..NAME-N; each one is billed."),
    "force": ("boolean", None, "Replace out if it exists (default false)."),
}
MCP_CHECK_ARGUMENTS: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "probe": (
        "boolean",
        None,
        "Also send one small /responses request to see that the image tool starts; it may "
        "cost one low-quality image (default false).",
    ),
}
MCP_INTEGER_RANGES = {"compression": (0, 100), "partial_images": (0, 3), "n": (1, 10)}


def mcp_version_at_least(version: str, minimum: str) -> bool:
    """Protocol versions are an enumerated list; an unknown one counts as the newest."""
    known = MCP_HANDSHAKE_VERSIONS + MCP_MODERN_VERSIONS
    index = known.index(version) if version in known else len(known)
    return index >= known.index(minimum)


def mcp_input_schema(spec: Mapping[str, tuple[str, tuple[str, ...] | None, str]]) -> Any:
    properties: dict[str, Any] = {}
    for name, (kind, choices, description) in spec.items():
        prop: dict[str, Any] = {"type": kind, "description": description}
        if kind == "array":
            prop["items"] = {"type": "string"}
        if choices:
            prop["enum"] = list(choices)
        if name in MCP_INTEGER_RANGES:
            prop["minimum"], prop["maximum"] = MCP_INTEGER_RANGES[name]
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if "prompt" in spec:
        schema["required"] = ["prompt"]
    schema["additionalProperties"] = False
    return schema


def usage_schema(description: str) -> Any:
    """A usage object: token counts, and *_details objects of token counts; absent when the
    answer carried none."""
    count = {"type": "integer", "minimum": 0}
    details = {"type": "object", "additionalProperties": count}
    return {
        "type": "object",
        "description": description,
        "properties": {
            "input_tokens": count,
            "output_tokens": count,
            "total_tokens": count,
            "input_tokens_details": details,
            "output_tokens_details": details,
        },
        "additionalProperties": {"anyOf": [count, details]},
    }


def mcp_output_schema() -> Any:
    """The shape of generate_image's structuredContent: the --json record of the first image,
    every image's record under "images", and the warnings."""
    text, number, integer = ["string", "null"], ["number", "null"], ["integer", "null"]
    record: dict[str, Any] = {
        "ok": {"type": "boolean"},
        "path": {"type": text, "description": "absolute path of the saved image"},
        "prompt": {"type": "string"},
        "revised_prompt": {"type": text},
        "response_id": {"type": text},
        "image_call_id": {"type": text},
        "requested_size": {"type": "string"},
        "final_requested_size": {"type": "string"},
        "size": {"type": text},
        "requested_format": {"type": "string"},
        "format": {"type": text},
        "bytes": {"type": integer},
        "elapsed_seconds": {"type": number},
        "retries": {"type": "integer"},
        "fallbacks": {"type": "array", "items": {"type": "string"}},
        "stream": {"type": "boolean"},
        "endpoint_host": {"type": "string"},
        "exit_code": {"type": "integer"},
        "error": {"type": "string"},
        "hint": {"type": "string"},
        "rescued_path": {"type": "string", "description": "where a paid image was rescued"},
        "main_model_usage": usage_schema("tokens of the Responses (main) model: its usage"),
        "image_model_usage": usage_schema(
            "tokens of the image model: tool_usage.image_gen, or the Images API's usage"
        ),
    }
    properties = dict(record)
    properties["images"] = {"type": "array", "items": {"type": "object", "properties": record}}
    properties["warnings"] = {"type": "array", "items": {"type": "string"}}
    properties["main_model_usage_total"] = usage_schema("main_model_usage summed over images")
    properties["image_model_usage_total"] = usage_schema("image_model_usage summed over images")
    return {"type": "object", "properties": properties, "required": ["ok", "images"]}


def mcp_tools(version: str, out_dir: str, allowed: Sequence[str]) -> list[dict[str, Any]]:
    """The tool list, written for a model that is choosing a tool."""
    generate: dict[str, Any] = {
        "name": "generate_image",
        "title": "Generate or edit an image file",
        "description": (
            "Create a new image, or edit local image files, through the image gateway the "
            "user's Codex CLI is configured for, and save it as a file. Use it whenever the "
            "user wants a picture, poster, icon, illustration, photo or mock-up as a file, "
            "in particular when there is no built-in image_gen tool. Returns the saved file's "
            "absolute path, pixel size, format and byte count (and a small preview image when "
            f"cheap). Relative paths are inside {out_dir}; every path must be inside "
            f"{mcp_folder_list(allowed)}. Each call is a billed request that "
            "takes one to two minutes (n variants are n requests); an existing file is never "
            "replaced unless force is true. After an error that names a rescued file, move "
            "that file instead of generating the image again."
        ),
        "inputSchema": mcp_input_schema(MCP_GENERATE_ARGUMENTS),
    }
    check: dict[str, Any] = {
        "name": "check_gateway",
        "title": "Check the image gateway configuration",
        "description": (
            "Check the gateway the user's Codex configuration points at, without making an "
            "image: config files, provider, endpoint, where the key comes from (redacted), "
            "proxy, DNS, TCP, TLS and GET /models, one line per check with a hint on failure. "
            "Use it when generate_image fails with a configuration (exit 3) or network "
            "(exit 6) error, or before the first image. Free unless probe is true."
        ),
        "inputSchema": mcp_input_schema(MCP_CHECK_ARGUMENTS),
    }
    if mcp_version_at_least(version, "2025-03-26"):
        generate["annotations"] = {
            "readOnlyHint": False,
            # force: true replaces a file (only inside the server's allowed folders)
            "destructiveHint": True,
            "idempotentHint": False,
            "openWorldHint": True,
        }
        check["annotations"] = {"readOnlyHint": True, "openWorldHint": True}
    if mcp_version_at_least(version, "2025-06-18"):
        generate["outputSchema"] = mcp_output_schema()
    else:
        for tool in (generate, check):
            tool.pop("title")
    return [generate, check]


def mcp_arguments(
    arguments: Any, spec: Mapping[str, tuple[str, tuple[str, ...] | None, str]]
) -> dict[str, Any]:
    """Tool arguments checked against the tool's schema (the client may not have checked)."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise UsageError("the arguments must be a JSON object")
    for name in arguments:
        if name not in spec:
            raise UsageError(
                f"unknown argument {clip(str(name), 40)!r} (allowed: {', '.join(spec)})",
            )
    checked: dict[str, Any] = {}
    for name, value in arguments.items():
        kind, choices, _ = spec[name]
        if value is None:
            continue
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[kind]
        if not ok:
            what = "a list of strings" if kind == "array" else f"a {kind}"
            raise UsageError(f"argument {name!r} must be {what}")
        if choices and value not in choices:
            raise UsageError(f"{name}={value!r} is not one of {', '.join(choices)}")
        if name in MCP_INTEGER_RANGES:
            low, high = MCP_INTEGER_RANGES[name]
            if not low <= value <= high:
                raise UsageError(f"{name}={value} must be between {low} and {high}")
        checked[name] = value
    if "prompt" in spec and not str(checked.get("prompt") or "").strip():
        raise UsageError("the prompt is missing or empty", "pass prompt: a description")
    return checked


def mcp_words(text: str) -> str:
    """The CLI's hints name flags; a tool caller passes arguments instead."""

    names = {
        "force": "force: true",
        "out": "out",
        "image": "images",
        "image-url": "image_urls",
        "n": "n",
        "partial-images": "partial_images",
        "image-model": "image_model",
        "input-fidelity": "input_fidelity",
    }
    pattern = r"--(force|out|image-url|image-model|image|n|partial-images|input-fidelity)"
    # a --resume command is run as a command: its flags stay flags
    head, mark, command = text.partition("without paying again, with: ")
    return re.sub(pattern + r"(?![\w-])", lambda m: names[m.group(1)], head) + mark + command


def mcp_folder_list(folders: Sequence[str]) -> str:
    return ", ".join(folders) if len(folders) < 2 else "one of: " + ", ".join(folders)


def is_inside(path: str, folder: str) -> bool:
    """Whether the resolved `path` is `folder` or below it (Windows: case-insensitive, and a
    path on another drive is outside)."""
    try:
        return os.path.normcase(os.path.commonpath([path, folder])) == os.path.normcase(folder)
    except ValueError:  # another drive, or a relative and an absolute path
        return False


def file_uri_path(uri: Any) -> str | None:
    """The local folder of a client's file:// root, or None for anything else."""
    from urllib.parse import unquote, urlsplit
    from urllib.request import url2pathname

    if not isinstance(uri, str) or len(uri) > 4096:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = url2pathname(unquote(parts.path)) if os.name == "nt" else unquote(parts.path)
    if not os.path.isabs(path) or "\0" in path:
        return None
    return os.path.realpath(path)


def mcp_key_hint(var: str) -> str:
    return (
        f"the MCP server was started without {var}: agents start MCP servers with a minimal "
        f'environment. Codex: add env_vars = ["{var}"] to [mcp_servers.imagegen] in '
        f"~/.codex/config.toml; Claude Code passes its own environment: export {var} before "
        f"starting it, or claude mcp add imagegen -e {var}=... -- "
        "python3 /abs/path/generate_gateway_image.py --mcp; then restart the agent"
    )


def mcp_text(lines: Iterable[str]) -> dict[str, Any]:
    return {"type": "text", "text": redact("\n".join(lines))}


def mcp_failure(exc: ImagegenError, version: str, warnings: Sequence[str]) -> dict[str, Any]:
    """A tool run that failed before any image was asked for (arguments, configuration)."""
    lines = ["error: " + mcp_words(exc.message)]
    if exc.hint:
        lines.append("hint: " + mcp_words(exc.hint))
    lines.append(f"exit code {exc.exit_code}")
    lines += ["warning: " + w for w in warnings]
    record: dict[str, Any] = {"ok": False, "exit_code": exc.exit_code, "error": exc.message}
    if exc.hint:
        record["hint"] = exc.hint
    record.update(images=[], warnings=list(warnings))
    result: dict[str, Any] = {"content": [mcp_text(lines)], "isError": True}
    if mcp_version_at_least(version, "2025-06-18"):
        result["structuredContent"] = record
    return result


def mcp_image_result(
    outcomes: Sequence[Outcome],
    gw: Gateway,
    warnings: Sequence[str],
    version: str,
    preview: tuple[str, str] | None,
) -> dict[str, Any]:
    """The tools/call result: a short text, the --json records as structuredContent, a link
    to each file and at most one small preview image. The image's base64 appears only in that
    preview block: clients cut long text, and a model reads text, not pixels."""
    import pathlib

    records = []
    lines = []
    links = []
    for outcome in outcomes:
        record = outcome_record(outcome, gw)
        image, error = outcome.image, outcome.error
        if image is not None and image.rescued:
            record["rescued_path"] = image.path
        records.append(record)
        if image is not None:
            links.append(
                {
                    "type": "resource_link",
                    "uri": pathlib.Path(os.path.abspath(image.path)).as_uri(),
                    "name": os.path.basename(image.path),
                    "mimeType": MIME_TYPES.get(image.kind, "application/octet-stream"),
                }
            )
        if error is None and image is not None:
            dims = "{}x{} ".format(*image.dims) if image.dims else ""
            lines.append(
                f"saved {image.path} ({dims}{image.kind.upper()}, {image.nbytes:,} bytes) "
                f"in {outcome.elapsed:.1f}s"
            )
        elif error is not None:
            lines.append("error: " + mcp_words(error.message))
            if error.hint:
                lines.append("hint: " + mcp_words(error.hint))
            lines.append(f"exit code {error.exit_code}")
            if image is not None and image.rescued:
                lines.append(
                    f"the paid image is safe at {image.path}: move it where it belongs "
                    "instead of generating it again"
                )
    lines += ["warning: " + w for w in warnings]
    structured = dict(records[0])
    structured["ok"] = all(r["ok"] for r in records)
    structured["images"] = records
    structured["warnings"] = list(warnings)
    structured.update(usage_totals(outcomes))
    tokens = [usage_words(o.main_usage, o.image_usage) for o in outcomes]
    if any(tokens):
        lines.append("tokens: " + "; ".join(t or "not reported" for t in tokens))
    content = [mcp_text(lines)]
    if mcp_version_at_least(version, "2025-06-18"):
        content += links
    if preview is not None:
        content.append({"type": "image", "data": preview[0], "mimeType": preview[1]})
    result: dict[str, Any] = {
        "content": content,
        "isError": any(o.error is not None for o in outcomes),
    }
    if mcp_version_at_least(version, "2025-06-18"):
        result["structuredContent"] = structured
    else:  # no structuredContent before 2025-06-18: the same record as a JSON text block
        content.insert(1, {"type": "text", "text": redact(json_dumps(structured))})
    return result


def mcp_preview(outcomes: Sequence[Outcome], partials_dir: str | None, since: float) -> Any:
    """(base64, MIME type) of a small preview: the last live preview of this call when it
    asked for some, else the image itself when it is at most MCP_PREVIEW_MAX bytes."""
    import base64

    candidates: list[str] = []
    outcome = outcomes[0]  # the first image stands for all of a call's variants (one at least)
    job = outcome.job
    stem, ext = os.path.splitext(os.path.basename(job.out) or "image.png")
    folder = partials_dir or os.path.dirname(os.path.abspath(job.out))
    for index in range(job.partial_images, 0, -1):
        candidates.append(os.path.join(folder, f"{stem}.partial-{index}{ext or '.png'}"))
    if outcome.image is not None and outcome.error is None:
        candidates.append(outcome.image.path)
    for path in candidates:
        try:
            info = os.stat(path)
            if info.st_mtime < since - 1 or info.st_size > MCP_PREVIEW_MAX:
                continue  # an earlier run's preview, or too big to be a preview
            with open(path, "rb") as f:
                data = f.read(MCP_PREVIEW_MAX + 1)
        except OSError:
            continue
        kind = sniff_image(data[:4096])
        if kind is not None and len(data) <= MCP_PREVIEW_MAX:
            return base64.b64encode(data).decode("ascii"), MIME_TYPES[kind]
    return None


# -- the server -------------------------------------------------------------------------------


class McpConsole(Console):
    """One call's console: lines on stderr tagged with the call, warnings kept for the result,
    and "results" (the doctor's lines) kept instead of printed: stdout is the protocol."""

    def __init__(self, base: Console, label: str) -> None:
        super().__init__(base.quiet, base.verbose)
        self.lock = base.lock
        self.label = label
        self.warnings: list[str] = []
        self.lines: list[str] = []

    def _err(self, line: str) -> None:
        super()._err(f"[{self.label}] {line}")

    def warn(self, message: str) -> None:
        self.warnings.append(self.redact(message))
        super().warn(message)

    def result(self, line: str) -> None:
        self.lines.append(self.redact(line))


class McpProgress(Progress):
    """One call's progress as notifications/progress (only when the client sent a token) at
    each phase change and every MCP_HEARTBEAT seconds, and its cancellation: the open
    connection is shut down, so a blocked read returns at once instead of at the next byte."""

    def __init__(self, server: McpServer, console: Console, token: Any) -> None:
        import threading

        super().__init__(console)
        self.tty = False
        self.server = server
        self.token = token
        self.count = 0
        self.sent: Any = None
        self.send_lock = threading.Lock()
        self.cancelled = threading.Event()
        self.conns: list[Any] = []

    def start(self) -> None:
        import threading

        self.thread = threading.Thread(target=self._tick, name="mcp-progress", daemon=True)
        self.thread.start()
        self._show(force=True)

    def _show(self, force: bool = False) -> None:

        if self.token is None or self.cancelled.is_set():
            return
        with self.lock:
            state = (self.done, sorted(self.phases.items()))
            phases = sorted(set(self.phases.values()))
        with self.send_lock:
            now = time.monotonic()
            if not force and state == self.sent and now - self.last_line < MCP_HEARTBEAT:
                return
            self.sent, self.last_line = state, now
            self.count += 1
            elapsed = now - self.started
            if self.total == 1:
                message = "{} ({:.0f}s)".format(phases[0] if phases else "sending", elapsed)
            else:
                running = ", ".join(phases) or "-"
                message = f"{self.done}/{self.total} images done; running: {running}"
                message += f" ({elapsed:.0f}s)"
            params = {"progressToken": self.token, "progress": self.count, "message": message}
            self.server.send(
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}
            )

    def connected(self, wire: Wire) -> None:
        with self.lock:
            self.conns.append(wire)
        self.checkpoint()

    def checkpoint(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the call was cancelled by the client")

    def pause(self, seconds: float) -> None:
        self.cancelled.wait(seconds)
        self.checkpoint()

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            wires = list(self.conns)
        for wire in wires:  # wakes a read (or handshake) blocked in the call's thread
            wire.shutdown()


class McpServer:
    """Reads one JSON-RPC message per line, answers on `out`; every tools/call runs on its own
    thread through the same planning, job runner and doctor as the command line."""

    def __init__(
        self,
        args: Any,
        env: Mapping[str, str],
        settings: Settings,
        console: Console,
        out: IO[bytes],
    ) -> None:
        import threading

        self.args = args
        self.env = env
        self.settings = settings  # one Settings: every call shares the retry policy (RateGate)
        self.console = console
        self.out = out
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.calls: dict[Any, McpProgress] = {}
        self.threads: list[Any] = []
        self.slots = threading.BoundedSemaphore(args.concurrency)
        self.reserved: set[str] = set()  # output paths picked by calls still running
        self.version = ""  # what initialize agreed on (the handshake era)
        # The server's flags are the person's (~ expands); a call's paths are a model's (never).
        self.out_dir = os.path.abspath(os.path.expanduser(args.out_dir or os.getcwd()))
        self.allowed = [os.path.realpath(self.out_dir)]
        for folder in args.allow_dir:
            real = os.path.realpath(os.path.expanduser(folder))
            if real not in self.allowed:
                self.allowed.append(real)
        self.roots: list[str] = []  # the client's workspace roots (roots/list), when it has them
        self.client_roots = False
        self.roots_asked = 0
        self.roots_ready = threading.Event()
        self.roots_ready.set()

    # -- wire --------------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> None:
        line = redact(json_dumps(message)).encode("ascii") + b"\n"
        with self.write_lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (OSError, ValueError):  # the client went away; stdin EOF ends the loop
                pass

    def reply(
        self, rid: Any, result: dict[str, Any], modern: bool, cacheable: bool = False
    ) -> None:
        if modern:
            result = dict(result, resultType="complete")
            result["_meta"] = {MCP_SERVER_INFO_KEY: dict(MCP_SERVER_INFO)}
            if cacheable:
                result.update(ttlMs=0, cacheScope="private")
        self.send({"jsonrpc": "2.0", "id": rid, "result": result})

    def error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        self.send({"jsonrpc": "2.0", "id": rid, "error": err})

    def serve(self, stdin: IO[bytes]) -> int:
        self.preflight()
        while True:
            line = stdin.readline(MCP_MAX_LINE + 1)
            if not line:
                break
            if len(line) > MCP_MAX_LINE and not line.endswith(b"\n"):
                while True:  # skip the rest of the line, a bounded piece at a time
                    more = stdin.readline(MCP_MAX_LINE)
                    if not more or more.endswith(b"\n"):
                        break
                self.error(None, -32700, f"message longer than {MCP_MAX_LINE} bytes")
                continue
            if line.strip():
                self.handle_line(line)
        self.shutdown()
        return EXIT_OK

    def shutdown(self) -> None:
        """stdin closed: the client is leaving and will not wait long for what is still running
        (the SDKs send SIGTERM after a few seconds), so calls still running are cancelled."""

        with self.lock:
            threads = list(self.threads)
        deadline = time.monotonic() + MCP_EOF_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            running = list(self.calls.values())
        for progress in running:
            progress.cancel()
        deadline = time.monotonic() + MCP_SHUTDOWN_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for path in list(ACTIVE_TEMP_FILES):  # a call still stuck: its thread dies with us
            try:
                os.remove(path)
            except OSError:
                pass

    def handle_line(self, line: bytes) -> None:

        try:
            message = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            self.error(None, -32700, f"parse error: {text_of(str(exc), 200)}")
            return
        if isinstance(message, list):
            self.error(None, -32600, "JSON-RPC batches are not supported")
            return
        if not isinstance(message, dict):
            self.error(None, -32600, "a message must be a JSON object")
            return
        has_id = "id" in message
        rid = message.get("id")
        if has_id and (not isinstance(rid, (str, int, float)) or isinstance(rid, bool)):
            self.error(None, -32600, "the id must be a string or a number")
            return
        method = message.get("method")
        if method is None and not has_id:
            self.error(None, -32600, "not a JSON-RPC request")
            return
        if method is None:
            self.response(rid, message)  # an answer to our roots/list
            return
        if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
            if has_id:
                self.error(rid, -32600, 'not a JSON-RPC 2.0 request ("jsonrpc": "2.0", "method")')
            return
        params = message.get("params")
        if params is None:
            params = {}
        if not has_id:
            if isinstance(params, dict):
                self.notification(method, params)
            return  # notifications are never answered, not even with an error
        if not isinstance(params, dict):
            self.error(rid, -32602, "params must be an object")
            return
        try:
            self.request(rid, method, params)
        except Exception as exc:  # a bug must cost one answer, not the server
            self.console.debug(f"MCP {method}: {type(exc).__name__}: {exc}")
            self.error(rid, -32603, f"internal error: {type(exc).__name__}: {exc}")

    def notification(self, method: str, params: Mapping[str, Any]) -> None:
        if method in ("notifications/initialized", "notifications/roots/list_changed"):
            if self.client_roots:
                self.ask_roots()
        elif method == "notifications/cancelled":
            rid = params.get("requestId")
            if isinstance(rid, (str, int, float)) and not isinstance(rid, bool):
                with self.lock:
                    progress = self.calls.get(rid)
                if progress is not None:
                    self.console.info(f"[call {rid}] cancelled by the client")
                    progress.cancel()

    def request(self, rid: Any, method: str, params: Mapping[str, Any]) -> None:
        meta = params.get("_meta")
        modern = isinstance(meta, dict) and MCP_VERSION_KEY in meta and method != "initialize"
        if modern:
            assert isinstance(meta, dict)
            version = meta[MCP_VERSION_KEY]
            if version not in MCP_MODERN_VERSIONS:
                self.error(
                    rid,
                    -32022,
                    f"unsupported protocol version {clip(str(version), 40)!r}",
                    {"supported": list(MCP_MODERN_VERSIONS), "requested": clip(str(version), 40)},
                )
                return
        else:
            version = self.version or MCP_HANDSHAKE_VERSIONS[-1]
        capabilities = {"tools": {"listChanged": False}}
        if method == "initialize":
            asked = params.get("protocolVersion")
            self.version = asked if asked in MCP_HANDSHAKE_VERSIONS else MCP_HANDSHAKE_VERSIONS[-1]
            offered = params.get("capabilities")
            self.client_roots = isinstance(offered, dict) and isinstance(offered.get("roots"), dict)
            result = {
                "protocolVersion": self.version,
                "capabilities": capabilities,
                "serverInfo": dict(MCP_SERVER_INFO),
                "instructions": self.instructions(),
            }
            self.reply(rid, result, modern=False)
        elif method == "server/discover":
            result = {
                "supportedVersions": list(MCP_MODERN_VERSIONS),
                "capabilities": capabilities,
                "serverInfo": dict(MCP_SERVER_INFO),
                "instructions": self.instructions(),
            }
            self.reply(rid, result, modern=True, cacheable=True)
        elif method == "ping":
            self.reply(rid, {}, modern)
        elif method == "tools/list":
            tools = mcp_tools(version, self.out_dir, self.folders())
            self.reply(rid, {"tools": tools}, modern, cacheable=True)
        elif method == "tools/call":
            self.start_call(rid, params, version, modern)
        else:
            self.error(rid, -32601, f"method not found: {clip(method, 80)}")

    def instructions(self) -> str:
        return (
            "generate_image makes an image file through the user's Codex gateway (billed; "
            "returns the saved path); check_gateway diagnoses the gateway (free). Relative "
            f"paths are inside {self.out_dir}; files are read and written only inside "
            f"{mcp_folder_list(self.folders())}."
        )

    # -- workspace: the folders a call may read and write ---------------------------------------

    def ask_roots(self) -> None:
        """roots/list to the client (the handshake era): its workspace roots widen the allowed
        folders. Calls wait for the answer (MCP_ROOTS_WAIT) so they are judged by it."""
        with self.lock:
            self.roots_asked += 1
            rid = f"imagegen-roots-{self.roots_asked}"
            self.roots_ready.clear()
        self.send({"jsonrpc": "2.0", "id": rid, "method": "roots/list"})

    def response(self, rid: Any, message: Mapping[str, Any]) -> None:
        with self.lock:
            if rid != f"imagegen-roots-{self.roots_asked}":
                return  # not ours, or an answer that a newer roots/list replaced
            result = message.get("result")
            listed = result.get("roots") if isinstance(result, dict) else None
            roots: list[str] = []
            for root in listed if isinstance(listed, list) else []:
                path = file_uri_path(root.get("uri") if isinstance(root, dict) else None)
                if path and path not in roots and len(roots) < MCP_MAX_ROOTS:
                    roots.append(path)
            self.roots = roots
            self.roots_ready.set()
        if roots:
            self.console.info("client workspace roots: " + ", ".join(roots))

    def folders(self) -> list[str]:
        with self.lock:
            return self.allowed + [r for r in self.roots if r not in self.allowed]

    def resolve(self, path: str, what: str) -> str:
        """A call's path, resolved (symlinks followed, '..' collapsed, '~' kept as a name),
        refused unless it lies inside the allowed folders: the call is a model's say-so."""
        check_text(path, what, path=True)
        real = os.path.realpath(os.path.join(self.out_dir, path))
        if not self.roots_ready.wait(MCP_ROOTS_WAIT):
            self.roots_ready.set()  # a client that never answers delays one call, not each
        folders = self.folders()
        if not any(is_inside(real, folder) for folder in folders):
            raise UsageError(
                f"{what} {path!r} is outside the folders this server may use "
                f"({', '.join(folders)}); nothing was sent",
                "use a path inside them; to allow another folder, the person who runs the "
                "server adds --allow-dir DIR to its arguments",
            )
        return real

    # -- tool calls ---------------------------------------------------------------------------

    def start_call(self, rid: Any, params: Mapping[str, Any], version: str, modern: bool) -> None:
        import threading

        name = params.get("name")
        if name not in ("generate_image", "check_gateway"):
            self.error(rid, -32602, f"unknown tool: {clip(str(name), 80)}")
            return
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if not isinstance(token, (str, int, float)) or isinstance(token, bool):
            token = None
        console = McpConsole(self.console, f"call {rid}")
        progress = McpProgress(self, console, token)
        with self.lock:
            if rid in self.calls:
                self.error(rid, -32600, f"request id {rid!r} is already in use")
                return
            if len(self.calls) >= self.args.concurrency + MCP_MAX_WAITING:
                self.error(
                    rid,
                    -32000,
                    f"{len(self.calls)} calls are running or waiting; try again when one ends",
                )
                return
            self.calls[rid] = progress
            self.threads = [t for t in self.threads if t.is_alive()]
            thread = threading.Thread(
                target=self.run_call,
                args=(rid, str(name), params.get("arguments"), progress, version, modern),
                name=f"mcp-call-{rid}",
                daemon=True,
            )
            self.threads.append(thread)
        thread.start()

    def run_call(
        self,
        rid: Any,
        name: str,
        arguments: Any,
        progress: McpProgress,
        version: str,
        modern: bool,
    ) -> None:
        console = progress.console
        assert isinstance(console, McpConsole)
        reserved: list[str] = []
        result: dict[str, Any]
        progress.start()
        try:
            console.info(f"{name} started")
            self.take_slot(progress)
            try:
                if name == "generate_image":
                    result = self.generate(arguments, progress, console, version, reserved)
                else:
                    result = self.check(arguments, console, version)
            finally:
                self.slots.release()
        except ImagegenError as exc:
            if isinstance(exc, ConfigError):
                missing = re.match(r"missing environment variable (\S+)", exc.message)
                if missing:
                    exc.hint = mcp_key_hint(missing.group(1))
                elif exc.message.startswith("no Codex configuration found") and not (
                    self.args.codex_home or self.env.get("CODEX_HOME")
                ):
                    exc.hint = (
                        "agents start MCP servers with a minimal environment, so CODEX_HOME may "
                        "not reach this one: add --codex-home DIR to the server's args (or "
                        'env_vars = ["CODEX_HOME"] to [mcp_servers.imagegen]); restart the agent'
                    )
                elif exc.message.startswith("no API key found for provider"):
                    var = self.missing_key()  # CODEX_API_KEY, when the login is not on file
                    if var:
                        exc.hint = mcp_key_hint(var)
            result = mcp_failure(exc, version, console.warnings)
        except Exception as exc:  # a bug: this call fails, the server stays up
            if console.verbose:
                import traceback

                console._err(traceback.format_exc())
            failure = ImagegenError(f"internal error: {type(exc).__name__}: {exc}")
            result = mcp_failure(failure, version, console.warnings)
        finally:
            progress.stop()
            with self.lock:
                self.calls.pop(rid, None)
                self.reserved.difference_update(reserved)
        if progress.cancelled.is_set():
            console.info("cancelled: no answer is sent; its temporary files are removed")
            return  # a cancelled request gets no response
        console.info("failed" if result.get("isError") else "done")
        self.reply(rid, result, modern)

    def take_slot(self, progress: McpProgress) -> None:
        if self.slots.acquire(blocking=False):
            return
        progress.phase(f"waiting: {self.args.concurrency} calls are running")
        while not self.slots.acquire(timeout=0.2):
            progress.checkpoint()
        progress.phase("sending")

    def pick_out(self, prompt: str, fmt: str | None, n: int, reserved: list[str]) -> str:
        """A descriptive name in the output folder that no file and no running call has."""
        ext = FORMAT_EXTENSIONS[format_for(None, fmt)]
        slug = slugify(prompt)
        with self.lock:
            for number in range(1, 10_000):
                stem = slug if number == 1 else f"{slug}-{number}"
                names = [stem + ext] if n == 1 else [f"{stem}-{i}{ext}" for i in range(1, n + 1)]
                paths = [os.path.join(self.out_dir, name) for name in names]
                if not any(os.path.lexists(p) or p in self.reserved for p in paths):
                    self.reserved.update(paths)
                    reserved += paths
                    return os.path.join(self.out_dir, stem + ext)
        raise OutputError(f"no free file name for this prompt in {self.out_dir}", "pass out")

    def call_args(self, opts: Mapping[str, Any], reserved: list[str]) -> Any:
        """The server's command line with this call's arguments: the same checks and defaults
        as the CLI (plan_jobs, build_job) apply to both."""

        call = type(self.args)(**vars(self.args))
        call.mcp = call.dry_run = call.json = call.doctor = False
        call.out_dir = call.batch = call.edit_from = call.prompt_file = None
        call.prompt = opts["prompt"]
        for key in MCP_GENERATE_ARGUMENTS:
            if key in opts and key not in ("prompt", "out", "images", "image_urls", "mask"):
                setattr(call, key, opts[key])
        call.image = [self.resolve(p, "images:") for p in opts.get("images", ())]
        call.image_url = list(opts.get("image_urls", ()))
        call.mask = self.resolve(opts["mask"], "mask") if opts.get("mask") else None
        if opts.get("out"):
            call.out = self.resolve(opts["out"], "out")
        else:
            call.out = self.pick_out(opts["prompt"], call.format, call.n, reserved)
        return call

    def generate(
        self,
        arguments: Any,
        progress: McpProgress,
        console: McpConsole,
        version: str,
        reserved: list[str],
    ) -> dict[str, Any]:

        opts = mcp_arguments(arguments, MCP_GENERATE_ARGUMENTS)
        call = self.call_args(opts, reserved)
        jobs = plan_jobs(call, self.env, prompt=opts["prompt"])  # nothing is sent if this fails
        gw = load_gateway(call, self.env, console)
        from urllib.parse import urlsplit

        parts = urlsplit(gw.base_url)
        if parts.scheme == "http" and gw.api_key and not is_loopback_host(parts.hostname or ""):
            console.warn(f"the API key will be sent unencrypted over http:// to {parts.hostname}")
        progress.total = len(jobs)
        started = time.time()
        console.info(f"requesting {len(jobs)} image(s) from {host_of(gw.base_url)}")
        outcomes = run_all(jobs, gw, self.settings, console, call, progress)
        for outcome in outcomes:
            if isinstance(outcome.error, Cancelled):
                raise outcome.error
            if outcome.error is None:
                report_saved(outcome, console, quiet_success=len(outcomes) > 1)
        preview = mcp_preview(outcomes, call.partials_dir, started)
        return mcp_image_result(outcomes, gw, console.warnings, version, preview)

    def check(self, arguments: Any, console: McpConsole, version: str) -> dict[str, Any]:

        opts = mcp_arguments(arguments, MCP_CHECK_ARGUMENTS)
        call = type(self.args)(**vars(self.args))
        call.doctor = True  # so that an auth.command runs, as under --doctor
        call.probe = bool(opts.get("probe", self.args.probe))
        check = Check(console)
        code = doctor(call, self.env, self.settings, console, check)
        for entry in check.entries:
            if entry["check"] == "key" and entry["status"] == "failed":
                var = self.missing_key()
                if var:
                    entry["hint"] = mcp_key_hint(var)
                    console.lines.append(f"{'':17}hint: {entry['hint']}")
        lines = console.lines + ["warning: " + w for w in console.warnings]
        structured = {"ok": code == EXIT_OK, "exit_code": code, "checks": check.entries}
        result: dict[str, Any] = {"content": [mcp_text(lines)], "isError": code != EXIT_OK}
        if mcp_version_at_least(version, "2025-06-18"):
            result["structuredContent"] = structured
        return result

    def missing_key(self) -> str:
        """The provider's env_key variable when it is not set in this server's environment."""

        probe = type(self.args)(**vars(self.args))
        probe.dry_run = True
        try:
            gw = load_gateway(probe, self.env, McpConsole(self.console, "start"))
        except ImagegenError:
            return ""
        if not gw.api_key and gw.key_source.startswith("missing:"):
            return gw.key_source[len("missing:") :]
        if gw.openai_auth and not (
            gw.api_key or gw.key_command or gw.header_credential or self.args.base_url
        ):
            return "CODEX_API_KEY"  # no key in auth.json either: the variable did not come
        return ""

    def preflight(self) -> None:
        """Say on stderr, at start, what the calls will use, and what is missing."""

        probe = type(self.args)(**vars(self.args))
        probe.dry_run = True
        try:
            gw = load_gateway(probe, self.env, self.console)
        except ImagegenError as exc:
            self.console.warn(f"{exc.message}; tool calls fail until this is fixed")
            return
        var = self.missing_key()
        if var:
            self.console.warn(mcp_key_hint(var))
        self.console.info(
            f"MCP server ready: provider {gw.provider}, {gw.url('/responses')}, "
            f"output folder {self.out_dir}, files only inside {', '.join(self.allowed)}"
        )


# -- starting the server ----------------------------------------------------------------------

MCP_REFUSED_FLAGS = (
    ("--prompt", "prompt"),
    ("--prompt-file", "prompt_file"),
    ("--out", "out"),
    ("--batch", "batch"),
    ("--doctor", "doctor"),
    ("--dry-run", "dry_run"),
    ("--edit-from", "edit_from"),
    ("--resume", "resume"),
    ("--image", "image"),
    ("--image-url", "image_url"),
    ("--mask", "mask"),
    ("--json", "json"),
    ("--resume", "resume"),
)


def serve_mcp(args: Any, env: Mapping[str, str], settings: Settings, console: Console) -> int:
    """--mcp: check the start flags, keep stdout for the protocol alone, serve until EOF."""
    given = [
        flag for flag, attr in MCP_REFUSED_FLAGS if getattr(args, attr) not in (None, False, [])
    ]
    if args.n != 1:
        given.append("--n")
    if given:
        raise UsageError(
            f"{', '.join(given)} cannot be combined with --mcp",
            "prompts, files and variants come from each generate_image call",
        )
    if not 1 <= args.concurrency <= 16:
        raise UsageError("--concurrency must be between 1 and 16")
    for header in args.header:
        parse_header_arg(header)
    if args.out_dir:
        folder = os.path.expanduser(args.out_dir)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError(f"--out-dir {args.out_dir} is not a folder")
    for folder in args.allow_dir:
        if not os.path.isdir(os.path.expanduser(folder)):
            raise UsageError(f"--allow-dir {folder} is not a folder")
    stdin = getattr(sys.stdin, "buffer", None)
    if stdin is None:
        raise UsageError("--mcp needs stdin: the client writes its requests there")
    # Only protocol goes to stdout: the protocol keeps a copy of it, and fd 1 itself now points
    # at stderr, so a stray print (ours or a library's) cannot corrupt a message.
    saved_stdout = sys.stdout
    sys.stdout.flush()
    try:
        proto_fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        proto: IO[bytes] = os.fdopen(proto_fd, "wb")
    except (AttributeError, OSError, ValueError):  # no real file descriptors (embedded use)
        proto_fd = -1
        proto = sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        return McpServer(args, env, settings, console, proto).serve(stdin)
    finally:
        sys.stdout = saved_stdout
        if proto_fd >= 0:
            # a client that closed our stdout leaves answers nobody reads: not an error of ours
            # (close() still releases the descriptor when its flush fails)
            try:
                proto.flush()
            except OSError:
                pass
            os.dup2(proto_fd, saved_stdout.fileno())
            try:
                proto.close()
            except OSError:
                pass


# =============================================================================================
# 16. CLI: arguments, then one run through the job runner, the doctor or the MCP server
# =============================================================================================

EXAMPLES = """\
examples:
  generate:      %(prog)s --prompt "a lighthouse at dusk, oil painting" --out lighthouse.png
  portrait:      %(prog)s --prompt-file brief.txt --size 1024x1536 --out poster.png
  edit:          %(prog)s --prompt "make it winter, keep the layout" --image in.png \\
                     --action edit --out winter.png
  masked edit:   %(prog)s --prompt "replace the sky" --image in.png --mask sky.png --out sky.png
  check only:    %(prog)s --prompt "test" --out x.png --dry-run
  for agents:    %(prog)s --prompt "..." --out a.png --json
  variants:      %(prog)s --prompt "a logo" --out logo.png --n 4
  batch:         %(prog)s --batch jobs.jsonl --out-dir out/ --concurrency 4
  iterate:       %(prog)s --prompt "a fox" --out fox.png --sidecar
                 %(prog)s --prompt "now at night" --edit-from fox.png --out fox-night.png
  never twice:   %(prog)s --prompt "a poster" --out poster.png --resumable
                 %(prog)s --resume resp_abc123 --out poster.png
  diagnose:      %(prog)s --doctor --probe
  images API:    %(prog)s --prompt "a fox" --out fox.png --api auto
  MCP server:    %(prog)s --mcp --out-dir ~/Pictures/generated
                 codex mcp add imagegen -- python3 /abs/path/%(prog)s --mcp
                 claude mcp add imagegen -- python3 /abs/path/%(prog)s --mcp

configuration: as Codex 0.171.0 reads it: /etc/codex/config.toml, then $CODEX_HOME (default
~/.codex)/config.toml (model_provider and [model_providers.<id>]: base_url, env_key,
query_params, http_headers, ...), --profile NAME.config.toml, then /etc/codex/managed_config.toml
over all of them. auth.json and CODEX_API_KEY go only to the built-in openai
provider or one with requires_openai_auth = true; OPENAI_BASE_URL is ignored (use
openai_base_url). --doctor lists every file read and the layer that chose the provider.
network: proxies as urllib finds them (https_proxy, http_proxy, all_proxy, no_proxy; the
system settings on Windows/macOS); http:// proxies only, user:pass@ percent-encoded. Answers
are read in bounded memory: an image over 128 MB or an event over 8 MB is exit 4.
exit codes: 0 ok, 1 internal, 2 arguments/input, 3 config/credentials, 4 gateway error,
5 no image, 6 network/timeout, 7 output not written, 130/143 interrupted.
in a sandbox: exit 6 "not permitted" = the sandbox blocks the network, exit 7 "read-only file
system" = nothing is writable; the hint names the fix (or use --mcp, which runs outside it).
"""


def build_parser() -> Any:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message, "see --help")

    p = Parser(
        prog=PROG,
        description="Generate or edit an image through the Responses gateway your Codex CLI "
        "is configured for, and save it to a file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("prompt and output")
    g.add_argument("--prompt", help="the prompt text, or - to read it from stdin")
    g.add_argument(
        "--prompt-file",
        metavar="PATH",
        help="read the prompt from a UTF-8 file (at most 1 MB; a pipe such as <(cmd) is read "
        "within --timeout)",
    )
    g.add_argument("--out", metavar="PATH", help="where to save the image (parents are created)")
    g.add_argument(
        "--force",
        action="store_true",
        help="overwrite --out (and with --sidecar its OUT.json) if it exists",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the path, for every outcome (errors too)",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print the request and exit; sends nothing"
    )

    g = p.add_argument_group("reference images")
    g.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="local reference image (repeatable)",
    )
    g.add_argument(
        "--image-url",
        action="append",
        default=[],
        metavar="URL",
        help="http(s) or data: URL of a reference image (repeatable)",
    )
    g.add_argument(
        "--mask",
        metavar="PATH",
        help="PNG with alpha, same size as the first --image; transparent = change",
    )
    g.add_argument(
        "--detail", choices=DETAILS, default="auto", help="input image detail (default auto)"
    )

    g = p.add_argument_group("image options")
    g.add_argument(
        "--action",
        choices=ACTIONS,
        default="auto",
        help="generate, edit or let the model decide (default auto)",
    )
    g.add_argument(
        "--size",
        help="WxH or auto (default 1024x1024, or for an edit the first reference image's shape; "
        "also 1024x1536, 1536x1024)",
    )
    g.add_argument(
        "--model",
        help=f"Responses model (default $CODEX_IMAGEGEN_MODEL or {DEFAULT_MODEL})",
    )
    g.add_argument("--image-model", help="image model inside the tool, e.g. gpt-image-2")
    g.add_argument("--quality", choices=QUALITIES)
    g.add_argument("--background", choices=BACKGROUNDS)
    g.add_argument(
        "--format",
        choices=FORMATS + ("jpg",),
        help="output format (default: from --out's extension, else png)",
    )
    g.add_argument("--compression", type=int, metavar="0-100", help="jpeg/webp compression")
    g.add_argument("--moderation", choices=MODERATIONS)
    g.add_argument("--input-fidelity", choices=FIDELITIES)
    g.add_argument(
        "--strict-size",
        action="store_true",
        help="never switch to a larger size when the gateway rejects a small one",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="send exactly what was asked or fail: no larger size, no dropped image option "
        "and no fallback from --resumable to a normal request",
    )

    g = p.add_argument_group("gateway")
    g.add_argument(
        "--codex-home", metavar="DIR", help="Codex home (default $CODEX_HOME or ~/.codex)"
    )
    g.add_argument(
        "--profile",
        metavar="NAME",
        help="layer NAME.config.toml over config.toml (managed_config.toml still wins)",
    )
    g.add_argument("--base-url", metavar="URL", help="override the provider's base URL")
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header (repeatable; a malformed one is exit 2)",
    )
    g.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="one JSON answer instead of Server-Sent Events (for relays that fail streamed "
        "requests, e.g. Portkey; --doctor --probe tells)",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="retries for transient failures (default 2): at most 1+N paid attempts per "
        "image; a relay that shows it retried itself (LiteLLM) is not retried on a 5xx",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="total time budget (default 900)",
    )
    g.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="give up after this long without a byte (default 300)",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="time to connect: DNS, TCP, proxy tunnel and TLS in all (default 30)",
    )

    g = p.add_argument_group("several images")
    g.add_argument(
        "--n",
        type=int,
        default=1,
        metavar="N",
        help="N variants, sent concurrently, saved as OUT-1..OUT-N (1-10)",
    )
    g.add_argument(
        "--batch",
        metavar="JOBS.jsonl",
        help="one job per line: a prompt string or an object with prompt, out, size, image, "
        "...; - reads stdin (at most 16 MB, 1 MB + 64 KB a line)",
    )
    g.add_argument(
        "--out-dir", metavar="DIR", help="folder for --batch results (default names NNN-<slug>.png)"
    )
    g.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="K",
        help="parallel --batch jobs (default 4, max 16)",
    )

    g = p.add_argument_group("previews, metadata and iteration")
    g.add_argument(
        "--partial-images",
        type=int,
        default=0,
        metavar="K",
        help="ask for K (0-3) live previews, saved as STEM.partial-N.EXT (city.partial-1.png)",
    )
    g.add_argument(
        "--partials-dir", metavar="DIR", help="where previews go (default: beside --out)"
    )
    g.add_argument(
        "--sidecar",
        action="store_true",
        help="write OUT.json beside each image (prompt, ids, sizes, sha256, timings); "
        "an OUT.json that is not an earlier sidecar needs --force",
    )
    g.add_argument(
        "--edit-from",
        metavar="PATH",
        help="continue editing an earlier image (or its .json sidecar)",
    )
    g.add_argument(
        "--store",
        action="store_true",
        help="ask the gateway to store the response (lets --edit-from send previous_response_id)",
    )
    g.add_argument(
        "--resumable",
        action="store_true",
        help="background mode (background + store): a cut stream is resumed and a queued "
        "response polled, never sent twice; Ctrl-C prints the --resume command",
    )
    g.add_argument(
        "--resume",
        metavar="RESPONSE_ID",
        help="fetch a stored response (following it if still running) and save its image to "
        "--out; nothing new is paid. The id as the gateway gave it (LiteLLM's are ~400 "
        f"characters): printable, no spaces, at most {RESPONSE_ID_MAX} characters",
    )
    g.add_argument(
        "--api",
        choices=("responses", "images", "auto"),
        default="responses",
        help="responses (default), images (/images/generations and /images/edits), "
        "or auto (fall back to images)",
    )

    g = p.add_argument_group("diagnostics")
    g.add_argument(
        "--doctor",
        action="store_true",
        help="check configuration (files and layers read, provider, key, whether Codex has its "
        "own image tool here), DNS, TCP, TLS and GET /models; no image",
    )
    g.add_argument(
        "--probe",
        action="store_true",
        help="with --doctor: one cheap /responses call (may cost one low-quality image)",
    )

    g = p.add_argument_group("agents")
    g.add_argument(
        "--mcp",
        action="store_true",
        help="serve the tools generate_image and check_gateway over MCP on stdin/stdout; "
        "the gateway flags apply to every call, --out-dir is where relative paths go "
        "(default: the current folder), --concurrency bounds parallel calls. A call reads "
        "and writes files only inside --out-dir, the --allow-dir folders and the client's "
        "workspace roots",
    )
    g.add_argument(
        "--allow-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="with --mcp: another folder whose files calls may read (images, mask) and write "
        "(out); repeatable",
    )

    g = p.add_argument_group("messages")
    g.add_argument(
        "--quiet",
        action="store_true",
        help="no progress or notes on stderr (warnings and errors still)",
    )
    g.add_argument(
        "--verbose",
        action="store_true",
        help="log requests and events (key redacted) and tracebacks",
    )
    g.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return p


def run(args: Any, console: Console) -> int:
    """The command line's run after parsing: the MCP server, the doctor, or image jobs (planned
    and checked in full, then the gateway loaded, then sent or shown as a dry run)."""
    env = os.environ
    settings = make_settings(args, env)
    RESUME_ARGS[:] = resume_args(args)  # the MCP server's --resume hints need them too
    if args.mcp:
        return serve_mcp(args, env, settings, console)
    if args.allow_dir:
        raise UsageError("--allow-dir applies to --mcp only", "the command line has no limit")
    if args.doctor and args.json:
        check = Check(console, to_stderr=True)
        code = doctor(args, env, settings, console, check)
        console.result(json_dumps(check.record(code)))
        return code
    if args.doctor:
        return doctor(args, env, settings, console)
    if args.probe:
        raise UsageError("--probe needs --doctor", "run --doctor --probe (no image is saved)")
    jobs = plan_jobs(args, env)
    gw = load_gateway(args, env, console, budget=settings.timeout)
    settings.timeout = max(settings.timeout - gw.key_seconds, 0.001)  # auth.command's share
    from urllib.parse import urlsplit

    parts = urlsplit(gw.base_url)  # load_gateway checked it (check_base_url)
    warn_plain_http(gw, console, args.dry_run)
    if args.dry_run:
        return _dry_run(args, jobs, gw, console)
    _announce_jobs(jobs, parts.netloc, console)
    outcomes = run_all(jobs, gw, settings, console, args)
    for outcome in outcomes:
        if outcome.error is None:
            report_saved(outcome, console, quiet_success=len(outcomes) > 1)
    if len(outcomes) == 1 and not args.batch:
        return _finish_one(outcomes[0], gw, args, console)
    return _finish_many(outcomes, gw, args, console)


def _dry_run(args: Any, jobs: list[Job], gw: Gateway, console: Console) -> int:
    """Show the first job's request as it would be sent (the others are listed), with the
    warnings a real run would give; nothing is sent."""
    job = jobs[0]
    payload: dict[str, Any] | None = None
    if job.resume_id:
        request = fetch_request(job.resume_id, stream=False)
    elif job.api == "images":
        request = images_request(job, job.size)
    else:
        payload = build_payload(
            job, stream=job.stream, size=job.size, use_previous=bool(job.previous_response_id)
        )
        request = responses_request(payload)
    warnings = dry_run_warnings(args, jobs, gw)
    for line in warnings:
        console.warn(line)
    print_dry_run(
        gw,
        request,
        console,
        payload,
        notes=[job.size_reason] if job.size_reason else [],
        warnings=warnings,
        more=jobs[1:],
        as_json=bool(args.json),
    )
    return EXIT_OK


def _transfer_words(job: Job) -> str:
    if job.api == "images":
        return "Images API"  # one JSON answer: it never streams
    return "streaming" if job.stream else "no streaming"


def _announce_jobs(jobs: list[Job], netloc: str, console: Console) -> None:
    """Say what is about to be requested and from where before the wait starts, so a minute of
    silence is not taken for a hang."""
    what = f"{len(jobs)} images" if len(jobs) > 1 else "image"
    if jobs[0].resume_id:
        console.info(f"fetching the stored response {jobs[0].resume_id} from {netloc}")
    else:
        console.info(
            "requesting {} from {} ({}, {}{}); this can take a minute or two".format(
                what,
                netloc,
                jobs[0].model,
                _transfer_words(jobs[0]),
                ", resumable" if jobs[0].resumable else "",
            )
        )
    if jobs[0].size_reason and len(jobs) == 1:
        console.info(jobs[0].size_reason)


def _finish_one(outcome: Outcome, gw: Gateway, args: Any, console: Console) -> int:
    """A single image: its path(s) on stdout, or its JSON record; a failure is raised for main()
    to report, except after a JSON record, which already says it (reported once, here)."""
    if args.json:
        console.result(json_dumps(outcome_record(outcome, gw)))
        if outcome.error is not None:  # the record on stdout says it: main() must not again
            console.error(outcome.error)
            return outcome.error.exit_code
    if outcome.error is not None:
        raise outcome.error
    if not args.json:
        console.result(outcome.image.path if outcome.image else "")
        for extra in outcome.extra_images:
            console.result(extra.path)
    return EXIT_OK


def _finish_many(outcomes: list[Outcome], gw: Gateway, args: Any, console: Console) -> int:
    """Several images (or a batch): one result line each, the count saved when some failed and
    the tokens in total; the exit code is the worst outcome's."""
    for outcome in outcomes:
        line = json_dumps(outcome_record(outcome, gw)) if args.json else summary_line(outcome)
        console.result(line)
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        console.info(f"{len(outcomes) - len(failed)} of {len(outcomes)} images saved")
    totals = usage_totals(outcomes)
    tokens = usage_words(
        totals.get("main_model_usage_total"), totals.get("image_model_usage_total")
    )
    if tokens:
        console.info(f"tokens in total for {len(outcomes)} images: {tokens}")
    return max((o.exit_code for o in outcomes), default=EXIT_OK)


# =============================================================================================
# 17. Entry point: signals, output encoding, main()
# =============================================================================================


class Terminated(KeyboardInterrupt):
    """SIGTERM (an agent's or CI's timeout): clean up like Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def utf8_output() -> None:
    """Piped output in UTF-8 (Windows pipes default to a code page that cannot print every
    prompt or path); a terminal keeps its encoding but never fails on a character."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", "") or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            if encoding == "utf8" or stream.isatty():
                reconfigure(errors="backslashreplace")
            else:
                reconfigure(encoding="utf-8", errors="backslashreplace")
        except (OSError, ValueError):
            pass


def json_requested(argv: Sequence[str]) -> bool:
    """Whether --json is on the command line, for errors found before (or while) the arguments
    are parsed: a caller that asked for JSON gets JSON even then."""
    for token in argv:
        if token == "--":
            break
        if token == "--json":
            return True
    return False


def failure_json(code: int, message: str, hint: str = "") -> str:
    """The --json object of a run that ended without an image record (it stopped before
    sending, was interrupted, or hit a bug): the same ok / exit_code / error / hint fields."""
    record = {"ok": False, "exit_code": code, "error": message, "hint": hint or default_hint(code)}
    return json_dumps(redact_obj(record))


def main(argv: Sequence[str] | None = None) -> int:

    utf8_output()
    console = Console()
    given = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in given
    console.verbose = verbose
    # --mcp owns stdout for the protocol (and refuses --json): no JSON record there
    as_json = json_requested(given) and "--mcp" not in given
    try:
        previous: Any = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    try:
        args = build_parser().parse_args(argv)
        console.quiet = args.quiet
        as_json = bool(args.json) and not args.mcp
        return run(args, console)
    except ImagegenError as exc:
        console.error(exc)
        if as_json:
            console.result(failure_json(exc.exit_code, exc.message, exc.hint))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        for path in list(ACTIVE_TEMP_FILES):  # worker threads die with us: clear their files
            try:
                os.remove(path)
            except OSError:
                pass
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        console._err("error: " + what)
        resumes = []
        for out, response_id in list(PENDING_RESUMES.items()):
            resumes.append(resume_command(response_id, out))
            console._err(
                f"  the gateway keeps working on response {response_id}; fetch the image later, "
                f"without paying again, with: {resumes[-1]}"
            )
        code = 143 if isinstance(exc, Terminated) else 130
        if as_json:
            hint = (
                f"fetch the image later, without paying again, with: {resumes[0]}"
                if resumes
                else ""
            )
            console.result(failure_json(code, what, hint))
        return code
    except Exception as exc:  # a bug: one line, traceback only with --verbose
        if verbose:
            import traceback

            console._err(traceback.format_exc())
        message = f"internal error: {type(exc).__name__}: {exc}"
        console._err(f"error: {message} (rerun with --verbose and report it)")
        if as_json:
            console.result(
                failure_json(EXIT_INTERNAL, message, "rerun with --verbose and report it")
            )
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
