"""Degenerate generations and implausible answers: checks that need no arithmetic.

Repetition loops, runaway tokens (``181818...``), traces cut off mid-sentence, and a negative
answer to a "how many" question. Each is a pure function of the text.
"""

from __future__ import annotations

import re

from .answers import Answer

_TOKEN = re.compile(r"\S+")
_NGRAM = 8
_MIN_LINE_CHARS = 8
_RUNAWAY_CHARS = 64
_RUNAWAY_TAIL = 48


def repetition(trace: str) -> float:
    """How much of the trace repeats earlier text, in [0, 1].

    The larger of two fractions: lines (of 8 characters or more) that repeat an earlier line,
    and word 8-grams that repeat an earlier 8-gram. Ordinary reasoning stays below 0.2; a
    generation stuck in a loop approaches 1.
    """
    lines = [line.strip() for line in trace.splitlines()]
    lines = [line for line in lines if len(line) >= _MIN_LINE_CHARS]
    line_repeats = (len(lines) - len(set(lines))) / len(lines) if len(lines) >= 4 else 0.0
    tokens = _TOKEN.findall(trace)
    ngrams = [tuple(tokens[i : i + _NGRAM]) for i in range(len(tokens) - _NGRAM + 1)]
    ngram_repeats = (len(ngrams) - len(set(ngrams))) / len(ngrams) if len(ngrams) >= 24 else 0.0
    return max(line_repeats, ngram_repeats)


def runaway_token(trace: str) -> bool:
    """True when a "word" ends in a long periodic run: ``0.181818...``, ``!!!!!!...``."""
    for token in _TOKEN.findall(trace):
        if len(token) >= _RUNAWAY_CHARS:
            tail = token[-_RUNAWAY_TAIL:]
            if any(tail[period:] == tail[:-period] for period in range(1, 9)):
                return True
    return False


_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_DANGLING_END = re.compile(
    r"(?:[=+*/^,(\[{:\\$€£-]|\b(?:"
    + "|".join(
        "the a an and or of to for with in on at by from is are was were be that which so then "
        "because than as if but into per its their this".split()
    )
    + r"))\s*\Z",
    re.IGNORECASE,
)


def truncation(trace: str) -> str | None:
    """Why the trace looks cut off, or None: it ends on an operator, a currency sign, a comma
    or a word that must be followed by more ("... for an"), or leaves brackets or a code block
    open. (Ending without a full stop is not enough: many finished traces do.)"""
    text = trace.rstrip()
    if not text:
        return None
    if _DANGLING_END.search(text[-200:]):
        return f"ends with {text[-20:]!r}"
    if text.count("```") % 2:
        return "code block left open"
    depth = dict.fromkeys(_OPENERS, 0)
    for char in text:
        if char in _OPENERS:
            depth[char] += 1
        elif char in _CLOSERS and depth[_CLOSERS[char]]:
            depth[_CLOSERS[char]] -= 1
    opened = [char for char, d in depth.items() if d]
    if opened:
        return f"bracket {opened[0]!r} left open"
    return None


_COUNT_QUESTION = re.compile(r"\bhow\s+(?:many|much)\b", re.IGNORECASE)


def implausible_answer(prompt: str, answer: Answer | None) -> str | None:
    """Why the final answer cannot answer the question, or None: a negative number for a
    "how many" or "how much" question."""
    if answer is None or answer.value is None or answer.value >= 0:
        return None
    question = _COUNT_QUESTION.search(prompt)
    if question is None:
        return None
    return f"negative answer {answer.text!r} to {question[0].lower()!r}"


__all__ = ["implausible_answer", "repetition", "runaway_token", "truncation"]
