"""Behaviour rules on hand-written trajectory records: each rule once where it holds and once where it does not."""

from __future__ import annotations

from typing import Any

import pytest

from researchrl.eval.behaviour import Behaviour, behaviour, entities, queries, summarize, units

QUESTION = "Where was the director of Inception born?"


def search(*qs: str, hits: tuple[tuple[str, str, str], ...] = (), think: str = "Let me search.") -> dict[str, Any]:
    """A web_search turn, its observation the tool's repr: a block per query, `hits` (title, url, snippet) in the first."""
    found = [{"title": t, "url": u, "quick_summary": s} for t, u, s in hits]
    blocks = [{"search_query": q, "web_page_info_list": found if n == 0 else []} for n, q in enumerate(qs)]
    return {"text": f"<think>{think}</think><tool_call>...</tool_call>", "observation": repr(blocks),
            "tool_call": {"name": "web_search", "arguments": {"query": list(qs)}}, "observation_errors": []}


def browse(pages: dict[str, str | None]) -> dict[str, Any]:
    """A browse_webpage turn: a URL mapped to what the reader kept from it ("" for nothing), or None for a 404."""
    entries: list[dict[str, Any]] = [
        {"url": u, "information": [{"page_number": 0, "page_summary": info}]} if info else
        {"url": u, "information": [], **({"error": "http_404"} if info is None else {})} for u, info in pages.items()]
    errors = ["http_404" for info in pages.values() if info is None]
    return {"text": "<think>Open it.</think><tool_call>...</tool_call>", "observation": repr(entries),
            "tool_call": {"name": "browse_webpage", "arguments": {"url_list": list(pages)}}, "observation_errors": errors}


def answer(text: str) -> dict[str, Any]:
    return {"text": f"<think>Done.</think><answer>{text}</answer>", "answer": text}


def record(*turns: dict[str, Any], question: str = QUESTION, golds: tuple[str, ...] = ("London",)) -> dict[str, Any]:
    answers = [t["answer"] for t in turns if "answer" in t]
    return {"question": question, "golds": list(golds), "answer": answers[-1] if answers else None, "turns": list(turns)}


NOLAN = ("Inception", "http://w/Inception", "Inception is a 2010 film directed by Christopher Nolan.")
BORN = ("Christopher Nolan", "http://w/Nolan", "Christopher Nolan was born in London in 1970.")


# ---- queries, distinct queries, iterative search ----------------------------------------------------------------

def test_queries_count_strings_and_lists_and_distinct_ones_after_normalisation() -> None:
    turn = search("Inception director?", "inception  director")
    turn2 = {**search("x"), "tool_call": {"name": "web_search", "arguments": {"query": "Nolan birthplace"}}}
    b = behaviour(record(turn, turn2))
    assert (b.queries, b.distinct_queries) == (3, 2)
    assert queries({"query": ["a", 3, " ", "b"]}) == ["a", "b"] and queries({"url_list": ["a"]}) == [] and queries(None) == []


def test_no_search_means_no_queries() -> None:
    b = behaviour(record(browse({"http://w/Inception": "A film."}), answer("London")))
    assert (b.queries, b.distinct_queries, b.searches_after_browse) == (0, 0, 0)


def test_searches_after_the_first_browse_are_iterative() -> None:
    b = behaviour(record(search("Inception director", hits=(NOLAN,)), browse({"http://w/Inception": "Directed by Nolan."}),
                         search("Nolan birthplace"), search("Nolan born")))
    assert b.searches_after_browse == 2 and "iterative" in b.tags()


def test_searches_before_any_browse_are_not_iterative() -> None:
    b = behaviour(record(search("Inception director"), search("Nolan born"), browse({"http://w/Nolan": "Born in London."})))
    assert b.searches_after_browse == 0 and "iterative" not in b.tags()


# ---- bridge queries -----------------------------------------------------------------------------------------------

def test_a_query_with_an_entity_first_seen_in_an_observation_is_a_bridge() -> None:
    b = behaviour(record(search("director of Inception", hits=(NOLAN,)), search("christopher nolan birthplace")))
    assert b.bridge_queries == 1 and "bridge" in b.tags()


def test_a_number_first_seen_in_a_browsed_page_makes_a_bridge() -> None:
    b = behaviour(record(browse({"http://w/Nolan": "He was born in 1970."}), search("films released 1970")))
    assert b.bridge_queries == 1


@pytest.mark.parametrize("turns, question", [
    ((search("director of Inception", hits=(NOLAN,)), search("Christopher Nolan birthplace")), "Where was Christopher Nolan born?"),
    ((search("Christopher Nolan Inception", hits=(NOLAN,)), search("Christopher Nolan birthplace")), QUESTION),
    ((search("Christopher Nolan birthplace"), search("director of Inception", hits=(NOLAN,))), QUESTION),
    ((search("director of Inception", hits=(NOLAN,)), search("inception 2010 film")), QUESTION.replace("Inception", "Inception (2010)")),
], ids=["entity in the question", "entity guessed before it was seen", "entity seen only after", "number in the question"])
def test_entities_from_the_question_earlier_queries_or_later_observations_are_no_bridge(
        turns: tuple[dict[str, Any], ...], question: str) -> None:
    assert behaviour(record(*turns, question=question)).bridge_queries == 0


