"""Rollout workers on Ray: each runs `run_episode` in its own process, with its own policy client and environment.

A worker builds its policy from a picklable zero-argument factory (a ScriptedPolicy, an OpenAIPolicy pointed
at a served model, ...) and opens the environment once (`open_environment`: the sandbox default starts its
own loopback server inside the worker). A batch of questions is split round-robin into one shard per worker;
each shard's episodes run concurrently, and the trajectories come back in input order, equal to a local run.

A shard whose worker dies is re-run on a fresh worker (`retries` times: episodes are seeded, so the re-run
is the same episode); after that, or past the timeout, RolloutWorkerError says which and why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.distributed.cluster import actor_class, connect, kill, require_ray, shutdown_if_ours, stop_actors
from researchrl.environment import EnvConfig, open_environment
from researchrl.policy.base import Policy
from researchrl.tools.base import Toolset
from researchrl.types import Question, Trajectory

PolicyFactory = Callable[[], Policy]


class RolloutWorkerError(RuntimeError):
    """A shard could not be run (`kind`: worker_lost after the retries, worker_timeout)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class RolloutWorker:
    """One worker process: a policy and an open environment, reused across batches (run as a Ray async actor)."""

    def __init__(self, policy_factory: PolicyFactory, env_cfg: EnvConfig, protocol: str):
        self.policy = policy_factory()
        self.env_cfg = env_cfg
        self.protocol = protocol
        self._stack = contextlib.AsyncExitStack()
        self._tools: Toolset | None = None
        self._opening = asyncio.Lock()
        self.episodes = 0

    async def run(
        self, questions: list[Question], agent_cfg: AgentConfig, sample_indices: list[int]
    ) -> list[Trajectory]:
        """Run these episodes concurrently; trajectories in input order."""
        tools = await self._environment()
        self.episodes += len(questions)
        return await asyncio.gather(
            *(run_episode(q, self.policy, tools, agent_cfg, sample_index=i) for q, i in zip(questions, sample_indices))
        )

    async def ready(self) -> bool:
        """Open the environment now, so the first batch does not pay for it."""
        await self._environment()
        return True

    async def episodes_run(self) -> int:
        """Episodes started in this worker so far."""
        return self.episodes

    async def close(self) -> None:
        """Stop the environment (sandbox, clients) and the policy's connections."""
        await self._stack.aclose()
        self._tools = None
        await self.policy.aclose()

    async def _environment(self) -> Toolset:
        """The environment's tools, opened on first use."""
        async with self._opening:
            if self._tools is None:
                self._tools = await self._stack.enter_async_context(open_environment(self.env_cfg, self.protocol))
        return self._tools


class RayRolloutPool:
    """Rollout workers on Ray; `run` spreads a batch of episodes over them and returns trajectories in input order."""

    def __init__(
        self,
        policy_factory: PolicyFactory,
        env_cfg: EnvConfig,
        protocol: str = "deepresearcher",
        workers: int = 2,
        address: str | None = None,
        timeout: float = 3600.0,
        retries: int = 1,
    ):
        if workers < 1:
            raise ValueError("a rollout pool needs at least one worker")
        self.policy_factory = policy_factory
        self.env_cfg = env_cfg
        self.protocol = protocol
        self.size = workers
        self.address = address  # None: a local Ray instance; else the cluster to join
        self.timeout = timeout  # seconds one shard (a worker's share of a batch) may take
        self.retries = retries  # re-runs of a shard whose worker died, each on a fresh worker
        self.replaced = 0
        self.workers: list[Any] = []
        self._ours = False

    async def start(self, timeout: float = 120.0) -> RayRolloutPool:
        """Connect to Ray, start the workers, and wait until each has opened its environment."""
        self._ours = connect(self.address, None)
        self.workers = [self._spawn() for _ in range(self.size)]
        await asyncio.wait_for(asyncio.gather(*(w.ready.remote() for w in self.workers)), timeout)
        return self

    async def run(
        self, questions: list[Question], agent_cfg: AgentConfig, sample_indices: list[int]
    ) -> list[Trajectory]:
        """Every (question, sample index) as one episode on some worker; trajectories in input order."""
        if not self.workers:
            raise RuntimeError("start the pool before running episodes")
        if len(questions) != len(sample_indices):
            raise ValueError("one sample index per question")
        shards = [list(range(w, len(questions), self.size)) for w in range(self.size)]
        results = await asyncio.gather(
            *(self._run_shard(w, [questions[i] for i in s], agent_cfg, [sample_indices[i] for i in s])
              for w, s in enumerate(shards) if s)
        )
        out: list[Trajectory | None] = [None] * len(questions)
        for shard, trajectories in zip((s for s in shards if s), results):
            for i, trajectory in zip(shard, trajectories):
                out[i] = trajectory
        return out  # type: ignore[return-value]  # every index belongs to exactly one shard

    async def episodes_run(self) -> list[int]:
        """Episodes each live worker has started, by slot (a replaced worker counts from zero)."""
        return await asyncio.gather(*(w.episodes_run.remote() for w in self.workers))

    async def aclose(self) -> None:
        """Stop each worker's environment (briefly), kill the actors, and shut Ray down if this pool started it."""
        workers, self.workers = self.workers, []
        await stop_actors(workers, [w.close.remote() for w in workers], timeout=30)
        shutdown_if_ours(self._ours)
        self._ours = False

    async def __aenter__(self) -> RayRolloutPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run_shard(
        self, slot: int, questions: list[Question], agent_cfg: AgentConfig, sample_indices: list[int]
    ) -> list[Trajectory]:
        """One worker's share; a dead worker is replaced and the shard re-run, at most `retries` times."""
        ray = require_ray()
        for _ in range(self.retries + 1):
            worker = self.workers[slot]
            ref = worker.run.remote(questions, agent_cfg, sample_indices)
            try:
                return await asyncio.wait_for(ref, self.timeout)
            except asyncio.TimeoutError:
                ray.cancel(ref)
                raise RolloutWorkerError("worker_timeout", f"rollout worker {slot} passed {self.timeout} s") from None
            except ray.exceptions.RayActorError:
                self._replace(slot, worker)
        raise RolloutWorkerError("worker_lost", f"rollout worker {slot} died {self.retries + 1} times on one shard")

    def _spawn(self) -> Any:  # noqa: ANN401
        """A new worker actor; its policy and environment are built in its own process."""
        return actor_class(RolloutWorker, 1000).remote(self.policy_factory, self.env_cfg, self.protocol)

    def _replace(self, slot: int, dead: Any) -> None:  # noqa: ANN401
        """Swap a dead worker for a fresh one (once, however many shards saw it die)."""
        if self.workers[slot] is not dead:
            return
        kill(dead)
        self.replaced += 1
        self.workers[slot] = self._spawn()
