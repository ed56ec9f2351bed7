"""The warm-up's expert on the real sandbox tools: it follows the question's structure and keeps grounded demos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.eval.behaviour import behaviour, contains
from researchrl.policy.scripted import ScriptedPolicy
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.records import trajectory_record
from researchrl.reward.answer import normalize
from researchrl.rl.expert import Expert, demonstrations, grounded, is_comparison, question_entities
from researchrl.types import Question, Trajectory

AGENT = AgentConfig(max_turns=5, max_observation_chars=700)


@pytest.fixture(scope="module")
def env() -> Iterator[RunningEnvironment]:
    running = RunningEnvironment(EnvConfig(top_k=3, snippet_chars=160), "deepresearcher")
    yield running
    running.close()


@pytest.fixture(scope="module")
def questions(shared_data: Path) -> dict[str, Question]:
    return {q.question: q for q in load_questions(shared_data / "wiki" / "questions.jsonl")}


def episode(env: RunningEnvironment, question: Question, agent: AgentConfig = AGENT) -> Trajectory:
    policy = ScriptedPolicy(Expert(question, env.tools, agent), ByteChatTokenizer())
    return env.loop.run(run_episode(question, policy, env.tools, agent))


def calls(trajectory: Trajectory) -> list[tuple[str, list[str]]]:
    return [(c.name, next(iter(c.arguments.values()))) for c in trajectory.tool_calls]


def test_question_entities_and_comparisons() -> None:
    assert question_entities("Are Christopher Nolan and Sathish Kalathil both film directors?") == [
        "Christopher Nolan", "Sathish Kalathil"]
    assert is_comparison("Which was released first, Cat Ballou or The Big Sleep?")
    assert not is_comparison("Grace Krilanovich's first novel was published by a house founded in 2005, based where?")
    assert not is_comparison("Who is older?")  # a comparing word but no two names


def test_a_comparison_looks_up_both_entities_and_reads_each(env, questions) -> None:  # noqa: ANN001
    question = questions["Are Christopher Nolan and Sathish Kalathil both film directors?"]
    trajectory = episode(env, question)
    made = calls(trajectory)
    assert [name for name, _ in made] == ["web_search", "browse_webpage", "web_search", "browse_webpage"]
    assert made[0][1] == ["Christopher Nolan"] and made[2][1] == ["Sathish Kalathil"]
    assert "First I will look up Christopher Nolan, then Sathish Kalathil" in trajectory.turns[0].text
    assert trajectory.answer == "yes" and grounded(trajectory), "a yes/no answer rests on both pages read"


def test_a_bridge_question_searches_again_for_an_entity_the_first_page_named(env, questions) -> None:  # noqa: ANN001
    bridges = [q for q in list(questions.values())[:40] if not is_comparison(q.question)]
    found = []
    for question in bridges:
        trajectory = episode(env, question)
        if [name for name, _ in calls(trajectory)] == ["web_search", "browse_webpage", "web_search", "browse_webpage"]:
            found.append(trajectory)
    assert len(found) >= 5, "the expert found second hops on the shared questions"
    for trajectory in found:
        (entity,) = calls(trajectory)[2][1]
        first_read = normalize(trajectory.turns[1].observation.text)
        assert not contains(normalize(trajectory.question.question), normalize(entity))
        assert contains(normalize(" ".join(t.observation.text for t in trajectory.turns[:2])), normalize(entity))
        assert f"The page mentions {entity}" in trajectory.turns[2].text
        assert not contains(first_read, normalize(trajectory.question.answers[0])), "it answers when one hop suffices"
        assert grounded(trajectory) and behaviour(trajectory_record(trajectory)).bridge_queries == 1


def test_with_one_turn_too_few_to_read_the_bridge_it_answers_from_what_the_search_showed(env, questions) -> None:  # noqa: ANN001
    short = AgentConfig(max_turns=4, max_observation_chars=700)
    for question in list(questions.values())[:40]:
        trajectory = episode(env, question, short)
        names = [name for name, _ in calls(trajectory)]
        assert trajectory.termination == "answer" or trajectory.turns[0].finish_reason == "length"
        assert len(trajectory.turns) <= 4 and names == ["web_search", "browse_webpage", "web_search"][: len(names)]


def test_demonstrations_keep_only_grounded_episodes(env, questions) -> None:  # noqa: ANN001
    pool = list(questions.values())[:30]
    demos = demonstrations(pool, ByteChatTokenizer(), env, AGENT, keep=100)
    assert 0 < len(demos) < len(pool) and all(grounded(d) for d in demos)
    assert any(behaviour(trajectory_record(d)).bridge_queries for d in demos)
    assert [d.question.id for d in demonstrations(pool, ByteChatTokenizer(), env, AGENT, keep=3)] == [
        d.question.id for d in demos[:3]]


def test_grounded_needs_the_gold_in_what_the_tools_returned(env, questions) -> None:  # noqa: ANN001
    question = questions["Are Christopher Nolan and Sathish Kalathil both film directors?"]
    trajectory = episode(env, question)
    one_page = Trajectory(**{**trajectory.__dict__, "turns": trajectory.turns[:1]})
    assert grounded(trajectory) and not grounded(one_page), "yes/no: one search and no page read is not grounded"
