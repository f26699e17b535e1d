"""The policy: a small decoder-only transformer over characters, trained from scratch on CPU.

Vocabulary: padding, end of trace, and the characters of the task (digits, ``+ = \\n Q A :``
and space). :func:`sample` draws traces for a batch of prompts at temperature 1 with a key-value
cache; every sequence starts at position 0, prompt tokens being forced until each prompt is
read, so nothing is padded on the left. :func:`completion_logprobs` gives the log-probability
of each completion token, for the policy gradient.

Needs ``torch`` (``pip install 'reasoning-arena[trl]'`` or any torch build).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

PAD, END = 0, 1
CHARS = "0123456789+=\nQA: "
VOCAB = 2 + len(CHARS)
_ID = {c: i + 2 for i, c in enumerate(CHARS)}


def encode(text: str) -> list[int]:
    return [_ID[c] for c in text]


def decode(ids) -> str:
    out = []
    for i in ids:
        i = int(i)
        if i == END:
            break
        if i >= 2:
            out.append(CHARS[i - 2])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Shape:
    width: int = 64
    layers: int = 4
    heads: int = 4
    context: int = 96


class _Block(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.norm1 = nn.LayerNorm(shape.width)
        self.qkv = nn.Linear(shape.width, 3 * shape.width)
        self.out = nn.Linear(shape.width, shape.width)
        self.norm2 = nn.LayerNorm(shape.width)
        self.mlp = nn.Sequential(nn.Linear(shape.width, 4 * shape.width), nn.GELU(),
                                 nn.Linear(4 * shape.width, shape.width))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(w, dim=-1)
        return tuple(z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))

    def _merge(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(x)
        return self._merge(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], pos: int):
        q, k, v = self._split(x)
        keys, values = cache
        keys[:, :, pos] = k[:, :, 0]
        values[:, :, pos] = v[:, :, 0]
        y = F.scaled_dot_product_attention(q, keys[:, :, : pos + 1], values[:, :, : pos + 1])
        return self._merge(x, y)


class Policy(nn.Module):
    def __init__(self, shape: Shape = Shape()) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(VOCAB, shape.width)
        self.position = nn.Embedding(shape.context, shape.width)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for every position of ``tokens`` [batch, time]."""
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def step(self, token: torch.Tensor, caches: list, pos: int) -> torch.Tensor:
        x = self.embed(token[:, None]) + self.position.weight[pos]
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cache, pos)
        return self.head(self.norm(x))[:, 0]

    def config(self) -> dict:
        return asdict(self.shape)


def parameter_count(policy: Policy) -> int:
    return sum(p.numel() for p in policy.parameters())


@torch.no_grad()
def sample(policy: Policy, prompts: list[str], generator: torch.Generator,
           *, temperature: float = 1.0) -> tuple[torch.Tensor, list[int], list[str]]:
    """One trace per prompt: (tokens [batch, time] with PAD after the end, prompt lengths in
    tokens, completion texts). A prompt is its text and a newline; a completion ends at END or
    at the context's end."""
    shape = policy.shape
    encoded = [encode(p + "\n") for p in prompts]
    lengths = [len(e) for e in encoded]
    b, t_max = len(prompts), shape.context
    tokens = torch.full((b, t_max), PAD, dtype=torch.long)
    forced = torch.full((b, t_max), -1, dtype=torch.long)
    for i, e in enumerate(encoded):
        forced[i, : len(e)] = torch.tensor(e)
    tokens[:, 0] = forced[:, 0]
    dh = shape.width // shape.heads
    caches = [(torch.zeros(b, shape.heads, t_max, dh), torch.zeros(b, shape.heads, t_max, dh))
              for _ in range(shape.layers)]
    done = torch.zeros(b, dtype=torch.bool)
    for pos in range(t_max - 1):
        logits = policy.step(tokens[:, pos], caches, pos)
        logits[:, PAD] = float("-inf")
        drawn = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1,
                                  generator=generator)[:, 0]
        nxt = torch.where(forced[:, pos + 1] >= 0, forced[:, pos + 1], drawn)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        tokens[:, pos + 1] = nxt
        done |= nxt == END
        if bool(done.all()):
            break
    texts = [decode(tokens[i, lengths[i]:]) for i in range(b)]
    return tokens, lengths, texts


def completion_mask(tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """[batch, time - 1]: True where target token ``t + 1`` is part of the completion (its END
    included)."""
    target = tokens[:, 1:]
    positions = torch.arange(target.shape[1])[None, :]
    after_prompt = positions + 1 >= torch.tensor(lengths)[:, None]
    return after_prompt & (target != PAD)


def completion_logprobs(policy: Policy, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, time - 1]: log-probability of each next token under ``policy``."""
    used = int((tokens != PAD).sum(dim=1).max())
    tokens = tokens[:, :used]
    logits = policy(tokens[:, :-1])
    logits[..., PAD] = float("-inf")  # never sampled: the same distribution as :func:`sample`
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    logp = logp.masked_fill(tokens[:, 1:] == PAD, 0.0)  # padding: -inf, never a completion
    return F.pad(logp, (0, policy.shape.context - used))