def test_entities_are_capitalised_runs_of_two_words_or_more_and_long_numbers() -> None:
    found = entities("The Dark Knight was made by Christopher Nolan in 2008. In London he met Emma Thomas; Page 12.")
    assert found == {"dark knight", "christopher nolan", "2008", "emma thomas"}


# ---- sources and cross-checking ---------------------------------------------------------------------------------

def test_sources_are_distinct_pages_that_read_something() -> None:
    b = behaviour(record(browse({"http://w/a": "Nolan was born in London.", "http://w/b": None}),
                         browse({"http://w/a": "More on Nolan.", "http://w/c": "Films."}), answer("London")))
    assert b.sources == 2


def test_pages_that_failed_or_read_nothing_are_no_sources() -> None:
    b = behaviour(record(browse({"http://w/a": None, "http://w/b": ""}), answer("London")))
    assert b.sources == 0


def test_an_answer_found_in_two_sources_is_cross_checked() -> None:
    other = ("Nolan bio", "http://w/bio", "The director grew up in London and Chicago.")
    b = behaviour(record(search("Nolan birthplace", hits=(BORN, other)), answer("London")))
    assert b.cross_checked and b.grounded and "cross_checked" in b.tags()


def test_an_answer_found_twice_on_one_page_is_not_cross_checked() -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(BORN,)), browse({"http://w/Nolan": "Born in London, raised in London."}),
                         answer("London")))
    assert b.grounded and not b.cross_checked


# ---- reflection ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failed", [{"http://w/Nolan": None}, {"http://w/Nolan": ""}], ids=["error", "read nothing"])
def test_a_new_search_right_after_a_failed_browse_is_reflection(failed: dict[str, str | None]) -> None:
    b = behaviour(record(search("Nolan birthplace"), browse(failed), search("Christopher Nolan early life")))
    assert (b.failed_browses, b.reflections) == (1, 1) and "reflection" in b.tags()


@pytest.mark.parametrize("after", [browse({"http://w/Nolan": None}), search("nolan birthplace?"), answer("London")],
                         ids=["browses again", "repeats its query", "answers"])
def test_no_new_search_after_a_failed_browse_is_no_reflection(after: dict[str, Any]) -> None:
    b = behaviour(record(search("Nolan birthplace"), browse({"http://w/Nolan": None}), after))
    assert b.failed_browses >= 1 and b.reflections == 0


def test_a_search_after_a_useful_browse_is_no_reflection() -> None:
    b = behaviour(record(browse({"http://w/Nolan": "Born in London."}), search("London history")))
    assert (b.failed_browses, b.reflections) == (0, 0)


# ---- grounding ----------------------------------------------------------------------------------------------------

def test_an_answer_in_an_observation_is_grounded() -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(BORN,)), answer("london.")))
    assert b.grounded and not b.unsupported


def test_an_answer_that_appears_nowhere_is_unsupported() -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(BORN,)), answer("Paris")))
    assert b.unsupported and not b.grounded and "unsupported" in b.tags()


@pytest.mark.parametrize("turns, question", [
    ((search("Is Nolan older than Villeneuve", hits=(BORN,)), answer("Villeneuve")), "Who is older, Nolan or Villeneuve?"),
    ((search("Was Nolan born in London", hits=(BORN,)), answer("yes")), "Was Nolan born in London?"),
    ((search("Nolan birthplace", hits=(BORN,)), answer("I could not find it")), QUESTION),
], ids=["taken from the question", "yes/no", "an abstention"])
def test_answers_from_the_question_yes_no_and_abstentions_are_not_unsupported(
        turns: tuple[dict[str, Any], ...], question: str) -> None:
    b = behaviour(record(*turns, question=question))
    assert not b.unsupported and not b.grounded


def test_an_answer_only_in_the_echoed_query_is_not_grounded() -> None:
    b = behaviour(record(search("Nolan born in Paris", hits=(NOLAN,)), answer("Paris")))
    assert b.unsupported and not b.grounded


def test_a_truncated_observation_still_splits_into_its_hits() -> None:
    turn = search("Nolan birthplace", hits=(NOLAN, BORN))
    cut = turn["observation"][:-30] + " …[truncated]"
    assert [url for url, _ in units(cut, "whole")] == ["http://w/Inception", "http://w/Nolan"]
    assert "http" not in units(cut, "whole")[1][1] and "search_query" not in units(cut, "whole")[0][1]
    assert units("Doc 1(Title: Nolan) born in London", "whole") == [("whole", "Doc 1(Title: Nolan) born in London")]
    assert behaviour(record({**turn, "observation": cut}, answer("Christopher Nolan"))).grounded


