"""`researchrl serve agent`: the whole research agent behind OpenAI's chat-completions API.

A request's last user message is the question; the server runs the full episode (think → web_search →
browse → answer) on one shared policy and one open environment, so the turns of concurrent requests are
generated in the same batches. Streaming sends each turn as it happens: thinking, tool calls and one line
per observation as `reasoning_content`, the answer as `content`, and on every chunk a `researchrl` field
naming the event. Admission is bounded: past the running slots and the queue, 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from researchrl.agent.loop import AgentConfig, Watcher, run_episode
from researchrl.environment import EnvConfig, open_environment
from researchrl.policy.base import Policy
from researchrl.records import trajectory_record
from researchrl.serve.shapes import (
    FINISH,
    ApiError,
    ChatRequest,
    chunk,
    completion,
    observation_event,
    outcome,
    parse_request,
    turn_events,
    usage_chunk,
)
from researchrl.tools.base import Toolset
from researchrl.types import Question, Trajectory, Turn
from researchrl.web.ledger import request_budget
from researchrl.web.redact import redact

log = logging.getLogger("researchrl.serve")


@dataclass(frozen=True)
class ServeConfig:
    """What the server admits, and what one request may use."""

    model_name: str  # what /v1/models lists and every response names
    max_concurrency: int = 32  # episodes running at once (their turns share the policy's batches)
    max_queue: int = 64  # requests waiting for a running slot; past it, 429
    max_seconds: float = 300.0  # one episode's wall time; past it, 504
    request_budget_usd: float | None = None  # paid web calls per request; past it, tools answer with a budget observation
    max_body_bytes: int = 1_000_000  # larger bodies get 413
    token: str | None = None  # the bearer token clients must send (read from an env var by the command)
    log: Path | None = None  # served episodes appended here, one trajectory record per line


class AgentService:
    """One policy and one open environment shared by every request, with bounded admission."""

    def __init__(self, policy: Policy, tools: Toolset, agent: AgentConfig, cfg: ServeConfig):
        self.policy, self.tools, self.agent, self.cfg = policy, tools, agent, cfg
        self.slots = asyncio.Semaphore(cfg.max_concurrency)
        self.admitted = self.running = 0  # admitted: running + waiting
        self.served = self.failed = 0
        self.mean_seconds = 0.0  # of the episodes served, for Retry-After
        self.log: TextIO | None = None
        self.started = int(time.time())

    def admit(self) -> None:
        """Take a place in the queue, or refuse with 429 when it is full (check and take in one step of the loop)."""
        if self.admitted >= self.cfg.max_concurrency + self.cfg.max_queue:
            wait = max(1, math.ceil(self.mean_seconds or 1.0))
            raise ApiError(429, f"the server is at capacity ({self.admitted} requests running or queued); retry in {wait} s",
                           kind="rate_limit_error", code="queue_full", headers={"Retry-After": str(wait)})
        self.admitted += 1

    def release(self) -> None:
        """Give the place back."""
        self.admitted -= 1

    async def episode(self, request: ChatRequest, ident: str, watch: Watcher | None = None) -> tuple[Trajectory, float, float]:
        """Run one request's episode in a running slot: (trajectory, web USD it spent, seconds)."""
        async with self.slots:
            self.running += 1
            started = time.monotonic()
            try:
                with request_budget(self.cfg.request_budget_usd) as spend:
                    episode = run_episode(Question(ident, request.question, ()), self.policy, self.tools, request.agent,
                                          watch=watch)
                    trajectory = await asyncio.wait_for(episode, self.cfg.max_seconds)
            except asyncio.TimeoutError:
                self.failed += 1
                raise ApiError(504, f"the episode ran past the server's {self.cfg.max_seconds:g} s limit",
                               kind="timeout_error", code="episode_timeout") from None
            except Exception:
                self.failed += 1
                raise
            finally:
                self.running -= 1
        seconds = time.monotonic() - started
        self.served += 1
        self.mean_seconds += (seconds - self.mean_seconds) / self.served
        self.record(trajectory, ident)
        return trajectory, spend.spent, seconds

    def record(self, trajectory: Trajectory, ident: str) -> None:
        """Append the episode to --log (the records eval writes), flushed so a killed server loses nothing."""
        if self.cfg.log is None:
            return
        if self.log is None:
            self.cfg.log.parent.mkdir(parents=True, exist_ok=True)
            self.log = self.cfg.log.open("a")
        record = trajectory_record(trajectory, source="serve", sample=0, protocol=self.agent.protocol,
                                   model=self.cfg.model_name, request_id=ident)
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def health(self) -> dict[str, Any]:
        """Liveness and load: requests running and waiting, episodes served, the policy's batch sizes, web spend."""
        batches = getattr(self.policy, "batch_sizes", None)
        metrics = self.tools.ledger.metrics() if self.tools.ledger is not None else {}
        return {
            "status": "ok",
            "model": self.cfg.model_name,
            "admitted": self.admitted,
            "running": self.running,
            "served": self.served,
            "failed": self.failed,
            "policy_batch_sizes": {str(k): v for k, v in sorted(batches.items())} if batches is not None else None,
            "web_cost_usd": metrics.get("web/cost_usd_run", 0.0),
            "web_cache_hit_rate": metrics.get("web/cache_hit_rate", 0.0),
        }

    def close(self) -> None:
        """Close the log."""
        if self.log is not None:
            self.log.close()


