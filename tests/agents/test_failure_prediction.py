"""Twin failure data sets, the LSTM failure predictor and the baselines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from agents import failure_data as fd
from agents.failure_eval import (
    ThresholdRule,
    baseline_scores,
    event_leads,
    event_metrics,
    fit_baselines,
    pr_auc_by_onset,
    pr_auc_items,
    split_windows,
    warning_begun,
    window_features,
)
from agents.failure_predictor import (
    LSTMFailurePredictor,
    PredictorConfig,
    PredictorError,
    StreamingPredictor,
)

SMALL = fd.FleetSpec(
    hosts=6,
    days=1.0,
    tick_s=60.0,
    step_s=600.0,
    warning_scale=1.0,
    warning_rate_per_day=60.0,
    silent_rate_per_day=20.0,
)


@pytest.fixture(scope="module")
def small_ds() -> fd.FailureDataset:
    return fd.build_dataset(SMALL, (3, 4))


def test_fleet_is_deterministic_and_seed_dependent(small_ds: fd.FailureDataset) -> None:
    """The same seeds rebuild the same data; another seed gives other data."""
    again = fd.build_dataset(SMALL, (3, 4))
    assert np.array_equal(again.features, small_ds.features)
    assert np.array_equal(again.failures.t_s, small_ds.failures.t_s)
    other = fd.build_dataset(SMALL, (5,))
    assert not np.array_equal(other.features[0], small_ds.features[0])


def test_failures_have_ground_truth_times(small_ds: fd.FailureDataset) -> None:
    """Warning failures fail after their onset; silent ones at onset; shapes line up."""
    f = small_ds.failures
    assert small_ds.features.shape == (2, 6, SMALL.n_steps, len(fd.FEATURES))
    assert f.t_s.size > 0 and f.warning.any() and (~f.warning).any()
    assert np.all(f.t_s[f.warning] > f.onset_s[f.warning])
    assert np.all(f.t_s[~f.warning] == f.onset_s[~f.warning])
    assert np.all(np.isfinite(small_ds.features))


def test_save_load_round_trip(small_ds: fd.FailureDataset, tmp_path: Path) -> None:
    """The npz + JSON format reads back equal; a wrong format is refused."""
    fd.save(small_ds, tmp_path)
    back = fd.load(tmp_path)
    assert np.array_equal(back.features, small_ds.features)
    assert np.array_equal(back.failures.kind, small_ds.failures.kind)
    assert back.spec == small_ds.spec and back.seeds == small_ds.seeds
    meta = tmp_path / "failure_data.json"
    meta.write_text(meta.read_text().replace("novacron-failure-data/2", "other/9"))
    with pytest.raises(fd.FailureDataError, match="unknown format"):
        fd.load(tmp_path)


def test_window_labels_follow_the_horizon(small_ds: fd.FailureDataset) -> None:
    """A window is positive exactly when its host's next failure is within the horizon."""
    horizon = 3 * 3600.0
    w = fd.make_windows(small_ds, 4, horizon)
    assert np.array_equal(w.label, w.time_to_failure_s <= horizon)
    assert w.label.any() and (~w.label).any()
    x = fd.gather(small_ds, w, np.arange(5), 4)
    assert x.shape == (5, 4, len(fd.FEATURES))
    assert np.array_equal(x[0, -1], small_ds.features[w.fleet[0], w.host[0], w.end[0]])


def test_windows_without_a_known_label_are_left_out(small_ds: fd.FailureDataset) -> None:
    """A window in the last horizon is kept only when a failure follows it (else unlabelled)."""
    horizon = 3 * 3600.0
    w = fd.make_windows(small_ds, 4, horizon)
    late = small_ds.times_s[w.end] + horizon > small_ds.times_s[-1]
    assert late.any()
    assert np.all(w.label[late])
    assert np.all(w.time_to_failure_s[late] <= horizon)
    assert np.array_equal(w.horizon_in_data, ~late)


