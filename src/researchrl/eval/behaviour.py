"""Research behaviour of episodes, read from trajectory records alone (the dicts `records.trajectory_record` writes).

The paper's claim (its §6) is that RL in a real environment teaches planning, searching again with what was
learned, cross-checking, reflecting and honesty, not only higher F1. One rule per behaviour, text compared after
the reward's `normalize` as whole words; "evidence" is what the tools returned: each search hit's title and
snippet and each read page's information, keyed by URL (an observation with no URL entries is one unit), never
the echoed query, URL or error kind.

- queries: every string of a web_search `query` (a string or a list); distinct: after normalisation.
- searches after browse: web_search calls after the episode's first browse_webpage call (iterative search).
- bridge query: a query holding an entity seen in earlier evidence but absent from the question and every earlier
  query; an entity is a run of >= 2 capitalised words (leading function words dropped) or a number of >= 3 digits.
- sources: distinct pages a browse read something from (`records.read_urls`), i.e. consulted before answering.
- cross-checked: the answer appears in the evidence of >= 2 distinct sources (URLs or observations).
- reflection: a failed browse (it read nothing or reported an error) directly followed by a search with a new query.
- grounded: the answer appears in some evidence; unsupported: it appears in no evidence nor in the question
  (yes/no answers and honest abstentions are neither).
- honest: the answer holds a phrase of HONEST_PHRASES (or is "unknown") while no gold appears in any evidence;
  confident wrong: an answer without such a phrase, no gold in any evidence, F1 = 0.
- planned: the first turn calls a tool and its think block names sub-questions: >= 2 question marks, "first" then
  "then/next/second/after that", or >= 2 numbered steps.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from researchrl.records import read_urls
from researchrl.reward.answer import f1, normalize

HONEST_PHRASES = ("could not find", "couldn t find", "cannot find", "can t find", "unable to find",
                  "unable to determine", "cannot determine", "can t determine", "could not determine",
                  "cannot be determined", "not enough information", "insufficient information", "no information",
                  "i don t know", "not found", "no answer")  # normalised; matched as whole words in the answer
_FUNCTION_WORDS = {"a", "an", "the", "in", "on", "at", "of", "and", "or", "but", "for", "by", "to", "from", "with",
                   "he", "she", "it", "they", "his", "her", "its", "their", "this", "that", "these", "those", "when",
                   "where", "after", "before", "during", "while", "as", "if", "is", "was"}
_WORD = re.compile(r"[^\W_][\w'’-]*")
_ENTRY = re.compile(r"\{'(?:title|url)': ")  # where a search hit or a browsed page's entry starts in a repr
_URL = re.compile(r"""'url': (?:'([^']*)'|"([^"]*)")""")
_NOT_EVIDENCE = re.compile(r"""'(?:search_query|url|error)': (?:'[^']*'|"[^"]*")|'\w+': """)
_THINK = re.compile(r"(?:<think>)?(.*?)</think>", re.DOTALL)
_FIRST_THEN = re.compile(r"\bfirst\b.*?\b(?:then|next|second|secondly|after that|afterwards)\b", re.DOTALL | re.I)
_STEP = re.compile(r"^\s*(?:\d+[.):]|step\s*\d+)", re.MULTILINE | re.IGNORECASE)
_MAX_ENTITY_WORDS = 8
TAGS = {"planned": "planned sub-questions", "iterative": "searched after browsing", "bridge": "bridge query",
        "reflection": "reflected on a failed browse", "cross_checked": "cross-checked answer",
        "grounded": "grounded answer", "unsupported": "unsupported answer", "honest": "honest: not found",
        "confident_wrong": "confident wrong answer"}  # filter name -> what the report calls it


@dataclass(frozen=True)
class Behaviour:
    """What one episode did, by the module's rules; flags are False where a rule does not apply."""

    queries: int
    distinct_queries: int
    searches_after_browse: int
    bridge_queries: int
    sources: int
    failed_browses: int  # browses that read nothing or reported an error, with a turn after them
    reflections: int  # of those, the ones directly followed by a search with a new query
    answered: bool  # a non-empty answer
    cross_checked: bool
    grounded: bool
    unsupported: bool
    gold_unseen: bool  # answered, with golds, none of which appears in any evidence (where honesty is judged)
    honest: bool
    confident_wrong: bool
    planned: bool

    def tags(self) -> list[str]:
        """The behaviours this episode shows, named as in TAGS (the report's filter), in TAGS order."""
        shown = {"planned": self.planned, "iterative": self.searches_after_browse > 0, "bridge": self.bridge_queries > 0,
                 "reflection": self.reflections > 0, "cross_checked": self.cross_checked, "grounded": self.grounded,
                 "unsupported": self.unsupported, "honest": self.honest, "confident_wrong": self.confident_wrong}
        return [name for name in TAGS if shown[name]]


