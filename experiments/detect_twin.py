"""``python -m experiments.detect dataset=twin``: LSTM failure predictor against the baselines.

Reads the data set from ``twin.cache_dir`` when one built with the same fleet spec and seeds
is there, else runs the twin and writes it (format: :mod:`agents.failure_data`). Trains the
LSTM and the baselines on the same split, picks each model's threshold on the validation
windows (see :func:`event_threshold`: the middle of the thresholds with the best event
recall at precision >= 0.90 on failures with warning signs), and reports
the held-out hosts' figures per model.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from agents import failure_data as fd
from agents.failure_eval import (
    baseline_scores,
    event_metrics,
    fit_baselines,
    split_windows,
    window_features,
)
from agents.failure_predictor import LSTMFailurePredictor, PredictorConfig

if TYPE_CHECKING:
    from experiments.detect import TwinDataSchema

MIN_PRECISION = 0.90


def event_threshold(
    ds: fd.FailureDataset,
    windows: fd.Windows,
    idx: np.ndarray,
    scores: np.ndarray,
    horizon_s: float,
) -> float:
    """Threshold in the middle of those with the best validation event recall at precision >= 0.90.

    Candidates are the validation scores' quantiles 0.5, 0.505, ..., 1.0. Among those whose
    alarm precision is at least 0.90, the ones with the highest event recall form a band; the
    median candidate of that band is returned. Taking its edge instead (the lowest threshold,
    for the longest lead) leaves no margin: validation and test precision differ by a few
    hundredths, so a threshold just above 0.90 on validation can fall below it on test.
    With no candidate reaching 0.90, the threshold lies above every score (no alarms).
    """
    candidates = np.unique(np.quantile(scores, np.linspace(0.5, 1.0, 101)))
    feasible: list[tuple[float, float]] = []
    for thr in candidates:
        m = event_metrics(ds, windows, idx, scores, float(thr), horizon_s, warning=True)
        if m["alarm_precision"] >= MIN_PRECISION:
            feasible.append((float(np.nan_to_num(m["event_recall"])), float(thr)))
    if not feasible:
        return float(np.max(scores)) + 1e-12
    best_recall = max(r for r, _ in feasible)
    band = [thr for r, thr in feasible if r == best_recall]
    return band[(len(band) - 1) // 2]


def dataset_for(schema: TwinDataSchema, seed: int) -> tuple[fd.FailureDataset, Path]:
    """The cached data set for these settings, built when missing or different."""
    spec = fd.FleetSpec(
        hosts=schema.hosts, days=schema.days, tick_s=schema.tick_s, step_s=schema.step_s
    )
    seeds = tuple(seed * 1000 + i for i in range(schema.fleets))
    folder = Path(schema.cache_dir) / f"h{spec.hosts}_d{spec.days:g}_f{schema.fleets}_s{seed}"
    try:
        ds = fd.load(folder)
        if ds.spec == spec and ds.seeds == seeds:
            return ds, folder
    except fd.FailureDataError:
        pass
    total_s = spec.n_steps * spec.step_s * len(seeds)
    with tqdm(
        total=total_s,
        unit="sim-s",
        unit_scale=True,
        desc="twin fleets",
        file=sys.stderr,
        mininterval=1.0,
    ) as bar:
        ds = fd.build_dataset(spec, seeds, progress=bar.update)
    fd.save(ds, folder)
    return ds, folder


def run_twin(
    schema: TwinDataSchema,
    seed: int,
    log_metric: Callable[[str, float, int], None] | None = None,
) -> dict[str, Any]:
    """Build / load the data set, train and evaluate every model; returns the result object."""
    torch.set_num_threads(2)
    ds, folder = dataset_for(schema, seed)
    horizon_s = schema.horizon_h * 3600.0
    windows = fd.make_windows(ds, schema.seq_len, horizon_s)
    split = split_windows(ds, windows, horizon_s, schema.test_host_share, seed)
    # Windows whose next failure within the horizon gives no warning carry no signal to learn:
    # they are left out of training and validation (and reported separately on test).
    silent_pos = windows.label & ~windows.warning
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    train_idx = split.train[~silent_pos[split.train]]
    pos, neg = train_idx[windows.label[train_idx]], train_idx[~windows.label[train_idx]]
    n_neg = min(neg.size, int(schema.neg_per_pos * pos.size))
    train_idx = np.sort(np.concatenate([pos, rng.choice(neg, size=n_neg, replace=False)]))
    val_idx = split.val[~silent_pos[split.val]]
    index = {"train": train_idx, "val": val_idx, "test": split.test}
    x = {k: fd.gather(ds, windows, v, schema.seq_len) for k, v in index.items()}
    y = {k: windows.label[v] for k, v in index.items()}

    scores_val: dict[str, np.ndarray] = {}
    scores_test: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    cfg = PredictorConfig(
        hidden=schema.hidden,
        layers=schema.layers,
        seq_len=schema.seq_len,
        max_epochs=schema.epochs,
        seed=seed,
        precision=schema.precision,
    )
    lstm = LSTMFailurePredictor(cfg)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if log_metric is not None:
            for k, v in metrics.items():
                log_metric(f"lstm_{k}", v, epoch)

    lstm.fit(x["train"], y["train"], x["val"], y["val"], on_epoch=on_epoch)
    timings["lstm_train_s"] = time.perf_counter() - t0
    lstm.save(folder / f"lstm_seed{seed}")
    scores_val["lstm"] = lstm.predict_proba(x["val"])
    scores_test["lstm"] = lstm.predict_proba(x["test"])
    f_train = window_features(x["train"])
    t0 = time.perf_counter()
    baselines = fit_baselines(f_train, y["train"], seed)
    timings["baselines_train_s"] = time.perf_counter() - t0
    f_val, f_test = window_features(x["val"]), window_features(x["test"])
    for name, model in baselines.items():
        scores_val[name] = baseline_scores(model, f_val)
        scores_test[name] = baseline_scores(model, f_test)

    models: dict[str, Any] = {}
    for name in scores_test:
        thr = event_threshold(ds, windows, val_idx, scores_val[name], horizon_s)
        models[name] = {
            "threshold": thr,
            "warning": event_metrics(
                ds, windows, split.test, scores_test[name], thr, horizon_s, warning=True
            ),
            "no_warning": event_metrics(
                ds, windows, split.test, scores_test[name], thr, horizon_s, warning=False
            ),
        }
    best_baseline_pr_auc = max(models[n]["warning"]["pr_auc"] for n in baselines)
    f = ds.failures
    lstm_w = models["lstm"]["warning"]
    metrics = {
        "lstm_pr_auc": lstm_w["pr_auc"],
        "best_baseline_pr_auc": best_baseline_pr_auc,
        "lstm_event_recall": lstm_w["event_recall"],
        "lstm_alarm_precision": lstm_w["alarm_precision"],
        "lstm_median_lead_h": lstm_w["median_lead_h"],
        "lstm_no_warning_event_recall": models["lstm"]["no_warning"]["event_recall"],
        **timings,
    }
    return {
        "dataset": "twin",
        "cache": str(folder),
        "horizon_h": schema.horizon_h,
        "fleet_spec": dataclasses.asdict(ds.spec),
        "failures": {
            "with_warning": int(f.warning.sum()),
            "without_warning": int((~f.warning).sum()),
            "by_kind": {k: int(np.sum(f.kind == k)) for k in np.unique(f.kind)},
        },
        "windows": {k: int(v.size) for k, v in index.items()},
        "positives": {k: int(v.sum()) for k, v in y.items()},
        "test_hosts": int(split.test_hosts.size),
        "models": models,
        "metrics": metrics,
        "must_show": {
            "recall_ge_0.95": bool(lstm_w["event_recall"] >= 0.95),
            "precision_ge_0.90": bool(lstm_w["alarm_precision"] >= 0.90),
            "median_lead_ge_24h": bool(lstm_w["median_lead_h"] >= 24.0),
            "lstm_pr_auc_ge_best_baseline": bool(lstm_w["pr_auc"] >= best_baseline_pr_auc),
        },
    }
