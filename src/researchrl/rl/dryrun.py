"""`researchrl train --dry-run`: what one GRPO step would take (parameters, tokens, memory, tool calls, USD, time).

Nothing is run: no weights are loaded (the model is built on the meta device from its config.json), no
web call is made and no run directory is created. Numbers marked ≤ are upper bounds: every turn used,
every token and observation budget filled. Token counts are estimates at CHARS_PER_TOKEN characters a token.

Memory per process, for P parameters on N processes at ZeRO stage z (the ZeRO paper's mixed-precision
accounting, Rajbhandari et al. 2020), with b = 2 bytes when training in bf16/fp16 and 4 in fp32:

    weights      b·P    ÷N at z = 3; 0 with parameters offloaded
    gradients    b·P    ÷N at z ≥ 2
    optimizer    12·P   AdamW's m and v plus an fp32 master copy (8·P in fp32); ÷N at z ≥ 1; 0 when offloaded
    reference    b·P    the frozen KL reference TRL keeps when beta > 0; ÷N at z = 3 (as the weights)
    activations  b·m·T·h·(L + 17) with gradient checkpointing, b·m·T·h·17·L without
    logits       b·m·T·V

for m = micro_batch sequences of T tokens (the per-episode bound) through L layers of hidden size h and a
vocabulary of V. 17·h values per token and layer is Korthikanti et al. 2022's 34·s·b·h bytes (16-bit, flash
attention: no s² term); checkpointing keeps each layer's input (L·h) and recomputes one layer at a time.
Plain torch AdamW on bf16 weights keeps 4·P, not 12·P, of optimizer state: there the estimate is high.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from researchrl.errors import ConfigError, UserError
from researchrl.rl.config import TrainConfig

CHARS_PER_TOKEN = 4  # English text in a BPE vocabulary, roughly: every token count here is an estimate
PAPER_ACCELERATE = Path(__file__).resolve().parents[3] / "configs" / "accelerate_zero3_8gpu.yaml"  # the repo's
# assumed latencies in seconds (not measured): a search API, a page fetch and an LLM reader call over the internet;
# LOCAL for the loopback sandbox, in-process BM25 and the extractive reader
REMOTE_SECONDS = {"search": 1.0, "page": 1.0, "read": 3.0}
LOCAL_SECONDS = 0.01
GIB = 1024**3


@dataclass(frozen=True)
class Model:
    """The policy's size and shape, from its config.json alone."""

    name: str
    source: str  # where the config came from
    params: int
    hidden: int
    layers: int
    vocab: int


@dataclass(frozen=True)
class Launch:
    """How training processes share the work: read from an accelerate config file, or one plain process."""

    source: str
    processes: int
    zero_stage: int  # 0 when not DeepSpeed
    mixed_precision: str  # no | fp16 | bf16 | fp8
    offload_optimizer: bool = False
    offload_params: bool = False


@dataclass(frozen=True)
class Tokens:
    """Tokens of one episode and one step; all but `prompt` are upper bounds."""

    prompt: int  # ≈ system prompt, tool schemas and the longest training question
    policy_turns: int  # per episode
    tool_calls: int  # per episode: every turn but the last
    per_turn: int  # max_new_tokens
    observation: int  # ≈ max_observation_chars
    sampled: int  # policy tokens per episode (the loss is on these)
    episode: int  # prompt + sampled + observations, within the context cap
    capped: bool  # whether max_context_tokens (plus the one observation that may follow it) is what binds
    episodes: int  # group_size × questions_per_step

    @property
    def per_step(self) -> int:
        """Tokens the trainer runs forward and backward in one step."""
        return self.episodes * self.episode


@dataclass(frozen=True)
class Memory:
    """Bytes per process by what holds them (formula in the module docstring)."""

    weights: float
    gradients: float
    optimizer: float
    reference: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        """Everything above."""
        return sum(dataclasses.astuple(self))


@dataclass(frozen=True)
class Tools:
    """Upstream calls and USD of one step at the ledger's prices, and tool time on the slowest episode."""

    provider: str
    reader: str  # the LLM reader as the ledger prices it ("reader:<model>"); "" for the extractive reader
    search_usd: float  # per search request
    page_usd: float  # per page fetch
    read_usd: float  # per reader call
    calls: int  # ≤ tool calls per step
    searches_per_call: int  # ≤ search requests per web_search call
    reads_per_call: int  # ≤ reader calls per browse_webpage call (0 without browsing)
    usd: float  # ≤ USD per step: every call the dearer of a full search and a full browse
    seconds: tuple[float, float]  # tool time per step: every turn a search .. every turn a full browse
    latency: dict[str, float]  # the assumed seconds per search, page and read


