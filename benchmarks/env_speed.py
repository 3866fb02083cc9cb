"""Speed of the self-healing envs and of DQN training on them, with CartPole-v1 as reference.

Each figure is measured in a fresh process pinned to one core, three times; the median is
reported, with the CPU time of the same runs beside the wall time (on a shared machine
the wall figure also counts time the process waited for its core). Env steps take the
no-op 95% of the time and a random unmasked action otherwise (the env's own generator
path: encode, mask, decode, safety gate, twin). CartPole-v1 runs
random actions in the same run, so the ratio does not depend on the machine. DQN training
speed is stable-baselines3's DQN with the default network and hyper-parameters on 100 hosts,
timed after ``learning_starts`` so every step includes its share of gradient updates.
Prints JSON.

Usage: python benchmarks/env_speed.py [--steps 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {
    "env_100_hosts_steps_per_s": 10_000.0,
    "env_1000_hosts_steps_per_s": 2_000.0,
    "dqn_train_100_hosts_steps_per_s": 1_500.0,
}


def child(what: str, steps: int) -> tuple[float, float]:
    """Steps per second of one measurement in this process: by wall time and by CPU time."""
    import gymnasium as gym
    import numpy as np

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if what == "cartpole":
        env = gym.make("CartPole-v1")
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, 2, steps)
        t0, c0 = time.perf_counter(), time.process_time()
        for a in actions:
            _, _, term, trunc, _ = env.step(int(a))
            if term or trunc:
                env.reset()
        return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)
    import envs

    if what.startswith("env"):
        hosts = int(what.split("-")[1])
        env = gym.make(envs.env_id("mixed"), hosts=hosts, max_episode_steps=10**9)
        _, info = env.reset(seed=0)
        rng = np.random.default_rng(0)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            a = 0
            if rng.random() < 0.05:
                a = int(rng.choice(np.flatnonzero(info["action_mask"])))
            _, _, _, _, info = env.step(a)
        return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)
    if what == "dqn":
        import torch

        from agents.dqn import DqnParams, make_dqn

        torch.set_num_threads(1)
        env = gym.make(envs.env_id("mixed"), hosts=100)
        params = DqnParams()
        model = make_dqn(env, params, seed=0)
        model.learn(params.learning_starts + 100)
        t0, c0 = time.perf_counter(), time.process_time()
        model.learn(steps, reset_num_timesteps=False)
        return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)
    raise ValueError(what)


def measure(what: str, steps: int, repeats: int) -> dict[str, Any]:
    """Medians (wall and CPU) over fresh processes."""
    runs, cpu_runs = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", what, "--steps", str(steps)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )
        wall, cpu = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
        runs.append(wall)
        cpu_runs.append(cpu)
    return {"median": statistics.median(runs), "runs": runs,
            "cpu_median": statistics.median(cpu_runs)}


def main() -> None:
    """Run every measurement and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        print(*child(args.child, args.steps))
        return
    load0 = os.getloadavg()[0]
    cart = measure("cartpole", args.steps * 4, args.repeats)
    e100 = measure("env-100", args.steps, args.repeats)
    e1000 = measure("env-1000", max(args.steps // 5, 200), args.repeats)
    dqn = measure("dqn", args.steps, args.repeats)
    figures = {
        "cartpole_v1_steps_per_s": cart["median"],
        "env_100_hosts_steps_per_s": e100["median"],
        "env_1000_hosts_steps_per_s": e1000["median"],
        "dqn_train_100_hosts_steps_per_s": dqn["median"],
    }
    report = {
        **{k: round(v, 1) for k, v in figures.items()},
        "env_100_hosts_over_cartpole": round(e100["median"] / cart["median"], 4),
        "runs": {"cartpole": cart["runs"], "env_100": e100["runs"], "env_1000": e1000["runs"],
                 "dqn": dqn["runs"]},
        "cpu_time_steps_per_s": {
            "cartpole_v1": round(cart["cpu_median"], 1),
            "env_100_hosts": round(e100["cpu_median"], 1),
            "env_1000_hosts": round(e1000["cpu_median"], 1),
            "dqn_train_100_hosts": round(dqn["cpu_median"], 1),
        },
        "targets": TARGETS,
        "met": {k: figures[k] >= t for k, t in TARGETS.items()},
        "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