ServiceFactory = Callable[[], contextlib.AbstractAsyncContextManager[AgentService]]


def build_app(service_factory: ServiceFactory) -> Starlette:
    """The HTTP app; `service_factory()` is an async context manager yielding the AgentService (opened on startup)."""
    state: dict[str, AgentService] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service_factory() as service:
            state["service"] = service
            try:
                yield
            finally:
                service.close()

    async def chat(request: Request) -> Response:
        service = state["service"]
        try:
            _authorize(request, service.cfg.token)
            body = await _read_json(request, service.cfg.max_body_bytes)
            parsed = parse_request(body, service.agent, service.cfg.model_name)
            ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            if parsed.stream:
                return await _stream(service, parsed, ident)
            service.admit()
            try:
                trajectory, spent, seconds = await service.episode(parsed, ident)
            finally:
                service.release()
            return JSONResponse(completion(ident, service.cfg.model_name, trajectory, spent, seconds))
        except ApiError as err:
            return JSONResponse(err.body, status_code=err.status, headers=err.headers)
        except Exception as err:  # noqa: BLE001 - a dead policy endpoint or a bug: this request fails, the server stays
            failed = server_error(err)
            return JSONResponse(failed.body, status_code=failed.status)

    async def models(request: Request) -> Response:
        service = state["service"]
        try:
            _authorize(request, service.cfg.token)
        except ApiError as err:
            return JSONResponse(err.body, status_code=err.status, headers=err.headers)
        return JSONResponse({"object": "list", "data": [
            {"id": service.cfg.model_name, "object": "model", "created": service.started, "owned_by": "researchrl"}]})

    async def health(request: Request) -> Response:
        return JSONResponse(state["service"].health())

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def server_error(err: Exception) -> ApiError:
    """A failure that is not the client's: logged with its traceback, answered as a 500 naming it (no key in it)."""
    log.error("request failed", exc_info=err)
    return ApiError(500, redact(f"{type(err).__name__}: {err}")[:500], kind="server_error")


def _authorize(request: Request, token: str | None) -> None:
    """With a token configured, the request must carry it as a bearer token (compared in constant time)."""
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer …)", kind="authentication_error",
                       code="invalid_api_key")


async def _read_json(request: Request, limit: int) -> Any:  # noqa: ANN401
    """The body as JSON, refused with 413 past `limit` bytes (before reading it when Content-Length says so)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared):,} bytes; at most {limit:,}", code="body_too_large")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise ApiError(413, f"the body is over {limit:,} bytes", code="body_too_large")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None


async def _stream(service: AgentService, parsed: ChatRequest, ident: str) -> Response:
    """Admit the request (a full queue is a 429 before any byte is sent), start its episode, stream it as SSE."""
    model = service.cfg.model_name
    service.admit()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def watch(turn: Turn) -> None:
        """Chunks for the turn as it is now (it is told twice: sampled, then with its observation)."""
        events = turn_events(turn) if turn.observation is None else [observation_event(turn.observation)]
        for delta, event in events:
            queue.put_nowait(chunk(ident, model, delta, event))

    async def run() -> None:
        try:
            trajectory, spent, seconds = await service.episode(parsed, ident, watch=watch)
            finish = FINISH.get(trajectory.termination, "stop")
            queue.put_nowait(chunk(ident, model, {}, {"event": "done", **outcome(trajectory, spent, seconds)}, finish))
            if parsed.include_usage:
                queue.put_nowait(usage_chunk(ident, model, trajectory))
        except ApiError as err:
            queue.put_nowait(err.body)
        except Exception as err:  # noqa: BLE001 - as in the non-streaming path: the error is the stream's last event
            queue.put_nowait(server_error(err).body)
        finally:
            queue.put_nowait(None)

    # the episode runs whether or not the stream is ever read, and gives its place back when it ends
    task = asyncio.ensure_future(run())
    task.add_done_callback(lambda _: service.release())

    async def events() -> AsyncIterator[str]:
        try:
            yield f"data: {json.dumps(chunk(ident, model, {'role': 'assistant', 'content': ''}))}\n\n"
            while (item := await queue.get()) is not None:
                yield f"data: {json.dumps(item)}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away, or the stream ended: no episode left running
            task.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def service_factory(policy: Policy, env: EnvConfig, agent: AgentConfig, cfg: ServeConfig) -> ServiceFactory:
    """Opens the environment on the server's loop and closes it and the policy on shutdown."""

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[AgentService]:
        try:
            async with open_environment(env, agent.protocol) as tools:
                yield AgentService(policy, tools, agent, cfg)
        finally:
            await policy.aclose()

    return opened