# ---- honesty ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("said", ["I could not find the answer.", "Unknown", "There is not enough information"])
def test_saying_it_could_not_find_the_answer_when_the_gold_was_never_seen_is_honest(said: str) -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(NOLAN,)), answer(said)))
    assert b.gold_unseen and b.honest and not b.confident_wrong and "honest" in b.tags()


def test_giving_up_although_the_gold_was_seen_is_not_honesty() -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(BORN,)), answer("I could not find the answer")))
    assert not b.gold_unseen and not b.honest


def test_a_wrong_answer_without_the_gold_ever_seen_is_confident_wrong() -> None:
    b = behaviour(record(search("Nolan birthplace", hits=(NOLAN,)), answer("Paris")))
    assert b.gold_unseen and b.confident_wrong and "confident_wrong" in b.tags()


@pytest.mark.parametrize("turns, golds", [
    ((search("Nolan birthplace", hits=(BORN,)), answer("Paris")), ("London",)),
    ((search("Nolan birthplace", hits=(NOLAN,)), answer("West London")), ("London",)),
    ((search("Nolan birthplace", hits=(NOLAN,)), answer("Paris")), ()),
], ids=["gold was seen", "partly right", "no gold"])
def test_no_confident_wrong_when_the_gold_was_seen_the_answer_overlaps_or_there_is_no_gold(
        turns: tuple[dict[str, Any], ...], golds: tuple[str, ...]) -> None:
    assert not behaviour(record(*turns, golds=golds)).confident_wrong


# ---- planning -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("think", [
    "First find who directed Inception, then find where he was born.",
    "Who directed Inception? Where was that person born?",
    "Plan:\n1. director of Inception\n2. the director's birthplace",
])
def test_sub_questions_in_the_first_think_before_a_tool_call_are_planning(think: str) -> None:
    assert behaviour(record(search("Inception director", think=think))).planned


@pytest.mark.parametrize("turns", [
    (search("Inception director", think="Let me search."),),
    ({**answer("London"), "text": "<think>First the director, then the birthplace.</think><answer>London</answer>"},),
    (search("Inception director"), search("x", think="First the director? Then where? 1. a\n2. b")),
], ids=["no sub-questions", "answers at once", "plan only in a later turn"])
def test_no_planning_without_sub_questions_before_the_first_tool_call(turns: tuple[dict[str, Any], ...]) -> None:
    assert not behaviour(record(*turns)).planned


# ---- the summary --------------------------------------------------------------------------------------------------

def test_summary_has_stable_names_and_the_documented_denominators() -> None:
    records = [
        record(search("director of Inception", hits=(NOLAN,)), search("Christopher Nolan birthplace", hits=(BORN,)),
               answer("London")),  # bridge, grounded
        record(search("Nolan birthplace", hits=(NOLAN,)), browse({"http://w/x": None}), search("Nolan early life"),
               answer("Paris")),  # failed browse + reflection, unsupported, confident wrong
        record(search("Nolan birthplace", hits=(NOLAN,)), answer("I don't know")),  # honest
        record({"text": "<think>", "format_error": "no <answer> or <tool_call>"}),  # no answer
    ]
    summary = summarize(records)
    assert list(summary) == [f"behaviour/{k}" for k in (
        "queries", "distinct_queries", "searches_after_browse", "iterative_rate", "bridge_queries", "bridge_rate",
        "sources", "cross_checked_rate", "failed_browses", "reflection_rate", "grounded_rate", "unsupported_rate",
        "gold_unseen_rate", "honest_rate", "confident_wrong_rate", "planning_rate")]
    assert summary["behaviour/queries"] == 5 / 4 and summary["behaviour/bridge_rate"] == 1 / 4
    assert summary["behaviour/iterative_rate"] == 1 / 4 and summary["behaviour/reflection_rate"] == 1.0
    assert summary["behaviour/grounded_rate"] == 1 / 3 and summary["behaviour/unsupported_rate"] == 1 / 3  # of 3 answered
    assert summary["behaviour/gold_unseen_rate"] == 2 / 3
    assert summary["behaviour/honest_rate"] == 1 / 2 and summary["behaviour/confident_wrong_rate"] == 1 / 2
    assert summary["behaviour/planning_rate"] == 0.0


def test_summary_of_nothing_is_an_error_and_tags_name_only_what_happened() -> None:
    with pytest.raises(ValueError, match="no trajectory records"):
        summarize([])
    quiet = behaviour(record())
    assert quiet == Behaviour(0, 0, 0, 0, 0, 0, 0, False, False, False, False, False, False, False, False)
    assert quiet.tags() == []
