"""GRPO with TRL, dead groups rescued by the Reasoning Arena judge.

Start a judge server, then train::

    arena-judge serve --store memory &                       # gRPC on 50051, HTTP on 8000
    python examples/trl_grpo.py --model Qwen/Qwen2.5-0.5B-Instruct --judge localhost:50051

``--tiny`` trains a tiny random model built on the spot instead (no download; a smoke test that
runs on a CPU in seconds). Needs ``pip install 'reasoning-arena[trl]'``.

The verifier gives 1.0 for a right final answer and 0.0 otherwise; a group whose completions
are all right (or all wrong) is dead and goes to the judge. ``scale_rewards="none"`` keeps
TRL from dividing each group by its standard deviation, so the judge's zero-mean values reach
the policy as the judge server scaled them.
"""

from __future__ import annotations

import argparse
import re
import tempfile

PROBLEMS = [
    ("Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest at $2 each. "
     "How many dollars does she make?", "18"),
    ("A robe takes 2 bolts of blue fibre and half that much white fibre. "
     "How many bolts in total?", "3"),
    ("Tom has 12 apples and gives away 5. How many are left?", "7"),
    ("What is 7 * 6?", "42"),
    ("A shirt costs $25 and is 20% off. What does it cost?", "20"),
    ("Ana reads 15 pages a day. How many pages does she read in 4 days?", "60"),
    ("What is 81 / 9?", "9"),
    ("Omar has 3 boxes of 8 pens. How many pens?", "24"),
]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def correct_answer(prompts, completions, answer, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when the completion's last number is the answer."""
    rewards = []
    for completion, expected in zip(completions, answer):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        numbers = NUMBER.findall(text.replace(",", ""))
        rewards.append(float(bool(numbers) and float(numbers[-1]) == float(expected)))
    return rewards


def tiny_model(directory: str) -> str:
    """A byte-level BPE tokenizer and a two-layer random Llama, saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [f"{q} The answer is {a}." for q, a in PROBLEMS] * 20
    raw.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    tokenizer.save_pretrained(directory)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM (hub id or directory)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, built here")
    parser.add_argument("--judge", default="localhost:50051", help="judge server, gRPC")
    parser.add_argument("--run-id", default="trl-example")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()
    if not (args.model or args.tiny):
        parser.error("give --model or --tiny")

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from trainer_client import ClientConfig
    from trainer_client.integrations.trl import ArenaReward

    model = args.model or tiny_model(tempfile.mkdtemp(prefix="tiny-model-"))
    train = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in PROBLEMS]
    )
    config = GRPOConfig(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="grpo-"),
        num_generations=args.num_generations,
        per_device_train_batch_size=2 * args.num_generations,
        max_completion_length=16 if args.tiny else 256,
        max_steps=args.steps,
        logging_steps=1,
        scale_rewards="none",  # the group mean is subtracted, no division by the std
        report_to="none",
        save_strategy="no",
        **({"use_cpu": True, "bf16": False} if args.tiny else {}),
    )
    reward = ArenaReward(
        correct_answer,
        num_generations=config.num_generations,
        client=ClientConfig(target=args.judge, run_id=args.run_id, deadline_s=60),
        reference_column="answer",  # shown to the judge as the reference answer
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=train)
    trainer.train()
    reward.close()
    for log in trainer.state.log_history:
        if "reward" in log:
            print({k: round(log[k], 4) for k in (
                "reward", "reward_std", "frac_reward_zero_std", "arena/dead_fraction",
                "arena/judged", "arena/fell_back") if k in log})


if __name__ == "__main__":
    main()
