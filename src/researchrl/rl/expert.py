"""A scripted expert for the warm-up that follows the question's structure, as a multi-hop researcher would.

- Bridge questions: search the question, read the best hit, then search again for the entity that page named
  (the bridge, which the question never mentions), read what that search found, answer.
- Comparison questions (two named entities, "both", "same", "or", "older", ...): search the first entity, read
  its top hit, search the second, read its top hit, answer.
The expert knows the gold answer: before it searches a bridge, it looks ahead with the episode's own tools (each
candidate entity of what it read, searched and its top hits read) and picks the first candidate that leads to
the gold. Only demonstrations whose answer rests on what the expert saw are kept (`grounded`), so the warm-up
teaches the policy to copy answers out of observations, not to recall them.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, field

from researchrl.agent.loop import AgentConfig, clip, run_episode
from researchrl.environment import RunningEnvironment
from researchrl.eval.behaviour import contains, entity_spans
from researchrl.policy.base import ChatTokenizer, Context
from researchrl.policy.scripted import ScriptedPolicy, last_observation
from researchrl.records import sources
from researchrl.reward.answer import normalize
from researchrl.tools.base import EpisodeState, Toolset
from researchrl.types import Question, ToolCall, Trajectory

_URL = re.compile(r"'url': '([^']+)'")
_COMPARISON = re.compile(r"\b(both|same|or|older|younger|earlier|later|first|larger|smaller|longer|shorter|more|"
                         r"fewer|higher|lower|bigger|taller)\b", re.IGNORECASE)
_QUESTION_WORDS = {"are", "is", "was", "were", "do", "does", "did", "which", "who", "whom", "whose", "what", "when",
                   "where", "why", "how", "in", "on", "at", "of", "for", "from", "by", "the", "a", "an"}
MAX_CANDIDATES = 8  # bridge entities the expert looks ahead on, in order of appearance
YES_NO = ("yes", "no")


def tool_turn(thought: str, name: str, key: str, values: list[str]) -> str:
    """A tool-calling turn as the policy writes it after the forced '<think>'."""
    call = json.dumps({"name": name, "arguments": {key: values}})
    return f"\n{thought}\n</think>\n<tool_call>\n{call}\n</tool_call>"


def answer_turn(thought: str, answer: str) -> str:
    """An answering turn as the policy writes it after the forced '<think>'."""
    return f"\n{thought}\n</think>\n<answer>{answer}</answer>"


def first_urls(observation: str) -> list[str]:
    """URLs of a web_search observation, in rank order (a regex: observations may be cut short)."""
    return _URL.findall(observation)


def question_entities(question: str) -> list[str]:
    """Named entities of a question as written (names, not numbers), its leading question word set aside."""
    first, _, rest = question.partition(" ")
    spans = entity_spans(rest if first.lower() in _QUESTION_WORDS else question)
    return [re.sub(r"['’]s$", "", s) for s in spans if not s.isdigit()]


def is_comparison(question: str) -> bool:
    """Two named entities and a comparing word: the question is answered by looking both up."""
    return len(question_entities(question)) >= 2 and bool(_COMPARISON.search(question))


@dataclass
class Expert:
    """One episode's expert: `__call__(context)` is the next turn's text (a ScriptedPolicy script)."""

    question: Question
    tools: Toolset
    agent: AgentConfig  # its turn and observation limits: the expert plans within them
    seed: int = 0
    pending: list[str] = field(default_factory=list)  # URLs the next browse reads (chosen by the last search)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def gold(self) -> str:
        """The answer the expert gives."""
        return self.question.answers[0]

    async def __call__(self, context: Context) -> str:
        """Search, read, search the bridge (or both entities), read, answer: whichever the question needs next."""
        turn = sum(m.role == "assistant" for m in context.messages)
        observed = "\n".join(m.content for m in context.messages if m.content.startswith("<tool_response>"))
        seen = normalize(observed)
        last = last_observation(context)
        called = next((m.content for m in reversed(context.messages) if m.role == "assistant"), "")
        entities = question_entities(self.question.question)
        comparison = is_comparison(self.question.question)
        reads = sum('"browse_webpage"' in m.content for m in context.messages if m.role == "assistant")
        if turn == 0 and comparison:
            a, b = entities[:2]
            return tool_turn(f"I need to compare {a} and {b}. First I will look up {a}, then {b}.", "web_search", "query", [a])
        if turn == 0:
            return tool_turn(self.rng.choice((
                "First I need to find what the question refers to, then follow up on what I learn. Let me search.",
                "I should search first, then read the best page and search again if it points elsewhere.",
            )), "web_search", "query", [self.question.question])
        read = '"browse_webpage"' in called
        done = reads >= 2 if comparison else contains(seen, normalize(self.gold))
        if turn >= self.agent.max_turns - 1 or (read and done):
            return answer_turn(self._answer_thought(read, comparison), self.gold)
        if not read:  # the last turn searched: read what it chose, else its top hit
            urls = self.pending or first_urls(last)[:1]
            self.pending = []
            if urls:
                return tool_turn("Let me read the most relevant page.", "browse_webpage", "url_list", urls)
            return answer_turn("The search found nothing to read.", self.gold)
        if comparison:
            b = entities[1]
            return tool_turn(f"Now let me look up {b} to compare.", "web_search", "query", [b])
        bridge = await self._bridge(last + observed, browse=turn + 2 < self.agent.max_turns)
        if bridge is None:
            return answer_turn("I could not find more to search for.", self.gold)
        entity, url = bridge
        self.pending = [url] if url else []
        return tool_turn(f"The page mentions {entity}. Now I need to find out more about {entity}. Let me search for it.",
                         "web_search", "query", [entity])

    def _answer_thought(self, read: bool, comparison: bool) -> str:
        """Why the expert answers now."""
        if comparison:
            return "I have looked up both, so I can compare them."
        return self.rng.choice(("The page answers the question.", "I found the answer.")) if read else "I will answer."

    async def _bridge(self, observed: str, browse: bool) -> tuple[str, str] | None:
        """The first entity of `observed` (the last read first, then everything seen) absent from the question whose
        search leads to the gold: in a page it found (`browse`: turns are left to read it), else in its results."""
        question = normalize(self.question.question)
        candidates = [e for e in entity_spans(observed.replace("\\n", " "))
                      if not contains(question, normalize(e))][:MAX_CANDIDATES]
        gold = normalize(self.gold)
        for entity in candidates:
            state = EpisodeState(self.question.question)
            found = await self._call("web_search", "query", entity, state)
            urls = first_urls(found)[:2] if browse else []
            for url in urls:
                if contains(normalize(await self._call("browse_webpage", "url_list", url, state)), gold):
                    return entity, url
            if contains(normalize(found), gold):  # in a snippet: read its top hit if turns are left
                return entity, urls[0] if urls else ""
        return None

    async def _call(self, name: str, key: str, value: str, state: EpisodeState) -> str:
        """A look-ahead tool call, its observation cut as the episode would cut it."""
        return clip(await self.tools.call(ToolCall(name, {key: [value]}), state), self.agent.max_observation_chars).text


def grounded(trajectory: Trajectory) -> bool:
    """A correct answer that rests on what the tools returned: the gold appears in the observations, or for a
    yes/no gold, two or more pages were read."""
    if not trajectory.reward or trajectory.reward.reward != 1.0:
        return False
    gold = normalize(trajectory.question.answers[0])
    if gold in YES_NO:
        return len(sources(trajectory)) >= 2
    seen = normalize(" ".join(t.observation.text for t in trajectory.turns if t.observation))
    return contains(seen, gold)


def demonstrations(
    questions: list[Question], tokenizer: ChatTokenizer, env: RunningEnvironment, agent: AgentConfig, keep: int
) -> list[Trajectory]:
    """Run the expert on every question (concurrently, one policy per episode) and keep the grounded ones."""
    async def run_all() -> list[Trajectory]:
        return await asyncio.gather(*(
            run_episode(q, ScriptedPolicy(Expert(q, env.tools, agent, seed=i), tokenizer), env.tools, agent)
            for i, q in enumerate(questions)
        ))

    return [t for t in env.loop.run(run_all()) if grounded(t)][:keep]
