"""Grounding scorers: whether a free-text answer covers the key facts and stays within its context.

``key_facts`` (completeness: the expected words and short phrases, matched as whole
words) and ``faithfulness`` (grounding: the share of the answer's content words
found in the context), with the stop-word list and the text normalisation they
share. Moved out of :mod:`pytest_llmeval.scorers.deterministic`, which re-exports both.
"""

from __future__ import annotations

import re

from ._base import Score, make_score, normalize_text, record


def _norm_fact_text(s: str) -> str:
    s = normalize_text(s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,200 -> 1200
    return " " + " ".join(re.sub(r"[^\w\s.%$-]", " ", s).replace(". ", " ").split()) + " "


def key_facts(text: str, facts: list[str], *, at_least: float = 1.0) -> Score:
    """Completeness: share of key facts (words or short phrases) the answer contains."""
    __tracebackhide__ = True
    hay = _norm_fact_text(text)
    missing = []
    for fact in facts:
        needle = _norm_fact_text(fact).strip().rstrip(".")
        # Whole words; and a number is not found inside a decimal ("5" in "1.5", "1" in "1.5").
        if not re.search(r"(?<!\w)(?<!\d\.)" + re.escape(needle) + r"(?!\w)(?!\.\d)", hay):
            missing.append(fact)
    value = 1.0 - len(missing) / len(facts) if facts else 1.0
    expl = f"missing: {', '.join(map(repr, missing))}" if missing else ""
    return record(make_score("key_facts", value, at_least, expl))


_STOP = set(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "him",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "not",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "done",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "than",
        "then",
        "so",
        "such",
        "also",
        "very",
        "more",
        "most",
        "less",
        "least",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "other",
        "some",
        "only",
        "own",
        "same",
        "too",
        "just",
        "about",
        "into",
        "over",
        "after",
        "before",
        "under",
        "between",
        "during",
        "through",
        "up",
        "down",
        "out",
        "off",
        "again",
        "further",
        "once",
        "here",
        "answer",
        "context",
        "question",
        "according",
        "based",
        "passage",
        "text",
    ]
)


def _content_tokens(s: str) -> list[str]:
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", normalize_text(s))
    return [t for t in re.findall(r"\w+", s) if t not in _STOP]


def faithfulness(answer: str, context: str, *, extra: str = "", at_least: float = 0.5) -> Score:
    """Share of the answer's content words (and all its numbers) found in the context.

    A deterministic grounding check: an answer that introduces names or numbers
    absent from the context scores low. ``extra`` (e.g. the question) counts as
    allowed source text too. Crude on paraphrase; pair it with the judge.
    """
    __tracebackhide__ = True
    tokens = _content_tokens(answer)
    if not tokens:
        return record(make_score("faithfulness", 0.0, at_least, "the answer has no content words"))
    source = set(_content_tokens(context + " " + extra))
    # Light stemming so "cities" is supported by "city" and "opened" by "open".
    stems = {t[:5] for t in source if len(t) > 4}
    unsupported = [t for t in tokens if t not in source and not (len(t) > 4 and t[:5] in stems)]
    value = 1.0 - len(unsupported) / len(tokens)
    expl = f"not in the context: {', '.join(sorted(set(unsupported))[:15])}" if unsupported else ""
    return record(make_score("faithfulness", value, at_least, expl))
