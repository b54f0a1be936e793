"""What mutual TLS on the internal plane costs: the same workloads through two whole stacks in
one run, one from this checkout (TLS between services) and one from a baseline checkout whose
internal plane is plain HTTP.

    git worktree add /tmp/tessera-baseline <commit before mutual TLS>   # with its own .venv
    python -m bench.bench_internal_tls --baseline /tmp/tessera-baseline

The machine is shared and noisy, so the two stacks are measured in alternating slices
(``--rounds`` of ``--seconds`` each, baseline first then TLS, for every figure) and the figure is
the median slice of each, with their ratio. Both stacks stay up for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from bench.bench_gateway import Workload, load
from bench.report import result
from bench.stack import dev_stack


async def run(args: argparse.Namespace) -> None:
    baseline = Path(args.baseline).resolve()
    python = str(baseline / ".venv" / "bin" / "python")
    if not Path(python).exists():
        sys.exit(f"{python} not found: give the baseline checkout its own venv")
    async with AsyncExitStack() as stacks:
        clear = await stacks.enter_async_context(dev_stack(baseline, python, tls=False))
        tls = await stacks.enter_async_context(dev_stack())
        work = {"clear": Workload(clear, args.concurrency), "tls": Workload(tls, args.concurrency)}
        for w in work.values():
            await w.fill(args.list_size)
        figures = {
            f"Databricks lists ({args.list_size} tokens)": lambda w: w.databricks_list,
            "Databricks creates": lambda w: w.databricks_create,
            "Tapis create_token, access only": lambda w: w.tapis_create(False),
        }
        print(
            f"concurrency {args.concurrency}, {args.rounds} alternating slices of {args.seconds} s"
        )
        for name, call in figures.items():
            rates: dict[str, list[float]] = {"clear": [], "tls": []}
            for _ in range(args.rounds):
                for which, w in work.items():
                    rates[which].append(
                        await load(f"  {name} [{which}]", call(w), args.seconds, args.concurrency)
                    )
            before, after = statistics.median(rates["clear"]), statistics.median(rates["tls"])
            print(
                f"{name:<40} clear {before:8,.0f}/s   mTLS {after:8,.0f}/s"
                f"   mTLS/clear {after / before:5.2f}",
                flush=True,
            )
            result(f"{name} with internal mTLS / clear", after / before, "ratio", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="checkout with a clear internal plane")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--list-size", type=int, default=10)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
