"""``arena-judge``: run the judge server, print its options, run the benchmarks.

    arena-judge serve [--grpc-port 50051] [--http-port 8000] [--config FILE] [--any-option ...]
    arena-judge config                      the table of every server option and its default
    arena-judge hash-key < KEY_FILE         the SHA-256 digest of an API key (for ARENA_API_KEYS)
    arena-judge bench tournaments [--json]  tournament designs on the simulated judge
                                            (--drift RUNS: anchor pools, a drifting policy)
    arena-judge bench fit [--json]          the Bradley-Terry fitter against choix
    arena-judge bench judge [--json]        a judge on GSM8K: masked answers, planted errors,
                                            gaming probes, dead-group ties (--comparator ...)
    arena-judge bench backend [--json]      an LLM judge behind the server: comparisons/s
    arena-judge bench cost [--json]         uncached prompt tokens per group at live's tau
    arena-judge bench serve [--json]        server throughput and latency, instant judge
    arena-judge bench fairness [--json]     a quiet run's p99 latency alone and under a flood
    arena-judge bench abuse [--json]        issue 14's attacks on a live server: what held
    arena-judge bench learn [--seeds N] [--steps N] [--arms a,b] [--json PATH] [--plot PATH]
                                            RL from a warm start: do rescued groups learn faster?
"""

from __future__ import annotations

import os

# The fits are small: BLAS threads only add wake-up latency on a busy machine (measured:
# 10-25 ms instead of 0.3 ms per fit). Set before numpy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# stdout carries the commands' results (tables, JSON); vLLM logs there by default.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import typing  # noqa: E402

from pydantic import ValidationError  # noqa: E402


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _add_settings_flags(parser: argparse.ArgumentParser, only: str | None = None) -> None:
    """One flag per server option (``--grpc-port``), defaulting to "not given"; secrets
    (environment only) get none. ``only``: the options whose name starts with it."""
    from .settings import ServerSettings, env_only

    for name, field in ServerSettings.model_fields.items():
        if env_only(name) or (only and not name.startswith(only) and name != "comparator"):
            continue
        flags = ["--" + name.replace("_", "-")] + (["--config"] if name == "config_file" else [])
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=field.description)
        else:
            choices = typing.get_args(field.annotation) if typing.get_origin(
                field.annotation) is typing.Literal else None
            parser.add_argument(*flags, dest=name, default=None, choices=choices,
                                help=f"{field.description} (default: {field.default})")


