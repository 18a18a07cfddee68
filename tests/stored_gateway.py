"""A loopback gateway that stores responses (background mode), for --resumable and --resume tests.

It wraps ``tests.gateway.Gateway`` (same recording, same fault replies) and adds what the
Responses API does for ``background: true`` + ``store: true``:

* ``POST /v1/responses`` with background and store keeps the response. Streaming, it sends the
  planned events (cut after ``cuts[0]`` events if planned); without streaming it answers the
  response object with ``status: "queued"``.
* ``GET /v1/responses/{id}`` answers ``in_progress`` ``polls`` times (with ``retry-after-ms``),
  then the final object; ``?stream=true&starting_after=N`` replays the events after sequence
  number N (cut again after ``cuts[k]`` events if planned).
* ``POST /v1/responses/{id}/cancel`` marks it cancelled. Unknown ids get a 404.
* ``refuse_store=True`` imitates relays on ChatGPT accounts: ``store: true`` gets a 400
  "Store must be set to false"; a plain request gets the next plan's stream, unstored.

    with StoredGateway() as sg:
        sg.plan(image_events(b64(png), resp_id="resp_bg1"), cuts=[4])
        run_cli([..."--resumable"], env)
        assert len(sg.posts()) == 1
"""

from __future__ import annotations

import json
import urllib.parse
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.gateway import (
    RESPONSES_PATH,
    Gateway,
    Recorded,
    Reply,
    error_reply,
    json_reply,
    response_obj,
    sse_reply,
)

__all__ = ["Plan", "StoredGateway"]


@dataclass
class Plan:
    """How one stored response unfolds."""

    events: list[dict[str, Any]]  # the whole stream, sequence-numbered, ending in a final event
    cuts: list[int] = field(default_factory=list)  # stream k is cut after cuts[k] events
    polls: int = 0  # JSON GETs answered "in_progress" before the final object
    retry_after_ms: int = 20
    stall_after: int | None = None  # the first stream hangs after this many events
    delay: float = 0.0  # seconds between events (a relay in front forwards them one by one)
    streams: int = 0  # streams sent so far (POST and resumes)
    cancelled: bool = False

    @property
    def response_id(self) -> str:
        for ev in self.events:
            resp = ev.get("response")
            if isinstance(resp, dict) and resp.get("id"):
                return str(resp["id"])
        raise ValueError("the plan's events carry no response id")

    def final(self) -> dict[str, Any]:
        """The stored response object once done (from the stream's last response event)."""
        for ev in reversed(self.events):
            resp = ev.get("response")
            if isinstance(resp, dict) and resp.get("status") not in ("queued", "in_progress"):
                return {**resp, "background": True, "store": True}
        return response_obj([], resp_id=self.response_id, status="in_progress")

    def next_cut(self) -> int | None:
        cut = self.cuts[self.streams] if self.streams < len(self.cuts) else None
        self.streams += 1
        return cut


class StoredGateway:
    """``Gateway`` plus stored background responses. Use as a context manager."""

    def __init__(self, *, refuse_store: bool = False) -> None:
        self.gw = Gateway()
        self.refuse_store = refuse_store
        self.plans: deque[Plan] = deque()
        self.stored: dict[str, Plan] = {}
        self._route = self.gw._next_reply
        # the handler asks gw._next_reply(path, rec); answer the stored-response paths here
        self.gw._next_reply = self._next_reply  # type: ignore[method-assign]

    def __enter__(self) -> StoredGateway:
        self.gw.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gw.close()

    @property
    def base_url(self) -> str:
        return self.gw.base_url

    @property
    def requests(self) -> list[Recorded]:
        return list(self.gw.requests)

    def posts(self) -> list[Recorded]:
        """POSTs that would be paid for (to /responses itself)."""
        return self.gw.posts()

    def gets(self) -> list[Recorded]:
        return [r for r in self.gw.requests if r.method == "GET"]

    def plan(
        self,
        events: Sequence[dict[str, Any]],
        *,
        cuts: Sequence[int] = (),
        polls: int = 0,
        retry_after_ms: int = 20,
        stall_after: int | None = None,
        delay: float = 0.0,
    ) -> Plan:
        """The next POST creates this response (stored when the request asks for it)."""
        plan = Plan(list(events), list(cuts), polls, retry_after_ms, stall_after, delay=delay)
        self.plans.append(plan)
        return plan

    def store(self, plan: Plan) -> None:
        """A response stored earlier (for --resume without a POST in this test)."""
        self.stored[plan.response_id] = plan

    def dump(self) -> str:
        return self.gw.dump()

    # -- routing -------------------------------------------------------------------------

    def _next_reply(self, path: str, rec: Recorded) -> Reply:
        if path == RESPONSES_PATH and rec.method == "POST" and self.gw.pending(path) == 0:
            return self._post(rec)
        prefix = RESPONSES_PATH + "/"
        if path.startswith(prefix) and self.gw.pending(path) == 0:
            raw_id, _, action = path[len(prefix) :].partition("/")
            rid = urllib.parse.unquote(raw_id)  # the id is one percent-encoded path segment
            plan = self.stored.get(rid)
            if plan is None:
                return error_reply(404, f"Response with id '{rid}' not found.", param=None)
            if action == "cancel" and rec.method == "POST":
                plan.cancelled = True
                return json_reply({**plan.final(), "status": "cancelled"})
            if rec.method == "GET" and not action:
                return self._get(plan, rec)
        return self._route(path, rec)

    def _post(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        keep = bool(body.get("store")) and bool(body.get("background"))
        if body.get("store") and self.refuse_store:
            return error_reply(400, "Store must be set to false", param="store")
        if not self.plans:
            return error_reply(500, "test gateway: no plan", type_="server_error")
        plan = self.plans.popleft()
        if keep:
            self.stored[plan.response_id] = plan
        if not body.get("stream"):
            if keep:
                queued = response_obj([], resp_id=plan.response_id, status="queued")
                return json_reply({**queued, "background": True})
            return json_reply(plan.final())
        return self._stream(plan, plan.events)

    def _get(self, plan: Plan, rec: Recorded) -> Reply:
        if rec.query.get("stream") == ["true"]:
            after = int((rec.query.get("starting_after") or ["-1"])[0])
            rest = [ev for ev in plan.events if int(ev.get("sequence_number", -1)) > after]
            return self._stream(plan, rest)
        if plan.polls > 0:
            plan.polls -= 1
            running = response_obj([], resp_id=plan.response_id, status="in_progress")
            headers = {"retry-after-ms": str(plan.retry_after_ms)}
            return json_reply({**running, "background": True}, headers=headers)
        return json_reply(plan.final())

    def _stream(self, plan: Plan, events: list[dict[str, Any]]) -> Reply:
        if plan.streams == 0 and plan.stall_after is not None:
            plan.streams += 1
            return sse_reply(events, stall_after=plan.stall_after, delay=plan.delay)
        cut = plan.next_cut()
        return sse_reply(events, cut_after=cut, delay=plan.delay)


def stream_payload(rec: Recorded) -> dict[str, Any]:
    """The JSON body of a recorded request (empty for a GET)."""
    return json.loads(rec.body) if rec.body else {}
