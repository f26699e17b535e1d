"""A tiny random Llama and its tokenizer, built locally (no downloads), for trainer tests."""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def lines(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 30)
        out.append(
            [f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is {a + b}.",
             f"Tom has {a} apples and buys {b} more. How many apples now?"][k % 3]
        )
    return out


def build(directory: str | Path, *, hidden: int = 64, layers: int = 2):
    """Save a byte-level BPE tokenizer and a random LlamaForCausalLM to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        lines(),
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
