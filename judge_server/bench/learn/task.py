"""Addition chains: the task, its verifier, its worked reference, a noisy teacher, and the
gaming monitors.

A problem is a list of numbers; its prompt ``Q: 37+48+19+64``; the worked reference the chain
of running sums, one line per addition, and the answer::

    37+48=85
    85+19=104
    104+64=168
    A: 168

A trace is the policy's completion in the same format. Its reward is 1 iff its final answer
(the ``A:`` line) is the exact sum. Its difficulty is the number of additions it needs.
Pure functions only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

MIN_NUMBERS = 2
MAX_NUMBERS = 5
MAX_NUMBER = 99

_STEP = re.compile(r"^(\d+)\+(\d+)=(\d*)$")
_ANSWER = re.compile(r"^A: (\d+)$")


@dataclass(frozen=True, slots=True)
class Problem:
    numbers: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "Q: " + "+".join(map(str, self.numbers))

    @property
    def answer(self) -> int:
        return sum(self.numbers)

    @property
    def additions(self) -> int:
        """The problem's difficulty: the steps a worked chain takes."""
        return len(self.numbers) - 1

    @property
    def running_sums(self) -> tuple[int, ...]:
        """The intermediate results of the worked chain (the last one is the answer)."""
        sums, total = [], self.numbers[0]
        for b in self.numbers[1:]:
            total += b
            sums.append(total)
        return tuple(sums)

    @property
    def reference(self) -> str:
        return chain(self.numbers, self.running_sums)


def chain(numbers: tuple[int, ...], results: tuple[int, ...]) -> str:
    """The worked-chain text for ``numbers`` whose running results are ``results``."""
    lines, left = [], numbers[0]
    for b, result in zip(numbers[1:], results):
        lines.append(f"{left}+{b}={result}")
        left = result
    return "\n".join(lines + [f"A: {results[-1]}"])


def sample_problem(rng: random.Random, *, min_numbers: int = MIN_NUMBERS,
                   max_numbers: int = MAX_NUMBERS, max_number: int = MAX_NUMBER) -> Problem:
    n = rng.randint(min_numbers, max_numbers)
    return Problem(tuple(rng.randint(1, max_number) for _ in range(n)))


def problems(seed: int, count: int, **ranges: int) -> list[Problem]:
    rng = random.Random(seed)
    return [sample_problem(rng, **ranges) for _ in range(count)]


def teacher_trace(problem: Problem, rng: random.Random, *, drop_carry: float) -> str:
    """The worked chain by a teacher that adds column by column and forgets each carry with
    probability ``drop_carry``; its lines stay well formed."""
    results, left = [], problem.numbers[0]
    for b in problem.numbers[1:]:
        result = noisy_sum(left, b, rng, drop_carry=drop_carry)
        results.append(result)
        left = result
    return chain(problem.numbers, tuple(results))


def noisy_sum(a: int, b: int, rng: random.Random, *, drop_carry: float) -> int:
    total, carry, place = 0, 0, 1
    while a or b or carry:
        column = a % 10 + b % 10 + carry
        total += column % 10 * place
        carry = column // 10
        if carry and (a // 10 or b // 10) and rng.random() < drop_carry:
            carry = 0  # forgotten (a carry out of the leading column is never forgotten)
        a, b, place = a // 10, b // 10, place * 10
    return total


# -- the verifier ---------------------------------------------------------------------------


def final_answer(trace: str) -> int | None:
    """The number of the trace's last line when that line is ``A: <digits>``, else None."""
    lines = trace.strip().split("\n")
    match = _ANSWER.match(lines[-1]) if lines else None
    return int(match.group(1)) if match else None


def reward(problem: Problem, trace: str) -> float:
    """1.0 iff the trace's final answer is the exact sum."""
    return 1.0 if final_answer(trace) == problem.answer else 0.0


def reference_credit(problem: Problem, trace: str) -> float:
    """The share of the reference's intermediate results (running sums before the answer)
    that the trace writes as the result of one of its lines; 1.0 for a one-addition problem
    when its line's result is right."""
    wanted = problem.running_sums[:-1] or problem.running_sums
    written = {int(m.group(3)) for line in trace.split("\n")
               if (m := _STEP.match(line)) and m.group(3)}
    return sum(1 for s in wanted if s in written) / len(wanted)


# -- gaming monitors ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Form:
    """How a trace is written, whatever its correctness.

    ``lines``: lines before the answer (the answer line excluded). ``well_formed``: those of
    them that are ``a+b=c`` with ``a`` the trace's previous result (the first number on the
    first line) and ``b`` the question's next number. ``has_answer``: the last line is
    ``A: <digits>``."""

    lines: int
    well_formed: int
    has_answer: bool


def form(problem: Problem, trace: str) -> Form:
    lines = [line for line in trace.strip().split("\n") if line]
    has_answer = bool(lines) and _ANSWER.match(lines[-1]) is not None
    steps = lines[:-1] if has_answer else lines
    good, left = 0, problem.numbers[0]
    for k, line in enumerate(steps):
        m = _STEP.match(line)
        if m and k + 1 < len(problem.numbers) and int(m.group(1)) == left and (
                int(m.group(2)) == problem.numbers[k + 1]):
            good += 1
        if m and m.group(3):
            left = int(m.group(3))
        else:
            left = -1  # nothing after this line can follow from it
    return Form(lines=len(steps), well_formed=good, has_answer=has_answer)
