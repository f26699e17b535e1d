"""The answer verifier: a response against its label, 1.0 or 0.0. One for every reward route.

The judge server's per-sample route (OpenRLHF's remote reward URL, verl's reward loop:
:func:`judge_server.transports.assembly.math_verifier`) and the trainer side's OpenRLHF ``.py``
route (:func:`trainer_client.integrations.openrlhf.answer_verifier`) both call
:func:`verify_answer`, so a sample gets the same reward whichever way it travels.

The final answer of a text (:func:`final_answer`) is its last marked answer, by position:
``\\boxed{...}``, ``#### x``, a line ``Answer: x`` / ``A: x`` / ``Final answer: x``, or
``the answer is x``; a text with no marked answer answers with its last number or expression.
A label is read the same way, except that a short label with no marker is the answer itself
(``"0.5"``, ``"$18"``, ``"\\frac{1}{2}"``, ``"x+1"``, ``"Paris"``); a GSM8K solution ending in
``#### 72`` gives ``72``.

Equivalence is math-verify's (Hugging Face; the verifier of TRL's and open-r1's accuracy
rewards and of verl's math-verify score), on sympy values: ``2/4`` equals ``0.5``, ``50%``
equals ``0.5`` (and ``50``, the label of a question that asks for a percentage),
``\\frac{3}{4}`` equals ``0.75``, ``1,200`` and ``$1,200`` equal ``1200``, ``x = 5`` equals
``5``, ``0.333333`` equals ``1/3`` (six decimals; ``0.33`` does not). An answer in which
math-verify finds no mathematics (``Paris``, ``B``) is compared as text, ignoring case and
punctuation; a label with mathematics and a response without gets 0.0, as does a response with
no answer at all or a missing label.

What is by hand here, and why: the markers (math-verify ranks ``final answer is`` above
``\\boxed`` and knows no ``####``; the last commitment of a trace is its answer), the text
comparison (math-verify reads ``Paris`` as the product ``P*a*r*i*s``), and the size guard below.

Threads. math-verify's own timeouts use ``signal.alarm``, which works on the main thread only;
the server runs the verifier in worker threads and OpenRLHF runs reward functions in
``asyncio.to_thread``, so they are off here and the work is bounded instead: a marked answer
is read from at most :data:`MAX_ANSWER_CHARS` characters, an unmarked text from its last
:data:`TAIL_CHARS`, and an answer with a value too large to compute exactly (a power beyond
``10**1000``, a factorial beyond ``1000!``) gets 0.0 without being compared.

math-verify is an optional dependency of the light client: ``pip install
'reasoning-arena[verify]'`` (the server's extra includes it).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

MAX_ANSWER_CHARS = 300
"""A marked answer is read from at most this many characters after its marker."""
TAIL_CHARS = 2000
"""A text without a marked answer is read from its last this many characters."""
MAX_MAGNITUDE_LOG10 = 1000
"""Answers holding a power whose value is beyond ``10**1000`` (or below ``10**-1000``) in size,
or a factorial of more than 1000, are not compared (sympy would compute them exactly)."""
MAX_NODES = 2000
"""Answers with more sympy nodes than this are not compared."""

EXTRA = "verify"
"""The extra that installs math-verify: ``pip install 'reasoning-arena[verify]'``."""

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_]*(?:final[ \t]+answer|answer|a)[ \t*_]*[:：][ \t*_]*(?P<ans>[^\n]*\S)",
    re.IGNORECASE | re.MULTILINE,
)
_HASHES = re.compile(r"####[ \t]*(?P<ans>[^\n]*\S)")
_ANSWER_IS = re.compile(
    r"\banswer\s*(?:is|=|:|：)\s*[:：]?[ \t*_]*(?P<ans>[^\n]*\S)", re.IGNORECASE
)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+|[\^_{}]")
_TEXT_COMMAND = re.compile(r"\\text\w*\s*\{([^{}]*)\}")
# A variable next to an operator ("x+1", "2 - y", "x = 5"), or a tuple or interval: mathematics
# that math-verify's prose reading would cut to its first number.
_ALGEBRA = re.compile(
    r"(?<![A-Za-z'’])[A-Za-z](?![A-Za-z'’])\s*[-+*/^=<>]|[-+*/^=<>]\s*[A-Za-z](?![A-Za-z])"
    r"|^[(\[].*,.*[)\]]$"
)
# A letter alone ("B", "(A)") or words ("Paris", "New York"): text, not variables.
_TEXTUAL = re.compile(r"^[\W_]*(?:[A-Za-z]|[A-Za-z]{2,}(?:[\s,.'!?-]+[A-Za-z]+)*)[\W_]*$")


@dataclass(frozen=True, slots=True)
class Answer:
    """A final answer: the text it was read from and math-verify's parse of it (``()``: none,
    the answer is text)."""

    text: str
    values: tuple[Any, ...] = ()
    marked: bool = True
    """False when no answer was marked and the last number or expression was taken."""


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError as exc:  # the light client without the extra
        raise ImportError(
            "the answer verifier needs math-verify: pip install "
            f"'reasoning-arena[{EXTRA}]' (or pip install math-verify)"
        ) from exc
    # Timeouts are off on purpose (module doc); math-verify would warn once that they are.
    from math_verify import grader, parser

    grader.TIMEOUT_WARNING_SHOWN = parser.TIMEOUT_WARNING_SHOWN = True
    return math_verify


def _normalise(text: str) -> str:
    """LaTeX escapes that hide a number from math-verify: ``\\$18``, ``50\\%``, ``1{,}200``."""
    return text.replace("\\$", "").replace("\\%", "%").replace("{,}", ",").replace("\\!", "")


def _close(text: str, start: int) -> int | None:
    """The index of the brace that closes the one before ``start``, or None."""
    depth = 1
    end = min(len(text), start + MAX_ANSWER_CHARS)
    for i in range(start, end):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _marked(text: str) -> tuple[int, str] | None:
    """The last marked answer of ``text``: (position, the answer's text)."""
    found: list[tuple[int, str]] = []
    for m in _BOXED.finditer(text):
        close = _close(text, m.end())
        if close is not None:
            found.append((m.start(), text[m.end():close]))
    for pattern in (_ANSWER_LINE, _HASHES, _ANSWER_IS):
        found.extend((m.start(), m["ans"][:MAX_ANSWER_CHARS]) for m in pattern.finditer(text))
    return max(found, key=lambda item: item[0]) if found else None


def _parse(text: str) -> tuple[Any, ...]:
    mv = _math_verify()
    config = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    try:
        values = mv.parse(
            text, config, fallback_mode="no_fallback", parsing_timeout=None,
            raise_on_error=False,
        )
    except Exception:  # noqa: BLE001 - an unreadable answer is no answer
        return ()
    return tuple(v for v in values if not isinstance(v, str))


def _read(answer: str) -> tuple[Any, ...]:
    """math-verify's values for the text of a marked answer (``()``: no mathematics)."""
    answer = _TEXT_COMMAND.sub(r"\1", answer).strip()
    if not answer:
        return ()
    boxed = functools.partial(_parse, f"\\boxed{{{answer}}}")
    stated = functools.partial(_parse, f"Answer: {answer}")
    readers: tuple[functools.partial[tuple[Any, ...]], ...]
    if _LATEX_COMMAND.search(answer) or _ALGEBRA.search(answer):  # \frac{3}{4}, 2^{10}, x+1
        readers = (boxed, stated)
    elif any(c.isdigit() for c in answer):  # numbers in prose: 18 eggs, $1,200, 3/4 cup, 50%
        readers = (stated, boxed)
    elif "$" in answer or "\\(" in answer:  # delimited LaTeX: $x+1$
        readers = (stated,)
    elif _TEXTUAL.match(answer):  # words or a letter: Paris, B, (A)
        return ()
    else:  # symbols: x+y, (a, b)
        readers = (boxed,)
    for reader in readers:
        values = reader()
        if values:
            return values
    return ()


def final_answer(text: str, *, label: bool = False) -> Answer | None:
    """The final answer of ``text`` (module doc), None when it states none.

    ``label=True`` reads a label: a short one with no marker is the answer itself.
    """
    text = _normalise(str(text))
    if not text.strip():
        return None
    marked = _marked(text)
    if marked is not None:
        return Answer(marked[1].strip(), _read(marked[1]))
    if label and len(text.strip()) <= MAX_ANSWER_CHARS and "\n" not in text.strip():
        return Answer(text.strip(), _read(text))
    values = _parse(text[-TAIL_CHARS:])
    if not values:
        return None
    return Answer(text[-TAIL_CHARS:].strip(), values, marked=False)


def _bounded(value: Any) -> bool:
    """False for a value sympy could not compare in bounded time (module doc)."""
    import sympy

    if not isinstance(value, sympy.Basic):
        return True
    try:
        for i, node in enumerate(sympy.postorder_traversal(value)):
            if i > MAX_NODES:
                return False
            if isinstance(node, sympy.factorial) and node.args[0].is_number:
                if abs(node.args[0].evalf(15)) > 1000:
                    return False
            elif isinstance(node, sympy.Pow) and node.is_number:
                size = abs(node.evalf(15))
                if size != 0 and abs(sympy.log(size, 10).evalf(15)) > MAX_MAGNITUDE_LOG10:
                    return False
    except Exception:  # noqa: BLE001 - what cannot be sized is not compared
        return False
    return True


def _plain(text: str) -> str:
    text = _TEXT_COMMAND.sub(r"\1", text)
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


def answers_match(answer: Answer, reference: Answer) -> bool:
    """True when ``answer`` states what ``reference`` does (module doc)."""
    if not reference.values:
        return bool(answer.marked and not answer.values and _plain(answer.text)
                    and _plain(answer.text) == _plain(reference.text))
    gold = [v for v in reference.values if _bounded(v)]
    got = [v for v in answer.values if _bounded(v)]
    if not gold or not got:
        return False
    mv = _math_verify()
    return bool(mv.verify(gold, got, timeout_seconds=None, raise_on_error=False))


def verify_answer(response: str, label: Any) -> float:
    """1.0 when the final answer of ``response`` equals ``label``'s, else 0.0 (module doc).
    No label, or no answer in the response: 0.0.

    Safe in any thread and in ``asyncio.to_thread``. Raises ImportError, naming the extra,
    when math-verify is not installed.
    """
    _math_verify()
    if label is None or not str(label).strip():
        return 0.0
    reference = final_answer(str(label), label=True)
    answer = final_answer(str(response))
    if reference is None or answer is None:
        return 0.0
    return 1.0 if answers_match(answer, reference) else 0.0


__all__ = ["Answer", "answers_match", "final_answer", "verify_answer"]