@dataclass(frozen=True)
class Measured:
    """Means over the steps a run has logged in its metrics.jsonl."""

    steps: int
    step_seconds: float
    rollout_seconds: float
    usd: float
    tool_calls_per_episode: float


@dataclass(frozen=True)
class DryRun:
    """Everything `--dry-run` prints."""

    preset: str
    model: Model
    tokens: Tokens
    launch: Launch
    memory: Memory
    tools: Tools
    max_steps: int
    measured: Measured | None
    batch: str  # "" when the step's rollouts split evenly over micro-batches of every process, else what to change


def batch_fit(cfg: TrainConfig, processes: int) -> str:
    """Why GRPO would refuse this batch on `processes` processes (grpo_args), with the nearest questions_per_step that fits."""
    per_pass = cfg.micro_batch * processes
    if cfg.group_size * cfg.questions_per_step % per_pass == 0:
        return ""
    fits = [q for q in range(cfg.questions_per_step, 0, -1) if cfg.group_size * q % per_pass == 0]
    hint = f"; e.g. --set questions_per_step={fits[0]}" if fits else ""
    return (f"group_size × questions_per_step = {cfg.group_size * cfg.questions_per_step:,} rollouts do not split into "
            f"micro_batch {cfg.micro_batch} × {processes} processes: training would refuse to start{hint}")


def dry_run(cfg: TrainConfig, accelerate_config: Path | None = None, run_dir: Path | None = None) -> DryRun:
    """The estimate for `cfg`; the memory under `accelerate_config` (paper default: the repo's ZeRO-3 file)."""
    if accelerate_config is None and cfg.preset == "paper":
        accelerate_config = PAPER_ACCELERATE
    launch = read_launch(accelerate_config) if accelerate_config else Launch("one process", 1, 0, "bf16" if cfg.bf16 else "no")
    model = read_model(cfg.model)
    tokens = count_tokens(cfg)
    half = cfg.bf16 or launch.mixed_precision != "no"
    memory = estimate_memory(model, launch, half=half, reference=cfg.beta > 0, micro_batch=cfg.micro_batch,
                             seq_tokens=tokens.episode, checkpointing=cfg.gradient_checkpointing)
    measured = read_measured(run_dir / "metrics.jsonl") if run_dir is not None else None
    return DryRun(cfg.preset, model, tokens, launch, memory, price_tools(cfg, tokens), cfg.max_steps, measured,
                  batch_fit(cfg, launch.processes))