def test_split_has_no_leakage(small_ds: fd.FailureDataset) -> None:
    """Test, validation and training hosts are disjoint; shares as asked; bad shares refused."""
    w = fd.make_windows(small_ds, 4, 3 * 3600.0)
    s = split_windows(small_ds, w, 0.3, 0.25, seed=0)
    key = w.fleet * 6 + w.host
    train, val, test = (set(key[i].tolist()) for i in (s.train, s.val, s.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert (len(train), len(val), len(test)) == (6, 2, 4)
    # training keeps every window of its hosts; validation and test leave out the windows of
    # the data's last horizon, where only the positives have a label
    held_out = np.isin(key, [*val, *test])
    left_out = np.setdiff1d(np.arange(key.size), np.concatenate([s.train, s.val, s.test]))
    assert left_out.size > 0
    assert np.array_equal(left_out, np.flatnonzero(held_out & ~w.horizon_in_data))
    assert np.all(w.label[left_out])
    again = split_windows(small_ds, w, 0.3, 0.25, seed=0)
    assert np.array_equal(again.val, s.val)
    assert not np.array_equal(split_windows(small_ds, w, 0.3, 0.25, seed=1).val, s.val)
    with pytest.raises(ValueError, match="val_host_share"):
        split_windows(small_ds, w, 0.3, 0.0, seed=0)


def _toy(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 10)).astype(np.float32)
    y = rng.random(n) < 0.3
    x[y, :, 1] += np.linspace(0.0, 3.0, 8, dtype=np.float32)
    return x, y


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lstm_learns_a_trend_and_is_calibrated_deterministic_and_saveable(
    tmp_path: Path, precision: str
) -> None:
    """On a planted trend the LSTM separates classes; same seed same model; save/load equal.

    Both training precisions: bfloat16 autocast (the default where the CPU has it) and float32.
    """
    x, y = _toy(0)
    xv, yv = _toy(1)
    cfg = PredictorConfig(
        hidden=16, layers=2, seq_len=8, max_epochs=8, batch_size=32, seed=0, precision=precision
    )
    a = LSTMFailurePredictor(cfg)
    a.fit(x, y, xv, yv, progress=False)
    p = a.predict_proba(xv)
    assert np.all((p >= 0) & (p <= 1))
    assert p[yv].mean() > 0.7 > 0.3 > p[~yv].mean()
    b = LSTMFailurePredictor(cfg)
    b.fit(x, y, xv, yv, progress=False)
    assert np.array_equal(p, b.predict_proba(xv))
    a.save(tmp_path / "m")
    c = LSTMFailurePredictor.load(tmp_path / "m")
    assert np.allclose(c.predict_proba(xv), p)
    stream = StreamingPredictor(c)
    outs = [stream.update("host-0", row) for row in xv[0]]
    assert np.isnan(outs[0]) and outs[-1] == pytest.approx(p[0], rel=1e-5)
    meta_path = tmp_path / "m" / "predictor.json"
    meta = json.loads(meta_path.read_text())
    del meta["inputs"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PredictorError, match=r"input scaling 'mean-std-clip'.*retrain"):
        LSTMFailurePredictor.load(tmp_path / "m")


def test_inputs_keep_small_scales_and_bound_excursions() -> None:
    """A feature moving in its fourth decimal stays visible; huge excursions stay ordered."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 0.1, (200, 8, 10)).astype(np.float32)
    x[:, :, 0] = 12_000.0
    x[:2, -1, 0] = 0.0  # two fan stalls among 1,600 rows
    x[:, :, 6] = rng.normal(1e-4, 1e-6, (200, 8))  # disk latency, s
    y = np.zeros(200, bool)
    y[:20] = True
    pred = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=8, max_epochs=1))
    pred.fit(x, y, x, y, progress=False)
    probe = np.full((3, 8, 10), 0.5, dtype=np.float32)
    probe[:, :, 0] = [[12_000.0], [11_000.0], [0.0]]
    probe[:, :, 6] = [[1e-4], [1.05e-4], [1.2e-4]]
    z = pred.inputs(probe).numpy()[:, -1, :10]
    assert z[2, 0] < z[1, 0] < z[0, 0] and z[2, 0] > -6.0
    assert z[0, 6] < z[1, 6] < z[2, 6] and z[1, 6] - z[0, 6] > 1.0 and z[2, 6] < 6.0


def test_step_changes_reach_the_lstm_on_their_own_scale() -> None:
    """A slow trend, tiny beside the spread of levels between hosts, is a unit-sized input."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 0.1, (300, 12, 10)).astype(np.float32)
    level = rng.normal(1e-3, 2e-4, (300, 1))  # each host's own level
    slope = rng.normal(0.0, 1e-6, (300, 1))  # its drift per step: 1/200 of the level spread
    x[:, :, 6] = level + slope * np.arange(12)
    y = np.zeros(300, bool)
    y[:30] = True
    pred = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=12, max_epochs=1))
    pred.fit(x, y, x, y, progress=False)
    z = pred.inputs(x).numpy()
    level_steps = np.diff(z[:, :, 6], axis=1)
    steps = z[:, 1:, 20 + 6]
    assert np.abs(level_steps).max() < 0.05  # as the change of the scaled level: lost
    assert 0.5 < steps.std() < 1.5  # on its own scale: as large as any other input
    assert np.corrcoef(steps[:, 0], slope[:, 0])[0, 1] > 0.99  # and it is the drift
    assert np.all(z[:, 0, 20:] == 0.0)  # a window's first step has no change


