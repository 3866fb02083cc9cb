"""Speed of the LSTM failure predictor: training throughput and single-window latency.

Training: windows per second of full training steps (forward, backward, Adam) of the default
model (3 layers x 128 units, 10 features) on sequences of 60 steps in batches of 256, with
2 torch threads, after warm-up steps. Inference: median and p99 wall time of
``predict_proba`` on one window (the streaming case), after warm-up. A reference measured in
the same run puts the figures in context: one forward pass of a 1-layer, 32-unit LSTM on the
same batch (training) and the same single window (inference).

Random inputs are used: speed does not depend on the values. Prints one JSON object.

Usage: python benchmarks/predictor_speed.py [--steps 10] [--calls 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"train_windows_per_s": 800.0, "infer_single_median_ms": 2.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=60)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import numpy as np
    import torch
    from torch import nn

    from agents.failure_predictor import LSTMFailurePredictor, PredictorConfig

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cfg = PredictorConfig(seq_len=args.seq_len, batch_size=args.batch)
    # The model's scaled inputs per row: the ten levels on two scales and their step changes.
    width = LSTMFailurePredictor(cfg).model.lstm.input_size
    x = torch.from_numpy(rng.standard_normal((args.batch, args.seq_len, width)).astype(np.float32))
    y = torch.from_numpy((rng.random(args.batch) < 0.2).astype(np.float32))

    def train_speed(precision: str) -> float:
        """Windows/s of the predictor's own training step in ``precision``, after warm-up."""
        pred = LSTMFailurePredictor(
            PredictorConfig(seq_len=args.seq_len, batch_size=args.batch, precision=precision)
        )
        opt = torch.optim.Adam(pred.model.parameters(), lr=pred.cfg.lr)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))
        pred.model.train()
        for _ in range(2):
            pred.train_step(x, y, opt, loss_fn)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            pred.train_step(x, y, opt, loss_fn)
        return args.steps * args.batch / (time.perf_counter() - t0)

    train_wps = train_speed(cfg.precision)
    fp32_wps = train_speed("fp32")

    ref = nn.LSTM(width, 32, num_layers=1, batch_first=True)
    with torch.no_grad():
        ref(x)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            ref(x)
        ref_fwd_wps = args.steps * args.batch / (time.perf_counter() - t0)

    pred = LSTMFailurePredictor(cfg)
    one = rng.standard_normal((1, args.seq_len, cfg.n_features)).astype(np.float32)
    for _ in range(20):
        pred.predict_proba(one)
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        pred.predict_proba(one)
        times.append(time.perf_counter() - t0)
    times.sort()
    ref_times = []
    xt = torch.from_numpy(np.concatenate([one] * (width // cfg.n_features), axis=-1))
    with torch.no_grad():
        for _ in range(args.calls):
            t0 = time.perf_counter()
            ref(xt)
            ref_times.append(time.perf_counter() - t0)
    result = {
        "benchmark": "predictor_speed",
        "threads": args.threads,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "model": {"layers": cfg.layers, "hidden": cfg.hidden, "features": cfg.n_features},
        "train_precision": cfg.precision,
        "train_dtype": str(cfg.train_dtype()).removeprefix("torch."),
        "train_windows_per_s": round(train_wps, 1),
        "train_windows_per_s_fp32": round(fp32_wps, 1),
        "train_steps": args.steps,
        "infer_single_median_ms": round(1000 * statistics.median(times), 3),
        "infer_single_p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 3),
        "reference_small_lstm_forward_windows_per_s": round(ref_fwd_wps, 1),
        "reference_small_lstm_single_median_ms": round(1000 * statistics.median(ref_times), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "targets": TARGETS,
        "meets_targets": {
            "train_windows_per_s": train_wps >= TARGETS["train_windows_per_s"],
            "infer_single_median_ms": 1000 * statistics.median(times)
            <= TARGETS["infer_single_median_ms"],
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
