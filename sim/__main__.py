"""Command line: ``python -m sim run --scenario NAME --hosts N --hours H --seed S``.

Prints one JSON object as the last line of standard output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

from sim.errors import ConfigError
from sim.scenarios import SCENARIOS, make_config
from sim.twin import Twin


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario on the twin")
    run.add_argument("--scenario", default="mixed", help=f"one of {sorted(SCENARIOS)}")
    run.add_argument("--hosts", type=int, default=100)
    run.add_argument("--hours", type=float, default=24.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--tick-s", type=float, default=10.0, help="physics tick, seconds")
    run.add_argument("--events-out", default=None, help="write the event log here (JSONL)")
    run.add_argument(
        "--trace", default=None,
        help="replay this CSV as the load shape (NAB series or request-arrival trace)",
    )
    sub.add_parser("scenarios", help="list the registered scenarios")
    return parser


def run(args: argparse.Namespace) -> dict[str, object]:
    """Build the scenario, run it, and return the summary."""
    if not (math.isfinite(args.hours) and args.hours > 0):
        raise ConfigError(f"--hours must be positive, got {args.hours}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {args.seed}")
    config = make_config(args.scenario, args.hosts, tick_s=args.tick_s,
                         telemetry_interval_s=max(10.0, args.tick_s))
    if args.trace:
        workload = dataclasses.replace(config.workload, trace=args.trace)
        config = dataclasses.replace(config, workload=workload)
    twin = Twin(config, seed=args.seed)
    wall0 = time.perf_counter()
    twin.advance(args.hours * 3600.0)
    wall_s = time.perf_counter() - wall0
    summary = twin.summary()
    if args.events_out:
        twin.log.write_jsonl(args.events_out)
    return {
        "scenario": args.scenario,
        "hosts": args.hosts,
        "seed": args.seed,
        "simulated_seconds": summary.pop("sim_seconds"),
        "wall_seconds": round(wall_s, 3),
        "sim_s_per_wall_s": round(args.hours * 3600.0 / wall_s, 1),
        **summary,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; config errors print one line and exit with status 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "scenarios":
            result: dict[str, object] = {n: s.description for n, s in SCENARIOS.items()}
        else:
            result = run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