def test_robust_levels_show_a_fault_that_has_just_begun() -> None:
    """Wear just begun is lost beside worn-out disks when standardised, plain when robust."""
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 0.1, (400, 8, 10)).astype(np.float32)
    x[:, :, 3] = rng.normal(1e-6, 1e-7, (400, 8))  # healthy disks' wear
    x[:30, :, 3] = np.linspace(0.05, 1.0, 30)[:, None]  # worn disks set the deviation
    y = np.zeros(400, bool)
    y[:30] = True
    pred = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=8, max_epochs=1))
    pred.fit(x, y, x, y, progress=False)
    probe = np.full((2, 8, 10), 0.5, dtype=np.float32)
    probe[:, :, 3] = [[1e-6], [0.01]]  # healthy; wear just begun
    z = pred.inputs(probe).numpy()[:, -1, :]
    assert z.shape == (2, 30)
    assert z[1, 3] - z[0, 3] < 0.1  # standardised: a tenth of a unit apart
    assert z[1, 10 + 3] - z[0, 10 + 3] > 5.0  # robust: far apart, yet bounded by asinh
    assert abs(z[0, 10 + 3]) < 3.0 and z[1, 10 + 3] < 20.0


def _toy_onset(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives of two sorts: half show a trend (their fault has begun), half look negative."""
    x, y = _toy(seed, n)
    onset = y & (np.arange(n) % 2 == 0)
    x[y & ~onset] = np.random.default_rng(seed + 100).standard_normal(
        (int(np.sum(y & ~onset)), 8, 10)
    )
    return x, y, onset


def test_onset_target_trains_a_second_head_and_keeps_the_model_as_it_was(
    tmp_path: Path,
) -> None:
    """The onset target: weight 0 is training without it; weight 1 trains a second head.

    With weight 1 the onset head learns its flag beside the label's, the failure head trains
    differently, and the saved / loaded model is the same kind as before (no extra head).
    """
    x, y, onset = _toy_onset(0)
    xv, yv, _ = _toy_onset(1)
    cfg = PredictorConfig(
        hidden=16, layers=2, seq_len=8, max_epochs=12, patience=12, batch_size=32, seed=0
    )
    plain = LSTMFailurePredictor(cfg)
    plain.fit(x, y, xv, yv, progress=False)
    off = LSTMFailurePredictor(dataclasses.replace(cfg, onset_weight=0.0))
    off.fit(x, y, xv, yv, progress=False, onset=onset)
    assert np.array_equal(off.predict_proba(xv), plain.predict_proba(xv))
    assert off.history == plain.history

    on = LSTMFailurePredictor(cfg)
    on.fit(x, y, xv, yv, progress=False, onset=onset)
    assert not np.allclose(on.predict_proba(xv), plain.predict_proba(xv))
    losses = [h["train_onset_loss"] for h in on.history]
    assert "train_onset_loss" not in plain.history[0]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]  # it learns the flag
    assert on.model.state_dict().keys() == plain.model.state_dict().keys()
    on.save(tmp_path / "m")
    again = LSTMFailurePredictor.load(tmp_path / "m")
    assert np.allclose(again.predict_proba(xv), on.predict_proba(xv))
    twice = LSTMFailurePredictor(cfg)
    twice.fit(x, y, xv, yv, progress=False, onset=onset)
    assert np.array_equal(twice.predict_proba(xv), on.predict_proba(xv))


def test_onset_flags_and_weight_are_checked() -> None:
    """Bad onset flags or weights are refused with a message naming the problem.

    Flags of the wrong length, not 0 / 1, on a negative window, or all one class; a negative
    or NaN weight.
    """
    x, y, onset = _toy_onset(0, 60)
    pred = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=8, max_epochs=1))
    bad_flags = {
        "flags for 60 training windows": onset[:-1],
        "0 / 1": np.where(onset, 2, 0),
        "labelled negative": onset | ~y,
        "both classes": np.zeros(60, bool),
    }
    for message, flags in bad_flags.items():
        with pytest.raises(PredictorError, match=message):
            pred.fit(x, y, x, y, progress=False, onset=flags)
    for weight in (-0.5, float("nan")):
        with pytest.raises(PredictorError, match="onset_weight"):
            PredictorConfig(onset_weight=weight)


def test_dropout_sits_between_lstm_layers() -> None:
    """The default 3-layer model drops 0.3 between layers; a one-layer model has no dropout."""
    assert LSTMFailurePredictor().model.lstm.dropout == pytest.approx(0.3)
    one = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=8, dropout=0.5))
    assert one.model.lstm.dropout == 0.0
    with pytest.raises(PredictorError, match="dropout"):
        PredictorConfig(dropout=1.0)


def test_predictor_refuses_bad_input() -> None:
    """Wrong shapes, NaNs and one-class labels are refused with a message."""
    x, y = _toy(0, 50)
    pred = LSTMFailurePredictor(PredictorConfig(hidden=8, layers=1, seq_len=8, max_epochs=1))
    with pytest.raises(PredictorError, match="expected"):
        pred.fit(x[:, :, :5], y, x, y, progress=False)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(PredictorError, match="NaN"):
        pred.fit(bad, y, x, y, progress=False)
    with pytest.raises(PredictorError, match="both classes"):
        pred.fit(x, np.zeros(50, bool), x, y, progress=False)
    with pytest.raises(PredictorError, match="precision"):
        PredictorConfig(precision="fp16")


def test_baselines_rank_the_planted_trend() -> None:
    """Threshold rule, logistic regression and gradient boosting all find the trend."""
    x, y = _toy(0)
    xv, yv = _toy(1)
    models = fit_baselines(window_features(x), y, seed=0)
    fv = window_features(xv)
    for name, model in models.items():
        s = baseline_scores(model, fv)
        assert s[yv].mean() > s[~yv].mean(), name
    assert isinstance(models["threshold"], ThresholdRule)
    assert models["threshold"].column % 10 == 1


def test_event_metrics_on_a_perfect_score(small_ds: fd.FailureDataset) -> None:
    """Scoring windows by their own labels gives precision 1 and recall 1 for warning failures."""
    horizon = 3 * 3600.0
    w = fd.make_windows(small_ds, 4, horizon)
    idx = np.arange(w.label.size)
    scores = w.label.astype(float)
    m = event_metrics(small_ds, w, idx, scores, 0.5, horizon, warning=True)
    assert m["alarm_precision"] == pytest.approx(1.0)
    assert m["event_recall"] == pytest.approx(1.0)
    assert m["median_lead_h"] <= 3.0


def test_failures_in_the_last_horizon_are_not_events(small_ds: fd.FailureDataset) -> None:
    """A failure whose horizon windows reach the data's last horizon is not judged."""
    horizon = 3 * 3600.0
    w = fd.make_windows(small_ds, 4, horizon)
    idx = np.arange(w.label.size)
    f = small_ds.failures
    times, t_end = small_ds.times_s, small_ds.times_s[w.end]

    def has_windows(k: int) -> bool:
        mine = (w.fleet == f.fleet[k]) & (w.host == f.host[k])
        return bool(np.any(mine & (t_end < f.t_s[k]) & (t_end >= f.t_s[k] - horizon)))

    # late: the last step ending before the failure has part of its horizon past the data
    late = np.array([
        bool(np.any(times < t)) and times[times < t].max() + horizon > times[-1] for t in f.t_s
    ])
    assert any(has_windows(k) for k in np.flatnonzero(f.warning & late))
    everything = np.ones(idx.size, dtype=bool)
    leads, n_events = event_leads(small_ds, w, idx, everything, horizon, warning=True)
    # every counted failure is caught by an all-alarm score, and none of them is late
    assert len(leads) == n_events
    assert n_events == sum(has_windows(k) for k in np.flatnonzero(f.warning & ~late))


def test_pr_auc_by_onset_splits_positives_at_their_fault_onset(
    small_ds: fd.FailureDataset,
) -> None:
    """Positives are split at their next failure's onset; each part is ranked on its own."""
    horizon = 6 * 3600.0
    w = fd.make_windows(small_ds, 4, horizon)
    idx = np.arange(w.label.size)
    begun = warning_begun(small_ds, w, idx)
    f = small_ds.failures
    t_end = small_ds.times_s[w.end]
    for i in np.flatnonzero(w.label):  # the next failure of the window's host, found directly
        mine = (f.fleet == w.fleet[i]) & (f.host == w.host[i]) & (f.t_s > t_end[i])
        k = np.flatnonzero(mine)[np.argmin(f.t_s[mine])]
        assert begun[i] == (t_end[i] >= f.onset_s[k])
    assert not begun[~w.label].any()
    positive = w.label & w.warning
    assert (positive & begun).any() and (positive & ~begun).any()
    m = pr_auc_by_onset(small_ds, w, idx, begun.astype(float))
    assert m["pr_auc_begun"] == pytest.approx(1.0)
    # Not-begun positives scored like the negatives: no better than their base rate.
    assert m["pr_auc_not_begun"] == pytest.approx(m["base_rate_not_begun"])
    assert m["positives_begun"] + m["positives_not_begun"] == positive.sum()


HORIZON_S = 3 * 3600.0


def _separating_scores(
    ds: fd.FailureDataset,
) -> tuple[fd.Windows, np.ndarray, np.ndarray, np.random.Generator]:
    """Windows of ``ds``, their indices, scores that rank warning positives high, the rng."""
    w = fd.make_windows(ds, 4, HORIZON_S)
    idx = np.arange(w.label.size)
    rng = np.random.default_rng(0)
    warn_pos = w.label & w.warning
    scores = np.where(warn_pos, rng.uniform(0.5, 1.0, idx.size), rng.uniform(0.0, 0.6, idx.size))
    return w, idx, scores, rng


def test_event_threshold_takes_the_middle_of_the_feasible_band(small_ds: fd.FailureDataset) -> None:
    """The chosen threshold keeps best recall at precision >= 0.90 with room on both sides."""
    from experiments.detect_twin import MIN_PRECISION, event_threshold

    w, idx, scores, rng = _separating_scores(small_ds)
    thr = event_threshold(small_ds, w, idx, scores, HORIZON_S)

    def metrics(t: float) -> dict[str, float]:
        return event_metrics(small_ds, w, idx, scores, t, HORIZON_S, warning=True)

    chosen = metrics(thr)
    assert chosen["alarm_precision"] >= MIN_PRECISION
    assert chosen["event_recall"] == pytest.approx(1.0)
    ok = [
        float(t)
        for t in np.quantile(scores, np.linspace(0.5, 1.0, 101))
        if metrics(float(t))["alarm_precision"] >= MIN_PRECISION
        and metrics(float(t))["event_recall"] == 1.0
    ]
    assert min(ok) < thr < max(ok)
    assert thr == pytest.approx(0.5 * (min(ok) + max(ok)))  # the band's middle in score
    noise = rng.uniform(0.0, 1.0, idx.size)
    assert event_threshold(small_ds, w, idx, noise, HORIZON_S) > noise.max()


def test_event_threshold_falls_back_to_a_feasible_candidate_across_a_gap(
    small_ds: fd.FailureDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A band split by a stretch under 0.90 precision: its score midpoint is not taken."""
    import experiments.detect_twin as dt

    def fake_metrics(*args: object, **kwargs: object) -> dict[str, float]:
        thr = float(args[4])  # type: ignore[arg-type]
        feasible = 0.6 <= thr <= 0.65 or 0.9 <= thr <= 0.95
        return {"alarm_precision": 0.95 if feasible else 0.5,
                "event_recall": 1.0 if thr <= 0.95 else 0.5}

    monkeypatch.setattr(dt, "event_metrics", fake_metrics)
    w = fd.make_windows(small_ds, 4, HORIZON_S)
    scores = np.linspace(0.0, 1.0, 201)
    thr = dt.event_threshold(small_ds, w, np.arange(201), scores, HORIZON_S)
    assert fake_metrics(None, None, None, None, thr)["alarm_precision"] == 0.95
    assert thr == pytest.approx(0.65)  # the median of the band's 0.6-0.65 and 0.9-0.95 points


def test_models_read_the_pr_auc_on_validation_hosts_too(small_ds: fd.FailureDataset) -> None:
    """``val_pr_auc`` is each model's PR-AUC on the validation windows, apart from the test's."""
    from experiments.detect_twin import _models

    w, idx, good, rng = _separating_scores(small_ds)
    noise = rng.uniform(size=idx.size)
    val_idx, test_idx = idx[0::2], idx[1::2]
    scores_val = {"lstm": good[0::2], "logistic": noise[0::2]}
    scores_test = {"lstm": noise[1::2], "logistic": good[1::2]}
    models = _models(small_ds, w, val_idx, test_idx, scores_val, scores_test, HORIZON_S)
    keep, y = pr_auc_items(w, val_idx, warning=True)
    assert y.any() and not y.all()
    for name in ("lstm", "logistic"):
        want = average_precision_score(y, scores_val[name][keep])
        assert models[name]["val_pr_auc"] == pytest.approx(want)
    assert models["lstm"]["val_pr_auc"] > models["logistic"]["val_pr_auc"]
    assert models["lstm"]["warning"]["pr_auc"] < models["logistic"]["warning"]["pr_auc"]


def test_host_bootstrap_interval_sides_with_the_better_model(small_ds: fd.FailureDataset) -> None:
    """A separating LSTM gets an interval above 0 against noise baselines, and the reverse."""
    from experiments.detect_twin import host_bootstrap_difference

    w, idx, good, rng = _separating_scores(small_ds)
    noise = {"logistic": rng.uniform(size=idx.size), "gboost": rng.uniform(size=idx.size)}
    better = host_bootstrap_difference(small_ds, w, idx, {"lstm": good, **noise}, 200, seed=0)
    assert better["estimate"] > 0 and better["ci95"][0] > 0
    assert better["share_at_least_zero"] == 1.0
    assert better["hosts"] == np.unique(w.fleet * small_ds.features.shape[1] + w.host).size
    worse = host_bootstrap_difference(
        small_ds, w, idx, {"lstm": noise["gboost"], "logistic": good, "gboost": noise["logistic"]},
        200, seed=0,
    )
    assert worse["estimate"] < 0 and worse["ci95"][1] < 0
    assert worse["share_at_least_zero"] == 0.0


def test_repeat_summary_pairs_the_lstm_with_each_repeats_best_baseline() -> None:
    """Means and intervals per model; the difference takes the best baseline of each repeat."""
    from experiments.detect_twin import _repeat_summary

    def fig(pr_auc: float, val: float = 0.5) -> dict[str, Any]:
        return {
            "val_pr_auc": val,
            "warning": {
                "pr_auc": pr_auc,
                "pr_auc_begun": 0.97,
                "pr_auc_not_begun": 0.06,
                "event_recall": 1.0,
                "alarm_precision": 0.95,
                "median_lead_h": 30.0,
            }
        }

    runs = [
        {"lstm": fig(0.60, 0.55), "logistic": fig(0.62), "gboost": fig(0.58)},
        {"lstm": fig(0.66, 0.59), "logistic": fig(0.61), "gboost": fig(0.63)},
        {"lstm": fig(0.64), "logistic": fig(0.60), "gboost": fig(0.64)},
    ]
    out = _repeat_summary(runs)
    assert out["repeats"] == 3
    assert out["models"]["lstm"]["pr_auc"]["mean"] == pytest.approx(0.6333333)
    lo, hi = out["models"]["lstm"]["pr_auc"]["ci95"]
    assert lo < 0.6333333 < hi
    assert out["models"]["gboost"]["event_recall"]["ci95"] == [1.0, 1.0]
    assert out["models"]["lstm"]["pr_auc_begun"]["mean"] == pytest.approx(0.97)
    assert out["models"]["lstm"]["val_pr_auc"]["values"] == pytest.approx([0.55, 0.59, 0.5])
    assert out["models"]["logistic"]["val_pr_auc"]["ci95"] == [0.5, 0.5]
    diff = out["lstm_minus_best_baseline_pr_auc"]
    assert diff["values"] == pytest.approx([-0.02, 0.03, 0.0])
    assert diff["mean"] == pytest.approx(0.01 / 3)


def test_twin_figures_draw_the_runs_curves(small_ds: fd.FailureDataset, tmp_path: Path) -> None:
    """PR curves, lead times and training curve are written; the lead curve is the recall."""
    from experiments.detect_twin import write_twin_figures

    w, idx, good, rng = _separating_scores(small_ds)
    scores = {"lstm": good, "logistic": rng.uniform(size=idx.size)}
    thresholds = {"lstm": 0.5, "logistic": 2.0}  # logistic raises no alarm
    history = [{"train_loss": 0.7, "val_loss": 0.6, "val_pr_auc": 0.5}]
    paths = write_twin_figures(tmp_path, small_ds, w, idx, scores, thresholds, HORIZON_S, history)
    assert sorted(p.name for p in paths) == ["lead_times.png", "lstm_training.png",
                                             "pr_curves.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    m = event_metrics(small_ds, w, idx, good, 0.5, HORIZON_S, warning=True)
    assert m["event_recall"] == pytest.approx(1.0)  # every lead is caught: the curve starts at 1


def test_twin_figures_skip_curves_a_held_out_set_cannot_have(
    small_ds: fd.FailureDataset, tmp_path: Path
) -> None:
    """Held-out windows without a positive get the training curve only, not an error."""
    from experiments.detect_twin import write_twin_figures

    w, idx, good, _ = _separating_scores(small_ds)
    negatives = idx[~w.label[idx]]
    history = [{"train_loss": 0.7, "val_loss": 0.6, "val_pr_auc": 0.5}]
    paths = write_twin_figures(tmp_path, small_ds, w, negatives, {"lstm": good[negatives]},
                               {"lstm": 0.5}, HORIZON_S, history)
    assert [p.name for p in paths] == ["lstm_training.png"]
