"""A tiny random causal language model, built locally: for tests and for throughput figures.

No weights can be downloaded in CI, so the backend tests and ``arena-judge bench backend``
build their own judge model: a byte-level BPE tokenizer trained with ``tokenizers`` on a few
hundred generated lines (arithmetic word problems and verdict lines, so that ``" A"`` and
``" B"`` are single tokens), wrapped in ``PreTrainedTokenizerFast`` with a small chat template,
and a two-layer Llama (hidden 128, two heads of 64: vLLM's CPU attention refuses head
dimension 16) with random weights. Its verdicts mean nothing; it exercises the real loading,
tokenisation, batching and log-probability paths of every backend.

Needs ``tokenizers``, ``transformers`` and ``torch`` (``pip install
'reasoning-arena[transformers]'``).
"""

from __future__ import annotations

import random
from pathlib import Path

#: A chat template in plain text markers (none of them special tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")


def corpus(lines: int = 400, *, seed: int = 0) -> list[str]:
    """``lines`` lines of generated text: word problems, worked steps and verdicts."""
    rng = random.Random(seed)
    names = ["Janet", "Tom", "Ana", "Omar", "Li", "Sara", "Ben", "Maya"]
    things = ["eggs", "apples", "books", "coins", "marbles", "pens", "cakes", "stamps"]
    out = []
    for k in range(lines):
        a, b, c = rng.randint(2, 99), rng.randint(2, 30), rng.randint(2, 9)
        name, thing = rng.choice(names), rng.choice(things)
        kind = k % 5
        if kind == 0:
            out.append(f"{name} has {a} {thing} and buys {b} more. How many {thing} now?")
        elif kind == 1:
            out.append(f"{a} + {b} = {a + b}, then {a + b} * {c} = {(a + b) * c}.")
        elif kind == 2:
            out.append(f"So the answer is {a - b}. The reasoning is sound and the steps check.")
        elif kind == 3:
            out.append(f"Trace A says {a}; Trace B says {b}. Which reasoning is more sound?")
        else:
            out.append(f"Verdict: {rng.choice('AB')} Answer: {rng.choice('AB')} A or B")
    return out


def build_tokenizer(directory: str | Path, *, vocab_size: int = 1024):
    """Train the byte-level BPE tokenizer, save it to ``directory``; return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    for verdict in ("A", "B", " A", " B"):
        ids = wrapped.encode(verdict, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"the tiny tokenizer splits {verdict!r} into {ids}")
    wrapped.save_pretrained(str(directory))
    return wrapped


def build(
    directory: str | Path,
    *,
    hidden_size: int = 128,
    heads: int = 2,
    layers: int = 2,
    max_positions: int = 4096,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> Path:
    """Build the tokenizer and a random Llama in ``directory`` (created); return the path.

    ``initializer_range`` is larger than a trained model's so that the verdict
    probabilities vary from prompt to prompt (a test comparing backends needs that).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(directory))
    return directory


__all__ = ["CHAT_TEMPLATE", "build", "build_tokenizer", "corpus"]
