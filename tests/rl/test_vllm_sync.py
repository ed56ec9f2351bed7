"""use_vllm settings that cannot sync exactly are refused in one line before any work (fast: loopback servers, no vLLM)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from researchrl.config import merge
from researchrl.errors import ConfigError
from researchrl.rl.config import load_config
from researchrl.rl.vllm_sync import check_vllm
from tests.loopback import serve_app
from tests.policy.server_fixtures import captured, without_ids


def server(rpc_status: int, completion: dict | None = None) -> Starlette:
    """A vLLM-shaped server: healthy, /collective_rpc answering `rpc_status` (404 without dev mode, 500 without our
    extension), and /v1/completions answering `completion` (default: the captured vLLM reply, sampled ids included)."""
    calls = []

    async def health(_request):  # noqa: ANN001, ANN202
        return PlainTextResponse("")

    async def rpc(request):  # noqa: ANN001, ANN202
        calls.append((await request.json())["method"])
        return JSONResponse({"results": [True]} if rpc_status == 200 else {"error": "no such method"}, status_code=rpc_status)

    async def models(_request):  # noqa: ANN001, ANN202
        return JSONResponse({"object": "list", "data": [{"id": "served", "object": "model"}]})

    async def completions(request):  # noqa: ANN001, ANN202
        calls.append("completions:" + (await request.json())["model"])
        return JSONResponse(completion or captured("vllm", "completions_ids_logprobs")["body"])

    app = Starlette(routes=[Route("/health", health), Route("/collective_rpc", rpc, methods=["POST"]),
                            Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"])])
    app.state.calls = calls
    return app


def external(url: str):  # noqa: ANN201
    return merge(load_config("cpu"), {"use_vllm": True, "vllm": "external", "vllm_server_base_url": url})


@pytest.mark.parametrize(("status", "why"), [(404, "answered 404"), (500, "answered 500")])
def test_an_external_server_without_dev_mode_or_our_extension_is_refused(status: int, why: str) -> None:
    app = server(status)
    with serve_app(app) as url:
        with pytest.raises(ConfigError) as err:
            check_vllm(external(url))
    message = str(err.value)
    assert why in message and "VLLM_SERVER_DEV_MODE=1" in message and "researchrl_vllm_ext.ExactReload" in message
    assert app.state.calls == ["completions:served", "researchrl_ready"]


def test_an_external_server_with_our_extension_passes() -> None:
    app = server(200)
    with serve_app(app) as url:
        check_vllm(external(url + "/"))
    assert app.state.calls == ["completions:served", "researchrl_ready"]


@pytest.mark.parametrize("shape", ["legacy", "chat"])
def test_a_server_that_returns_no_sampled_ids_is_refused_for_training_in_one_line(shape: str) -> None:
    app = server(200, without_ids(shape))
    with serve_app(app) as url:
        with pytest.raises(ConfigError) as err:
            check_vllm(external(url))
    message = str(err.value)
    assert "returns no sampled token ids" in message and "training needs the ids it sampled" in message
    assert "\n" not in message and app.state.calls == ["completions:served"]  # refused before any weight sync


def test_train_against_a_server_without_ids_exits_with_one_line(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from researchrl.cli import app as cli

    fake = server(200, without_ids("legacy"))
    with serve_app(fake) as url:
        result = CliRunner().invoke(cli, ["train", "--output-dir", str(tmp_path / "runs"), "--set", "use_vllm=true",
                                          "--set", "vllm=external", "--set", f"vllm_server_base_url={url}"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "returns no sampled token ids" in errors[0], result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("runs/*/config.toml"))  # refused before the run


def test_an_unreachable_server_and_a_missing_url_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="does not answer /health"):
        check_vllm(external("http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match="vllm = external needs vllm_server_base_url"):
        merge(load_config("cpu"), {"use_vllm": True, "vllm": "external"})


def test_a_managed_server_needs_a_vllm_executable(tmp_path) -> None:  # noqa: ANN001
    cfg = merge(load_config("cpu"), {"use_vllm": True, "vllm_bin": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="is not an executable file; build vLLM's CPU engine with `bash scripts/vllm.sh`"):
        check_vllm(cfg)
    check_vllm(merge(load_config("cpu"), {"use_vllm": False, "vllm_bin": str(tmp_path / "nope")}))  # not used: no check
