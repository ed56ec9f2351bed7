"""What a tool is: a name, an OpenAI function schema, and an async call that turns every environment fault into an Observation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from researchrl.types import Observation, SearchResult, ToolCall


@dataclass
class EpisodeState:
    """Per-episode tool state, owned by the agent loop (tools stay stateless and shareable)."""

    question: str
    searches: list[tuple[str, list[SearchResult]]] = field(default_factory=list)
    memory: dict[str, list[str]] = field(default_factory=dict)
    read_pos: dict[str, int] = field(default_factory=dict)

    def sub_query_for(self, url: str) -> str:
        """The most recent search query under which `url` appeared; the question if it never did."""
        for query, hits in reversed(self.searches):
            if any(hit.url == url for hit in hits):
                return query
        return self.question


class Tool(Protocol):
    """A tool the policy can call; `__call__` never raises for environment faults."""

    name: str
    schema: dict[str, Any]

    async def __call__(self, arguments: dict[str, list[str]], state: EpisodeState) -> Observation:
        """Run the tool on already-validated arguments."""
        ...


class Toolset:
    """The tools of one environment, shared by every concurrent episode; `ledger` counts what their upstream calls cost."""

    def __init__(self, tools: list[Tool], ledger: Any = None):
        self.tools = {tool.name: tool for tool in tools}
        self.ledger = ledger

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function schemas in registration order, for the system prompt."""
        return [tool.schema for tool in self.tools.values()]

    async def call(self, call: ToolCall, state: EpisodeState) -> Observation:
        """Dispatch a parsed call; an unknown tool is the policy's mistake and becomes an observation."""
        tool = self.tools.get(call.name)
        if tool is None:
            return Observation(call.name, f"Error: unknown tool {call.name!r}.", ("unknown_tool",))
        return await tool(call.arguments, state)


def check_tool(tool: Tool) -> None:
    """Conformance check every tool passes in CI: a well-formed OpenAI function schema named like the tool."""
    schema = tool.schema
    if schema.get("type") != "function":
        raise ValueError(f"{tool.name}: schema type must be 'function'")
    fn = schema.get("function", {})
    if fn.get("name") != tool.name:
        raise ValueError(f"{tool.name}: schema name {fn.get('name')!r} differs from tool name")
    if not fn.get("description"):
        raise ValueError(f"{tool.name}: schema needs a description")
    params = fn.get("parameters", {})
    if params.get("type") != "object" or not isinstance(params.get("properties"), dict):
        raise ValueError(f"{tool.name}: parameters must be an object schema with properties")
    for required in params.get("required", []):
        if required not in params["properties"]:
            raise ValueError(f"{tool.name}: required {required!r} is not a property")
