"""`researchrl serve`: the research agent as an OpenAI-compatible endpoint, and its tools as an MCP server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from researchrl import options
from researchrl.errors import ConfigError, UserError
from researchrl.serve.bind import listen

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)



@app.command("agent")
def agent_command(
    ctx: typer.Context,
    model: str = options.MODEL,
    base_url: Optional[str] = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    tokenizer: Optional[str] = options.TOKENIZER,
    run: Optional[Path] = options.RUN,
    phase: str = options.PHASE,
    config: Optional[Path] = options.CONFIG,
    set_: list[str] = options.SET,
    search: str = options.SEARCH,
    search_url: Optional[str] = options.SEARCH_URL,
    corpus: Optional[Path] = options.CORPUS,
    reader: str = options.READER,
    reader_url: Optional[str] = options.READER_URL,
    reader_model: str = options.READER_MODEL,
    reader_max_tokens: Optional[int] = options.READER_MAX_TOKENS,
    web: str = options.WEB,
    cache: Optional[str] = options.CACHE,
    protocol: str = options.PROTOCOL,
    max_turns: int = typer.Option(10, min=1, help="Turn budget, and the most a request's `max_turns` may ask (paper: 10)."),
    max_new_tokens: int = typer.Option(512, min=1, help="Tokens per policy turn, and the most a request's `max_tokens` may ask."),
    max_context_tokens: Optional[int] = options.MAX_CONTEXT_TOKENS,
    temperature: float = typer.Option(0.0, min=0.0, help="Sampling temperature when a request names none (0 = greedy)."),
    threads: Optional[int] = options.THREADS,
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback only unless you say otherwise)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind (0: a free one, printed at start)."),
    served_name: str = typer.Option("researchrl-agent", help="The model name /v1/models lists and requests must use."),
    max_concurrency: int = typer.Option(32, min=1, help="Episodes running at once; their turns share the policy's batches."),
    max_queue: int = typer.Option(64, min=0, help="Requests waiting for a running slot; past it, 429 with Retry-After."),
    max_seconds: float = typer.Option(300.0, min=1.0, help="Wall-time limit of one episode; past it, the request gets 504."),
    request_budget: Optional[float] = typer.Option(None, min=0.0, help="USD of paid web calls one request may spend; past it, tools answer with a budget observation."),
    token_env: Optional[str] = typer.Option(None, help="Environment variable holding a bearer token every request must send (default: no auth)."),
    log: Optional[Path] = typer.Option(None, help="Append every served episode to this JSONL (eval's trajectory records; researchrl report FILE shows it)."),
) -> None:
    """Serve the research agent as an OpenAI-compatible chat endpoint: POST /v1/chat/completions runs a whole episode."""
    from researchrl.cli import _policy, console
    from researchrl.outputs import check_file
    from researchrl.resolve import EPISODE_FLAGS, resolve_flags
    from researchrl.web.redact import secret_env

    with options.exit_on_known():
        if protocol not in ("deepresearcher", "search_r1"):
            raise ConfigError(f"--protocol must be deepresearcher or search_r1, not {protocol!r}")
        token = secret_env(token_env) if token_env else None
        if token_env and not token:
            raise UserError(f"--token-env {token_env}: that environment variable is empty or unset")
        if log is not None:
            check_file(log, "--log")
        chosen = resolve_flags(ctx, EPISODE_FLAGS, run, phase, config, set_, model)
        listener = listen(host, port)
        from researchrl.serve.agent import ServeConfig, build_app, service_factory

        cfg = ServeConfig(served_name, max_concurrency, max_queue, max_seconds, request_budget, token=token, log=log)
        policy = _policy(chosen.model, base_url, api_key_env, tokenizer, threads, max_batch=max_concurrency)
    bound = listener.getsockname()[1]
    console.print(f"serving the research agent {served_name!r} at http://{host}:{bound}/v1 "
                  f"(model {chosen.model}, search {chosen.env.search}); Ctrl-C stops", soft_wrap=True, highlight=False)
    _serve(build_app(service_factory(policy, chosen.env, chosen.agent, cfg)), listener)


def _serve(app: object, listener: socket.socket) -> None:
    """Run uvicorn on the bound socket until Ctrl-C or SIGTERM; the app's lifespan closes the environment."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10))
    server.run(sockets=[listener])


def _mount() -> None:
    """Mount `serve tools` (the MCP server lives in its own module)."""
    from researchrl.serve.tools import tools_command

    app.command("tools")(tools_command)


_mount()
