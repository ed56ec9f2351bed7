"""Turn protocols: how a question is posed, how a policy turn is parsed, how an observation is framed."""

from __future__ import annotations

from typing import Protocol

from researchrl.agent.frame import ChatFrame
from researchrl.errors import ConfigError
from researchrl.policy.base import Message
from researchrl.types import Action, Observation


class TurnProtocol(Protocol):
    """One protocol; `parse` must return a typed Action for any text and never raise."""

    name: str
    prefill: str
    stop: tuple[str, ...]
    uses_tool_schemas: bool
    tool_names: tuple[str, ...]

    def messages(self, question: str, context: str = "") -> list[Message]:
        """The opening conversation for `question`; `context` holds retrieved documents (RAG baseline only)."""
        ...

    def parse(self, text: str) -> Action:
        """The action in one policy turn (`text` includes the forced prefill)."""
        ...

    def observation_pieces(self, frame: ChatFrame, obs: Observation, ended_with_eos: bool) -> list[tuple[str, bool]]:
        """Text to append after a tool-calling turn, as (text, trusted) pieces; untrusted text never becomes special tokens."""
        ...

    def observation_message(self, obs: Observation) -> Message:
        """The same observation as a chat message, for chat-only endpoints."""
        ...


PROTOCOLS = ("deepresearcher", "search_r1", "no_browse", "cot", "rag")


def get_protocol(name: str) -> TurnProtocol:
    """The protocol a config names: the agent ('deepresearcher'), 'search_r1', or a baseline ('no_browse', 'cot', 'rag')."""
    from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
    from researchrl.agent.protocols.direct import DirectProtocol
    from researchrl.agent.protocols.search_r1 import SearchR1Protocol

    if name == "deepresearcher":
        return DeepResearcherProtocol()
    if name == "no_browse":
        return DeepResearcherProtocol(name="no_browse", tool_names=("web_search",))
    if name == "search_r1":
        return SearchR1Protocol()
    if name in ("cot", "rag"):
        return DirectProtocol(retrieval=name == "rag", name=name)
    raise ConfigError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