def _serve(args: argparse.Namespace) -> int:
    from .server import run
    from .settings import ServerSettings

    given = {k: v for k, v in vars(args).items() if k not in ("command", "func") and v is not None}
    try:
        settings = ServerSettings(**given)
    except (ValidationError, ValueError) as exc:
        print(f"arena-judge serve: {exc}", file=sys.stderr)
        return 2
    try:
        run(settings)
    except ImportError as exc:  # the judge's extra is not installed
        print(f"arena-judge serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _config(args: argparse.Namespace) -> int:
    from .settings import options_table

    print(options_table())
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from .transports.tenants import hash_key

    key = sys.stdin.read().strip()  # from stdin, so the key stays out of shell history
    if not key:
        print("arena-judge hash-key: give the API key on standard input", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _emit(result: dict, table: str, as_json: bool) -> int:
    print(json.dumps(result, indent=2) if as_json else table)
    return 0


def _bench_tournaments(args: argparse.Namespace) -> int:
    from .bench import tournaments

    result = tournaments.run(
        args.sizes, trials=args.trials, position_bias=args.position_bias, noise=args.noise,
        spread=args.spread, soft=args.soft, seed=args.seed, progress=not args.json,
    )
    table = tournaments.format_table(result)
    if args.drift:
        from .bench import pool_drift

        drift = pool_drift.run(
            tuple(n for n in args.sizes if n <= 16) or (8, 16), runs=args.drift,
            position_bias=args.position_bias, seed=args.seed, progress=not args.json,
        )
        result["pool_drift"] = drift
        table += "\n\n" + pool_drift.format_table(drift)
    return _emit(result, table, args.json)


def _bench_fit(args: argparse.Namespace) -> int:
    from .bench import fit

    result = fit.run(args.sizes, graphs_per_size=args.graphs, seed=args.seed,
                     progress=not args.json)
    return _emit(result, fit.format_table(result), args.json)


def _judge_settings(args: argparse.Namespace, **defaults):
    """Server settings from the judge flags given (``--comparator``, ``--judge-*``)."""
    from .settings import ServerSettings

    given = {k: v for k, v in vars(args).items()
             if (k == "comparator" or k.startswith("judge_")) and v is not None}
    return ServerSettings(**{**defaults, **given})


async def _evaluate(comparator, pairs, *, batch_size: int, progress: bool) -> dict:
    from .bench import judge

    try:
        if hasattr(comparator, "start"):  # load the model before the clock starts
            await comparator.start()
        result = await judge.evaluate(comparator, pairs, batch_size=batch_size,
                                      progress=progress)
    finally:
        await comparator.aclose()
    stats = getattr(comparator, "stats", None)
    if stats is not None:
        result["judge_stats"] = stats.snapshot()
    return result


def _bench_judge(args: argparse.Namespace) -> int:
    from .app import build_comparator
    from .bench import judge

    try:
        settings = _judge_settings(args, judge_cache_entries=0)
        comparator = build_comparator(settings)
    except (ValidationError, ValueError, ImportError) as exc:
        print(f"arena-judge bench judge: {exc}", file=sys.stderr)
        return 2
    if not args.pairs and args.protocol == "suite":
        return _bench_judge_suite(args, settings, comparator)
    reference: judge.ReferenceMode = args.reference or "worked"
    if args.pairs:
        pairs = judge.load_pairs_jsonl(args.pairs)
        title = f"{settings.comparator} judge on {args.pairs}"
    else:
        pairs = judge.gsm8k_pairs(args.data or judge.DEFAULT_GSM8K_PATH, reference=reference)
        title = (f"{settings.comparator} judge on GSM8K (correct, incorrect) pairs, reference: "
                 f"{reference}, final-answer lines removed, <<...>> stripped")
    if args.limit:
        pairs = pairs[: args.limit]
    from .errors import JudgeError

    try:
        result = asyncio.run(_evaluate(comparator, pairs, batch_size=args.batch_size,
                                       progress=not args.json))
    except JudgeError as exc:
        print(f"arena-judge bench judge: {exc}", file=sys.stderr)
        return 1
    result["reference"] = None if args.pairs else reference
    result["comparator"] = settings.comparator
    if settings.judge_model:
        result["model"] = settings.judge_model
    return _emit(result, judge.format_report(result, title=title), args.json)


def _bench_judge_suite(args: argparse.Namespace, settings, comparator) -> int:
    from .bench import judge, judge_suite
    from .errors import JudgeError

    problems = judge_suite.load_problems(args.data or judge.DEFAULT_GSM8K_PATH,
                                         sample=args.sample, seed=args.seed)
    modes = (args.reference,) if args.reference else judge.REFERENCE_MODES

    async def judged() -> dict:
        try:
            if hasattr(comparator, "start"):  # load the model before the clock starts
                await comparator.start()
            return await judge_suite.run(comparator, problems, modes=modes, seed=args.seed,
                                         batch_size=args.batch_size, progress=not args.json)
        finally:
            await comparator.aclose()

    try:
        result = asyncio.run(judged())
    except JudgeError as exc:
        print(f"arena-judge bench judge: {exc}", file=sys.stderr)
        return 1
    result.update(comparator=settings.comparator, sample=args.sample, seed=args.seed)
    if settings.judge_model:
        result["model"] = settings.judge_model
    title = (f"{settings.comparator} judge, GSM8K suite: {result['n_problems']} problems"
             f"{f' (sample, seed {args.seed})' if args.sample else ''}, "
             f"{result['n_comparisons']} comparisons")
    return _emit(result, judge_suite.format_table(result, title=title), args.json)


def _bench_backend(args: argparse.Namespace) -> int:
    from .bench import backend

    try:
        settings = _judge_settings(args, comparator="vllm", judge_model=backend.TINY,
                                   design=args.design, order=args.order)
    except (ValidationError, ValueError) as exc:
        print(f"arena-judge bench backend: {exc}", file=sys.stderr)
        return 2
    from .errors import JudgeError

    try:
        result = backend.run(settings=settings, groups=args.groups,
                             concurrency=args.concurrency, data=args.data,
                             progress=not args.json)
    except (JudgeError, ImportError) as exc:
        print(f"arena-judge bench backend: {exc}", file=sys.stderr)
        return 1
    return _emit(result, backend.format_table(result), args.json)


def _bench_cost(args: argparse.Namespace) -> int:
    from .bench import backend, cost

    try:
        settings = _judge_settings(args, comparator="vllm", judge_model=backend.TINY)
    except (ValidationError, ValueError) as exc:
        print(f"arena-judge bench cost: {exc}", file=sys.stderr)
        return 2
    from .errors import JudgeError

    try:
        result = cost.run(args.sizes, settings=settings, groups=args.groups,
                          trials=args.trials, position_bias=args.position_bias,
                          soft=args.soft, seed=args.seed, data=args.data,
                          progress=not args.json)
    except (JudgeError, ImportError, ValueError) as exc:
        print(f"arena-judge bench cost: {exc}", file=sys.stderr)
        return 1
    return _emit(result, cost.format_table(result), args.json)


def _bench_serve(args: argparse.Namespace) -> int:
    from .bench import serve

    result = serve.run(target=args.target, groups=args.groups, group_size=args.group_size,
                       trace_bytes=args.trace_bytes, concurrency=args.concurrency,
                       progress=not args.json)
    return _emit(result, serve.format_table(result), args.json)


def _bench_fairness(args: argparse.Namespace) -> int:
    from .bench import fairness

    try:
        result = fairness.run(
            policy=args.policy, groups=args.groups, rate=args.rate,
            flood_factor=args.flood_factor, group_size=args.group_size,
            trace_bytes=args.trace_bytes, base_ms=args.base_ms, per_item_ms=args.per_item_ms,
            max_batch=args.max_batch, batches_in_flight=args.batches_in_flight,
            flood_max_in_flight=args.flood_max_in_flight, seed=args.seed,
            progress=not args.json,
        )
    except ValueError as exc:
        print(f"arena-judge bench fairness: {exc}", file=sys.stderr)
        return 2
    return _emit(result, fairness.format_table(result), args.json)


def _bench_abuse(args: argparse.Namespace) -> int:
    from .bench import abuse

    attacks = args.attacks.split(",") if args.attacks else None
    try:
        result = abuse.run(attacks, scale=args.scale, progress=not args.json)
    except (ValueError, RuntimeError) as exc:
        print(f"arena-judge bench abuse: {exc}", file=sys.stderr)
        return 2
    return _emit(result, abuse.format_table(result), args.json)


def _bench_learn(args: argparse.Namespace) -> int:
    from .bench.learn import bench, rl, summary

    config = rl.Config(**{k: v for k, v in (("steps", args.steps), ("prompts", args.prompts),
                                            ("group_size", args.group_size), ("lr", args.lr))
                          if v is not None})
    try:
        result = bench.run(seeds=args.seeds, arm_names=tuple(args.arms.split(",")),
                           config=config, target=args.target, json_path=args.json,
                           plot_path=args.plot, workers=args.workers,
                           first_seed=args.first_seed, log=bench.main_log)
    except ValueError as exc:
        print(f"arena-judge bench learn: {exc}", file=sys.stderr)
        return 2
    print(summary.format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena-judge", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the judge server (gRPC and HTTP)")
    _add_settings_flags(serve)
    serve.set_defaults(func=_serve)

    config = commands.add_parser("config", help="print every server option and its default")
    config.set_defaults(func=_config)

    hash_key = commands.add_parser(
        "hash-key", help="print the SHA-256 digest of an API key read from standard input"
    )
    hash_key.set_defaults(func=_hash_key)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench", required=True
    )
    t = bench.add_parser("tournaments", help="tournament designs on the simulated judge")
    t.add_argument("--sizes", type=_parse_ints, default=(8, 16, 32), help="e.g. 8,16,32")
    t.add_argument("--trials", type=int, default=300)
    t.add_argument("--position-bias", type=float, default=0.3, help="judge's bias (logit)")
    t.add_argument("--noise", type=float, default=0.0, help="sd of the judge's logit noise")
    t.add_argument("--spread", type=float, default=1.0, help="sd of latent strengths")
    t.add_argument("--soft", action="store_true", help="soft verdicts instead of Bernoulli")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--drift", type=int, default=0, metavar="RUNS",
                   help="also anchor pools under a drifting policy, RUNS runs of 20 steps "
                   "(sizes up to 16)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_bench_tournaments)

    f = bench.add_parser("fit", help="the Bradley-Terry fitter against choix")
    f.add_argument("--sizes", type=_parse_ints, default=(16, 32, 64))
    f.add_argument("--graphs", type=int, default=20, help="random graphs per size")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_bench_fit)

    j = bench.add_parser("judge", help="judge quality on labelled pairs (default: GSM8K), "
                         "any judge (--comparator, --judge-*)")
    j.add_argument("--protocol", choices=("suite", "real"), default="suite",
                   help="suite: every protocol (masked answers, planted errors, gaming probes, "
                   "dead-group ties) in one table; real: the old agreement on (correct, "
                   "incorrect) pairs")
    j.add_argument("--reference", choices=("worked", "answer", "none"), default=None,
                   help="reference mode (default: all three for the suite, worked for real)")
    j.add_argument("--sample", type=int, default=0,
                   help="suite: judge N problems drawn with --seed (default: all)")
    j.add_argument("--seed", type=int, default=0, help="suite: sampling and variant seed")
    j.add_argument("--data", default=None, help="model_solutions.jsonl (default: ../shared)")
    j.add_argument("--pairs", default=None, help="a JSONL file of labelled pairs instead")
    j.add_argument("--limit", type=int, default=0, help="judge only the first N pairs")
    j.add_argument("--batch-size", type=int, default=256, help="comparisons per judge call")
    j.add_argument("--json", action="store_true")
    _add_settings_flags(j, only="judge_")
    j.set_defaults(func=_bench_judge)

    b = bench.add_parser("backend", help="an LLM judge behind the server: comparisons/s, "
                         "server overhead, prefix cache (default: vLLM, tiny random model)")
    b.add_argument("--groups", type=int, default=64, help="dead GSM8K groups to rank")
    b.add_argument("--concurrency", type=int, default=16, help="groups in flight")
    b.add_argument("--design", default="adaptive", help="tournament design of the run")
    b.add_argument("--order", default="random", help="order policy: random or both")
    b.add_argument("--data", default=None, help="model_solutions.jsonl (default: ../shared)")
    b.add_argument("--json", action="store_true")
    _add_settings_flags(b, only="judge_")
    b.set_defaults(func=_bench_backend)

    c = bench.add_parser("cost", help="uncached prompt tokens per group to reach live's "
                         "Kendall tau: live, round-robin and the default design on a real vLLM "
                         "engine (tiny model) with simulated verdicts")
    c.add_argument("--sizes", type=_parse_ints, default=(8, 16), help="group sizes, e.g. 8,16")
    c.add_argument("--groups", type=int, default=8, help="GSM8K-like groups per design (engine)")
    c.add_argument("--trials", type=int, default=500, help="simulator trials per curve point")
    c.add_argument("--position-bias", type=float, default=0.3, help="judge's bias (logit)")
    c.add_argument("--soft", action="store_true", help="soft verdicts instead of Bernoulli")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data", default=None, help="model_solutions.jsonl (default: ../shared)")
    c.add_argument("--json", action="store_true")
    _add_settings_flags(c, only="judge_")
    c.set_defaults(func=_bench_cost)

    s = bench.add_parser("serve", help="server groups/s and latency with an instant judge")
    s.add_argument("--target", default=None, help="host:grpc_port,http_url of a running server")
    s.add_argument("--groups", type=int, default=2000)
    s.add_argument("--group-size", type=int, default=16)
    s.add_argument("--trace-bytes", type=int, default=1024)
    s.add_argument("--concurrency", type=int, default=64)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_bench_serve)

    fair = bench.add_parser("fairness", help="a quiet run's p99 latency alone and under a "
                            "flooding run, fair scheduler against FIFO, simulated GPU judge")
    fair.add_argument("--policy", choices=("fair", "fifo", "both"), default="both")
    fair.add_argument("--groups", type=int, default=300, help="quiet groups per phase")
    fair.add_argument("--rate", type=float, default=10.0, help="quiet groups/s")
    fair.add_argument("--flood-factor", type=float, default=10.0, help="flood rate / quiet rate")
    fair.add_argument("--flood-max-in-flight", type=int, default=256,
                      help="client-side cap on the flood's groups in flight")
    fair.add_argument("--group-size", type=int, default=16)
    fair.add_argument("--trace-bytes", type=int, default=256)
    fair.add_argument("--base-ms", type=float, default=20.0, help="judge time per batch")
    fair.add_argument("--per-item-ms", type=float, default=0.08,
                      help="judge time per comparison of a batch")
    fair.add_argument("--max-batch", type=int, default=256, help="comparisons per batch")
    fair.add_argument("--batches-in-flight", type=int, default=1, help="batches at the judge")
    fair.add_argument("--seed", type=int, default=0)
    fair.add_argument("--json", action="store_true")
    fair.set_defaults(func=_bench_fairness)

    ab = bench.add_parser("abuse", help="issue 14's attacks on a live server: /healthz, a "
                          "bystander's latency, RSS growth and the answers while each runs")
    ab.add_argument("--attacks", default=None, help="comma-separated (default: all)")
    ab.add_argument("--scale", choices=("small", "full"), default="small",
                    help="small: 3 x 20 MB bodies; full: the issue's 3 x 200 MB")
    ab.add_argument("--json", action="store_true")
    ab.set_defaults(func=_bench_abuse)

    from .bench.learn import ARMS, TARGET  # no torch: the names only

    learn = bench.add_parser("learn", help="RL on addition chains from a warm start, every arm "
                             "side by side (grpo, dapo, arena, controls): steps to target")
    learn.add_argument("--seeds", type=int, default=5)
    learn.add_argument("--first-seed", type=int, default=0, help="seeds from this one on")
    learn.add_argument("--steps", type=int, default=None, help="RL steps per run")
    learn.add_argument("--prompts", type=int, default=None, help="groups per step")
    learn.add_argument("--group-size", type=int, default=None, help="traces per group")
    learn.add_argument("--lr", type=float, default=None, help="Adam learning rate, every arm")
    learn.add_argument("--arms", default=",".join(ARMS), help="comma-separated")
    learn.add_argument("--workers", type=int, default=1, help="runs at once (processes)")
    learn.add_argument("--target", type=float, default=TARGET, help="held-out accuracy")
    learn.add_argument("--json", default=None, metavar="PATH", help="write the result here")
    learn.add_argument("--plot", default=None, metavar="PATH", help="learning curves (PNG)")
    learn.set_defaults(func=_bench_learn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
