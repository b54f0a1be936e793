"""Run every benchmark and print one table: each figure, its raw primitive, and the ratio.

    python -m bench                 # small sizes, a few minutes
    python -m bench --only keys     # one benchmark

The primitives (PyJWT sign/verify, asyncpg insert, RabbitMQ publish with confirms) are measured
first, in the same run, on the same machine. Each benchmark runs as its own process with its
default (small) size and reports through ``bench.report.result``; its own output is kept in
``bench-<name>.log`` beside the current directory for the details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
from pathlib import Path

from bench.primitives import measure
from bench.report import PREFIX

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("keys", "issuer", "outbox", "revocation", "propagation", "gateway")


def run_benchmark(name: str, log_dir: Path) -> list[dict[str, object]]:
    module = ROOT / "bench" / f"bench_{name}.py"
    if not module.exists():
        return [{"figure": f"{name}: no benchmark yet", "value": float("nan"), "unit": ""}]
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.bench_{name}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    (log_dir / f"bench-{name}.log").write_text(proc.stdout + proc.stderr)
    rows = [
        json.loads(line[len(PREFIX) :])
        for line in proc.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    if proc.returncode != 0:
        rows.append(
            {
                "figure": f"{name}: FAILED (exit {proc.returncode})",
                "value": float("nan"),
                "unit": "",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every Tessera benchmark")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    parser.add_argument("--logs", type=Path, default=Path("."))
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}",
        flush=True,
    )
    primitives = asyncio.run(measure())
    rows = []
    for name in args.only or BENCHMARKS:
        print(f"running bench_{name} …", file=sys.stderr, flush=True)
        rows += run_benchmark(name, args.logs)
    print(f"\n{'figure':<58}{'value':>12} {'unit':<8}{'primitive':<28}{'raw':>10}{'ratio':>7}")
    for name, value in primitives.items():
        print(f"{'raw ' + name:<58}{value:>12,.0f} {'/s':<8}")
    for row in rows:
        primitive = row.get("primitive")
        raw = primitives.get(str(primitive)) if primitive else None
        value = float(row["value"])  # type: ignore[arg-type]
        ratio = f"{value / raw:>7.2f}" if raw else ""
        raw_text = f"{raw:>10,.0f}" if raw else ""
        figure, unit = str(row["figure"]), str(row["unit"])
        print(f"{figure:<58}{value:>12,.2f} {unit:<8}{primitive or '':<28}{raw_text:>10}{ratio}")


if __name__ == "__main__":
    main()