def read_model(name: str) -> Model:
    """Parameter count and shape of `name`, built on the meta device from its config (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config, source = model_config(name)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # under init_empty_weights from_config leaves tied embeddings apart: they would count twice
    text = config.get_text_config()
    return Model(name, source, sum(p.numel() for p in model.parameters()), text.hidden_size, text.num_hidden_layers,
                 text.vocab_size)


def model_config(name: str) -> tuple[Any, str]:
    """The transformers config of `name` and where it came from: a directory, the HF cache, or one shipped here."""
    from transformers import AutoConfig

    from researchrl.policy.embedded import EMBEDDED_NAMES, check_model, gguf_path

    if name in EMBEDDED_NAMES:  # the GGUF's metadata: converting it to a checkpoint would read the weights
        gguf = gguf_path()
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), f"{gguf.name} metadata"
    path = check_model(name)
    if Path(path).is_dir():
        try:
            return AutoConfig.from_pretrained(path), f"{path}/config.json"
        except (OSError, ValueError) as err:  # no or a broken config.json
            raise UserError(f"cannot read the config of model {name!r}: {str(err).splitlines()[0]}") from None
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True), "the Hugging Face cache"
    except (OSError, ValueError):
        pass  # not downloaded: use the copy of its public config.json shipped here, if there is one
    shipped = resources.files("researchrl") / "configs" / "models" / f"{name.replace('/', '--')}.json"
    if not shipped.is_file():
        raise UserError(
            f"cannot read the config of model {name!r}: not a directory, not in the Hugging Face cache, "
            "and researchrl ships no copy of it (researchrl/configs/models/); download it or pass a model directory"
        )
    data = json.loads(shipped.read_text())
    return AutoConfig.for_model(data.pop("model_type"), **data), "its public config.json, shipped with researchrl"


def read_launch(path: Path) -> Launch:
    """Processes, ZeRO stage, precision and offload of an accelerate config file, read by accelerate itself."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    try:
        cluster = load_config_from_file(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not a usable accelerate config ({err}); pass --accelerate-config FILE") from None
    if not isinstance(cluster, ClusterConfig) or cluster.distributed_type == DistributedType.FSDP:
        raise ConfigError(f"{path}: --dry-run estimates DeepSpeed and data-parallel configs, not {cluster.distributed_type}")
    if cluster.num_processes < 1:
        raise ConfigError(f"{path}: num_processes is {cluster.num_processes}; the estimate needs a number of processes")
    launch = Launch(str(path), cluster.num_processes, 0, cluster.mixed_precision or "no")
    if cluster.distributed_type != DistributedType.DEEPSPEED:
        return launch
    plugin = deepspeed_plugin(cluster.deepspeed_config)
    return dataclasses.replace(launch, zero_stage=int(plugin.zero_stage),
                               offload_optimizer=plugin.offload_optimizer_device not in (None, "none"),
                               offload_params=plugin.offload_param_device not in (None, "none"))


def deepspeed_plugin(settings: dict[str, Any]) -> Any:  # noqa: ANN401 - accelerate's DeepSpeedPlugin
    """accelerate's DeepSpeedPlugin from a config file's `deepspeed_config` section (launcher-only keys left out)."""
    from accelerate.utils import DeepSpeedPlugin

    fields = {f.name for f in dataclasses.fields(DeepSpeedPlugin)}
    kwargs = {key: value for key, value in settings.items() if key in fields}
    if "deepspeed_config_file" in settings:
        kwargs["hf_ds_config"] = settings["deepspeed_config_file"]
    return DeepSpeedPlugin(**kwargs)


def count_tokens(cfg: TrainConfig) -> Tokens:
    """Token bounds from the agent's budgets; the prompt from the protocol's real opening messages."""
    from researchrl.agent.protocols import get_protocol
    from researchrl.agent.render import opening_messages
    from researchrl.data.load import load_questions
    from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA

    agent = cfg.agent
    protocol = get_protocol(agent.protocol)
    schemas = [s for n, s in (("web_search", WEB_SEARCH_SCHEMA), ("browse_webpage", BROWSE_WEBPAGE_SCHEMA))
               if n in protocol.tool_names]
    longest = max((q.question for q in load_questions(cfg.questions)), key=len, default="")
    prompt_chars = sum(len(m.content) for m in opening_messages(protocol, longest, schemas)) + len(protocol.prefill)
    prompt = math.ceil(prompt_chars / CHARS_PER_TOKEN)
    turns = agent.max_turns + (agent.on_budget == "force_answer")  # the loop in agent/loop.py
    observation = math.ceil(agent.max_observation_chars / CHARS_PER_TOKEN)
    sampled = min(turns * agent.sampling.max_new_tokens, max(0, agent.max_context_tokens - prompt))
    uncapped = prompt + sampled + (turns - 1) * observation
    cap = agent.max_context_tokens + observation  # a turn stops at the context budget; one observation may follow
    return Tokens(prompt, turns, turns - 1, agent.sampling.max_new_tokens, observation, sampled, min(uncapped, cap),
                  uncapped > cap, cfg.group_size * cfg.questions_per_step)


def estimate_memory(model: Model, launch: Launch, *, half: bool, reference: bool, micro_batch: int, seq_tokens: int,
                    checkpointing: bool) -> Memory:
    """Bytes per process by the module docstring's formula."""
    b, n, z, p = (2 if half else 4), launch.processes, launch.zero_stage, model.params
    weights = 0.0 if launch.offload_params else b * p / (n if z >= 3 else 1)
    optimizer = 0.0 if launch.offload_optimizer else (12 if half else 8) * p / (n if z >= 1 else 1)
    per_token = b * micro_batch * seq_tokens * model.hidden
    activations = per_token * ((model.layers + 17) if checkpointing else 17 * model.layers)
    return Memory(weights, b * p / (n if z >= 2 else 1), optimizer, weights if reference else 0.0, activations,
                  b * micro_batch * seq_tokens * model.vocab)


def price_tools(cfg: TrainConfig, tokens: Tokens) -> Tools:
    """Calls per step priced by the ledger's own table (with the config's price overrides)."""
    from researchrl.agent.protocols import get_protocol
    from researchrl.tools.browse import BrowseTool
    from researchrl.tools.web_search import WebSearchTool
    from researchrl.web.kinds import PAGE, READ, SEARCH
    from researchrl.web.ledger import Prices

    env = cfg.env
    prices = Prices(dict(env.prices))
    llm_reader = env.reader == "llm"
    search_usd = prices.of(SEARCH.name, env.search)
    page_usd = prices.of(PAGE.name, PAGE.provider)
    reader = f"reader:{env.reader_name}" if llm_reader else ""  # as open_environment names it
    read_usd = prices.of(READ.name, reader) if llm_reader else 0.0
    browsing = "browse_webpage" in get_protocol(cfg.agent.protocol).tool_names
    urls = inspect.signature(BrowseTool).parameters["max_urls"].default if browsing else 0
    searches, reads = WebSearchTool.max_queries, urls * env.max_segments_per_url
    calls = tokens.episodes * tokens.tool_calls
    usd = calls * max(searches * search_usd, urls * page_usd + reads * read_usd)
    web = env.search not in ("sandbox", "local")  # the real web, else pages from the sandbox or the corpus
    remote = {"search": web, "page": web, "read": llm_reader and not env.sandbox_reader}
    latency = {kind: REMOTE_SECONDS[kind] if far else LOCAL_SECONDS for kind, far in remote.items()}
    browse_seconds = latency["page"] + reads * latency["read"] if browsing else 0.0
    seconds = (tokens.tool_calls * latency["search"], tokens.tool_calls * max(latency["search"], browse_seconds))
    return Tools(env.search, reader, search_usd, page_usd, read_usd, calls, searches, reads, usd, seconds, latency)


def read_measured(metrics: Path) -> Measured | None:
    """Means of a run's logged steps (None before its first step)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if not rows:
        return None

    def mean(key: str) -> float:
        return sum(float(r.get(key, 0.0)) for r in rows) / len(rows)

    calls = mean("tools/web_search_per_episode") + mean("tools/browse_webpage_per_episode")
    return Measured(len(rows), mean("seconds/step"), mean("seconds/rollout"), mean("web/cost_usd"), calls)


def render(dry: DryRun) -> str:
    """The report as plain text lines (the caller escapes it for rich)."""
    m, t, launch, mem, tools = dry.model, dry.tokens, dry.launch, dry.memory, dry.tools
    stage = f"ZeRO-{launch.zero_stage}" if launch.zero_stage else "no sharding"
    offload = [what for what, on in (("optimizer", launch.offload_optimizer), ("parameters", launch.offload_params)) if on]
    unpriced = f"; no list price: --set env.prices.{tools.reader}=USD" if tools.reader and not tools.read_usd else ""
    cap = f"; the context cap binds: {t.episode - t.observation:,} + one observation" if t.capped else ""
    lines = [
        f"dry run of preset {dry.preset}: nothing loaded, no run directory; ≤ marks an upper bound, ≈ an estimate "
        f"({CHARS_PER_TOKEN} characters a token)",
        f"model     {m.name}: {m.params / 1e9:.3f} B parameters ({m.params:,}; from {m.source})",
        f"tokens    per episode ≤ {t.episode:,}: prompt ≈ {t.prompt:,}, ≤ {t.policy_turns} turns × {t.per_turn:,} sampled "
        f"(≤ {t.sampled:,}), ≤ {t.tool_calls} observations × ≈ {t.observation:,}{cap}",
        f"          per step ≤ {t.per_step:,} over {t.episodes:,} episodes; sampled (trained on) ≤ {t.episodes * t.sampled:,}",
        f"memory    ≈ {mem.total / GIB:,.1f} GiB per process: {launch.processes} process(es), {stage}, mixed precision "
        f"{launch.mixed_precision}{', offloaded: ' + ' and '.join(offload) if offload else ''} ({launch.source})",
        "          " + " + ".join(f"{name} {value / GIB:,.2f}" for name, value in dataclasses.asdict(mem).items())
        + " GiB (activations and logits at the longest episode)",
        f"tools     ≤ {tools.calls:,} calls per step ({t.episodes:,} episodes × {t.tool_calls}); "
        f"{tools.provider} ${tools.search_usd:g} a search (≤ {tools.searches_per_call} per call), "
        f"reader ${tools.read_usd:g} a read (≤ {tools.reads_per_call} per browse{unpriced}), pages ${tools.page_usd:g}",
        f"          ≤ ${tools.usd:,.2f} per step, ≤ ${tools.usd * dry.max_steps:,.2f} over {dry.max_steps} steps "
        "(before cache hits)",
        f"time      tool time per step ≈ {tools.seconds[0]:,.1f} s (every turn a search) to ≈ {tools.seconds[1]:,.1f} s "
        f"(every turn a full browse) on the slowest episode; generation and the update not included",
        "          from assumed latencies, not measured: " + ", ".join(f"{k} {v:g} s" for k, v in tools.latency.items()),
    ]
    if dry.batch:
        lines.append(f"batch     {dry.batch}")
    if dry.measured is not None:
        r = dry.measured
        lines.append(f"measured  over {r.steps} logged step(s): {r.step_seconds:,.1f} s a step ({r.rollout_seconds:,.1f} s "
                     f"rollouts: generation and tools), ${r.usd:.4f} a step, {r.tool_calls_per_episode:.2f} tool calls an episode")
    return "\n".join(lines)
