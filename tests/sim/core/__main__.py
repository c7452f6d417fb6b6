"""Run many simulation seeds: `python -m tests.sim.core --seeds 5000`.

A failure prints the seed and the command that replays it."""

from __future__ import annotations

import argparse
import sys

from .sim import SafetyViolation, run_seed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.core")
    p.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--nodes", type=int, choices=(3, 5, 7), help="force a cluster size")
    p.add_argument("--fault-steps", type=int, help="steps of faults before healing")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    failed = []
    for seed in seeds:
        try:
            stats = run_seed(seed, args.nodes, args.fault_steps)
        except SafetyViolation as e:
            print(f"FAIL {e}", flush=True)
            failed.append(seed)
            continue
        if args.seed is not None:
            print(f"seed {seed}: {stats}")
    print(f"{len(seeds) - len(failed)}/{len(seeds)} seeds passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