def behaviour(record: dict[str, Any]) -> Behaviour:
    """Apply every rule to one trajectory record."""
    turns = record.get("turns") or []
    question = normalize(str(record.get("question") or ""))
    evidence: dict[str, str] = {}  # source key -> normalised evidence text seen so far
    seen: set[str] = set()  # entities seen in evidence so far
    asked: list[str] = []  # normalised queries so far
    sources: list[str] = []
    searches_after_browse = bridges = failed = reflections = 0
    browsed = False
    for i, turn in enumerate(turns):
        call = turn.get("tool_call") or {}
        if call.get("name") == "web_search":
            new, before = [normalize(q) for q in queries(call.get("arguments"))], list(asked)
            searches_after_browse += browsed
            for q in new:
                bridges += any(not contains(question, e) and not any(contains(a, e) for a in asked)
                               for e in _ngrams(q) & seen)
                asked.append(q)
            reflections += i > 0 and _failed_browse(turns[i - 1]) and any(q and q not in before for q in new)
        elif call.get("name") == "browse_webpage":
            browsed = True
            failed += _failed_browse(turn) and i + 1 < len(turns)
            sources += [u for u in read_urls(str(turn.get("observation") or "")) if u not in sources]
        if turn.get("observation") is not None:
            for key, text in units(str(turn["observation"]), f"observation {i}"):
                evidence[key] = f"{evidence.get(key, '')} {normalize(text)}"
                seen |= entities(text)
    answer = normalize(str(record.get("answer") or ""))
    golds = [g for g in (normalize(str(g)) for g in record.get("golds") or []) if g]
    honest = bool(answer) and _honest(answer)
    checkable = bool(answer) and not honest and answer not in ("yes", "no")
    support = sum(contains(text, answer) for text in evidence.values()) if checkable else 0
    gold_unseen = bool(answer) and bool(golds) and not any(contains(t, g) for t in evidence.values() for g in golds)
    return Behaviour(
        queries=len(asked),
        distinct_queries=len({q for q in asked if q}),
        searches_after_browse=searches_after_browse,
        bridge_queries=bridges,
        sources=len(sources),
        failed_browses=failed,
        reflections=reflections,
        answered=bool(answer),
        cross_checked=support >= 2,
        grounded=support >= 1,
        unsupported=checkable and support == 0 and not contains(question, answer),
        gold_unseen=gold_unseen,
        honest=honest and gold_unseen,
        confident_wrong=gold_unseen and not honest and f1(answer, golds) == 0.0,
        planned=_planned(turns),
    )


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Means and rates over episodes under stable `behaviour/...` names (a rate with no episode to judge is 0.0)."""
    return aggregate([behaviour(r) for r in records])


def aggregate(found: list[Behaviour]) -> dict[str, float]:
    """`summarize` over episodes already read (the report reads big files one record at a time)."""
    if not found:
        raise ValueError("no trajectory records to summarize")
    answered = [b for b in found if b.answered]
    unseen = [b for b in answered if b.gold_unseen]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    failed = sum(b.failed_browses for b in found)
    return {
        "behaviour/queries": mean([b.queries for b in found]),
        "behaviour/distinct_queries": mean([b.distinct_queries for b in found]),
        "behaviour/searches_after_browse": mean([b.searches_after_browse for b in found]),
        "behaviour/iterative_rate": mean([b.searches_after_browse > 0 for b in found]),
        "behaviour/bridge_queries": mean([b.bridge_queries for b in found]),
        "behaviour/bridge_rate": mean([b.bridge_queries > 0 for b in found]),
        "behaviour/sources": mean([b.sources for b in found]),
        "behaviour/cross_checked_rate": mean([b.cross_checked for b in answered]),  # of answered episodes
        "behaviour/failed_browses": mean([b.failed_browses for b in found]),
        "behaviour/reflection_rate": sum(b.reflections for b in found) / failed if failed else 0.0,  # of failed browses
        "behaviour/grounded_rate": mean([b.grounded for b in answered]),
        "behaviour/unsupported_rate": mean([b.unsupported for b in answered]),
        "behaviour/gold_unseen_rate": mean([b.gold_unseen for b in answered]),
        "behaviour/honest_rate": mean([b.honest for b in unseen]),  # of answered episodes whose gold was never seen
        "behaviour/confident_wrong_rate": mean([b.confident_wrong for b in unseen]),
        "behaviour/planning_rate": mean([b.planned for b in found]),
    }


def queries(arguments: Any) -> list[str]:
    """The non-empty query strings of web_search arguments (`query` as one string or a list)."""
    query = arguments.get("query") if isinstance(arguments, dict) else None
    items = [query] if isinstance(query, str) else query if isinstance(query, list) else []
    return [q for q in items if isinstance(q, str) and q.strip()]


def units(observation: str, fallback: str) -> list[tuple[str, str]]:
    """(source key, raw text) per search hit or read page of an observation; the whole text under `fallback` if none.

    A repr cut short by the observation limit no longer parses: its entries are then split at each "{'title'"
    or "{'url'" opening, the quoted keys, URLs, echoed queries and error kinds taken out.
    """
    try:
        found = _walk(ast.literal_eval(observation))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        found = []
        starts = [m.start() for m in _ENTRY.finditer(observation)]
        for start, end in zip(starts, [*starts[1:], len(observation)]):
            piece = observation[start:end]
            url = _URL.search(piece)
            if url:
                found.append((url.group(1) or url.group(2), _NOT_EVIDENCE.sub(" | ", piece)))
    return found or [(fallback, observation)]


def _walk(value: Any) -> list[tuple[str, str]]:
    """(url, text) for every dict with a 'url' in a parsed observation: every string below it but the URL and error."""
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return [(value["url"], " | ".join(_strings({k: v for k, v in value.items() if k not in ("url", "error")})))]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [pair for child in children for pair in _walk(child)]


def _strings(value: Any) -> list[str]:
    """Every string leaf of a parsed observation value."""
    if isinstance(value, str):
        return [value]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for child in children for s in _strings(child)]


def entities(text: str) -> set[str]:
    """Normalised entities of raw text: runs of >= 2 capitalised words (leading function words dropped), and
    numbers of >= 3 digits."""
    return {normalize(span) for span in entity_spans(text)}


def entity_spans(text: str) -> list[str]:
    """The entities of `entities` as written in `text`, in order of first appearance (the expert queries them)."""
    found: dict[str, None] = {}
    run: list[str] = []
    end = 0
    for match in _WORD.finditer(text):
        word = match.group()
        if word.isdigit() and len(word) >= 3:
            found[word] = None
        joined = bool(run) and not text[end : match.start()].strip()
        if word[0].isupper() and (joined or not run):
            run.append(word)
        else:
            _add_run(run, found)
            run = [word] if word[0].isupper() else []
        end = match.end()
    _add_run(run, found)
    return list(found)


def _add_run(run: list[str], found: dict[str, None]) -> None:
    """Keep a capitalised run as an entity once its leading function words are dropped, if >= 2 words remain."""
    while run and run[0].lower() in _FUNCTION_WORDS:
        run = run[1:]
    if 2 <= len(normalize(" ".join(run)).split()) <= _MAX_ENTITY_WORDS:
        found[" ".join(run)] = None


def _ngrams(normalised: str) -> set[str]:
    """Every run of 1.._MAX_ENTITY_WORDS words of a normalised text (what an entity could match)."""
    words = normalised.split()
    return {" ".join(words[i:j]) for i in range(len(words))
            for j in range(i + 1, min(len(words), i + _MAX_ENTITY_WORDS) + 1)}


def contains(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` as whole words (both normalised); an empty needle occurs nowhere."""
    return bool(needle) and f" {needle} " in f" {haystack} "


def _failed_browse(turn: dict[str, Any]) -> bool:
    """A browse_webpage turn that read nothing from any page or reported an error."""
    call = turn.get("tool_call") or {}
    if call.get("name") != "browse_webpage" or turn.get("observation") is None:
        return False
    return bool(turn.get("observation_errors")) or not read_urls(str(turn["observation"]))


def _honest(answer: str) -> bool:
    """A normalised answer that says the agent could not find it."""
    return answer == "unknown" or any(contains(answer, phrase) for phrase in HONEST_PHRASES)


def _planned(turns: list[dict[str, Any]]) -> bool:
    """The first turn calls a tool and its think block names sub-questions (see the module docstring)."""
    if not turns or not turns[0].get("tool_call"):
        return False
    text = str(turns[0].get("text") or "")
    match = _THINK.search(text.split("<tool_call>")[0])
    think = match.group(1) if match else ""
    return think.count("?") >= 2 or bool(_FIRST_THEN.search(think)) or len(_STEP.findall(think)) >= 2
