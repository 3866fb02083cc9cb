"""Baselines, splits and metrics for failure prediction on the twin's data sets.

Baselines work on hand-made window features (per input feature: last value, mean, standard
deviation, least-squares slope, minimum, maximum):

* ``threshold``: one window feature and one direction, the pair with the best training
  average precision, thresholded;
* ``logistic``: logistic regression on standardised window features, classes balanced;
* ``gboost``: scikit-learn's histogram gradient boosting, classes balanced.

Split (:func:`split_windows`): hosts are drawn at random into a held-out test share, then a
validation share of the others (early stopping, calibration and threshold choice); each
host's windows all go with it. Validation on hosts the model was not trained on measures
what test measures: a split of the training hosts in time rewarded what a model learnt of
those hosts' own levels, and ranked models by it (on one 16-fleet data set, validation
PR-AUC 0.65-0.67 for every model, test 0.60-0.63). Validation and test leave out the windows
of the data's last horizon, where only positives have a label.

Metrics, on held-out hosts (see :func:`event_metrics`): window PR-AUC; an *alarm* is a window
with probability at or above the threshold; alarm precision is the share of alarms followed
by a failure within the horizon; event recall is the share of failures with at least one
alarm in the horizon before them; lead time is the failure time minus the first such alarm.
Failures with and without warning signs are reported separately; for the warning-sign
figures, windows whose next failure within the horizon is a silent one are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agents.failure_data import FailureDataset, Windows


class Scorer(Protocol):
    """A fitted model mapping window feature rows to scores."""

    def predict_proba(self, x: Any) -> Any:
        """Class probabilities, ``(n, 2)``."""
        ...


def window_features(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(n, seq, f)`` windows -> ``(n, 6 f)``: last, mean, std, slope, min, max per feature."""
    a = np.asarray(x, dtype=np.float64)
    t = np.arange(a.shape[1], dtype=np.float64)
    t -= t.mean()
    slope = np.einsum("nsf,s->nf", a - a.mean(axis=1, keepdims=True), t) / max(
        float(np.sum(t * t)), 1e-12
    )
    return np.concatenate(
        [a[:, -1], a.mean(axis=1), a.std(axis=1), slope, a.min(axis=1), a.max(axis=1)], axis=1
    )


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Score = ``sign * column``: the single window feature with the best training AP."""

    column: int
    sign: float

    @classmethod
    def fit(cls, features: npt.NDArray[np.float64], y: npt.ArrayLike) -> ThresholdRule:
        """Pick the column and direction with the best average precision on ``y``."""
        yb = np.asarray(y, dtype=bool)
        best = (-1.0, 0, 1.0)
        for j in range(features.shape[1]):
            for sign in (1.0, -1.0):
                ap = float(average_precision_score(yb, sign * features[:, j]))
                if ap > best[0]:
                    best = (ap, j, sign)
        return cls(column=best[1], sign=best[2])

    def score(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The rule's score (higher means failure more likely)."""
        return np.asarray(self.sign * features[:, self.column], dtype=np.float64)


def fit_baselines(features: npt.NDArray[np.float64], y: npt.ArrayLike, seed: int) -> dict[str, Any]:
    """Fit the three baselines on window features."""
    yb = np.asarray(y, dtype=int)
    logistic = make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
    )
    logistic.fit(features, yb)
    gboost = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)
    gboost.fit(features, yb)
    return {"threshold": ThresholdRule.fit(features, yb), "logistic": logistic, "gboost": gboost}


def baseline_scores(model: Any, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Scores of a fitted baseline."""
    if isinstance(model, ThresholdRule):
        return model.score(features)
    return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Split:
    """Indices into a :class:`Windows` set."""

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    test_hosts: npt.NDArray[np.int64]


def split_host_counts(
    n_hosts: int, test_host_share: float, val_host_share: float
) -> tuple[int, int]:
    """How many of ``n_hosts`` hosts :func:`split_windows` draws for test and for validation.

    Raises:
        ValueError: a share outside (0, 1), or too few hosts to leave any for training.
    """
    for name, share in (("test_host_share", test_host_share), ("val_host_share", val_host_share)):
        if not 0.0 < share < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {share}")
    n_test = max(1, round(test_host_share * n_hosts))
    n_val = max(1, round(val_host_share * (n_hosts - n_test)))
    if n_val >= n_hosts - n_test:
        raise ValueError(f"{n_hosts} hosts are too few for this split")
    return n_test, n_val


def split_windows(
    ds: FailureDataset, w: Windows, test_host_share: float, val_host_share: float, seed: int
) -> Split:
    """Split the windows by host: held-out test hosts, validation hosts, training hosts.

    ``test_host_share`` of all hosts are drawn for test, then ``val_host_share`` of the others
    for validation; every window of a host goes where its host goes, so validation, like
    test, measures the model on hosts it was not trained on. Validation and test keep only
    the windows whose whole horizon lies in the data (``Windows.horizon_in_data``): in the
    data's last horizon only the windows a failure follows have a label, and counting them
    without the negatives beside them would add easy positives to every figure (on the
    default twin run 649 test windows, every one a positive: 0.020-0.030 of each model's
    PR-AUC). Training keeps them: they are real positives, and its negatives are drawn anyway.
    """
    n_fleets, n_hosts = ds.features.shape[:2]
    host_ids = np.arange(n_fleets * n_hosts)
    n_test, n_val = split_host_counts(host_ids.size, test_host_share, val_host_share)
    test_seq, _, val_seq = np.random.SeedSequence(seed).spawn(3)
    test_hosts = np.sort(np.random.default_rng(test_seq).choice(host_ids, n_test, replace=False))
    rest = np.setdiff1d(host_ids, test_hosts)
    val_hosts = np.random.default_rng(val_seq).choice(rest, n_val, replace=False)
    key = w.fleet * n_hosts + w.host
    is_test, is_val = np.isin(key, test_hosts), np.isin(key, val_hosts)
    seen = w.horizon_in_data
    return Split(
        train=np.flatnonzero(~is_test & ~is_val),
        val=np.flatnonzero(is_val & seen),
        test=np.flatnonzero(is_test & seen),
        test_hosts=test_hosts,
    )


def threshold_for_precision(scores: npt.ArrayLike, y: npt.ArrayLike, min_precision: float) -> float:
    """Lowest threshold whose precision on ``y`` is at least ``min_precision`` (max recall)."""
    precision, recall, thresholds = precision_recall_curve(np.asarray(y, dtype=int), scores)
    ok = np.flatnonzero(precision[:-1] >= min_precision)
    if ok.size == 0:
        return float(np.max(scores)) + 1e-12
    best = ok[np.argmax(recall[ok])]
    return float(thresholds[best])


def pr_auc_items(
    w: Windows, idx: npt.NDArray[np.int64], warning: bool
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which of the windows ``idx`` the PR-AUC counts, and their labels.

    Negatives and the positives whose failure has (``warning``) or lacks warning signs;
    returns the mask over ``idx`` and the labels of the kept windows.
    """
    sel_pos = w.label[idx] & (w.warning[idx] == warning)
    keep = ~w.label[idx] | sel_pos
    return keep, sel_pos[keep]


def warning_begun(
    ds: FailureDataset, w: Windows, idx: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Mask over ``idx``: positive windows ending at or after their failure's fault onset.

    A window is labelled positive when its host fails within the horizon, which for a
    failure with warning signs may be before the fault causing it has begun (a leak fails
    18-60 h after its onset in the failure data sets): such a window holds no sign of it.
    """
    nxt = w.next_failure[idx]
    begun = w.label[idx].copy()
    begun[begun] = ds.times_s[w.end[idx][begun]] >= ds.failures.onset_s[nxt[begun]]
    return begun


def pr_auc_by_onset(
    ds: FailureDataset, w: Windows, idx: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
) -> dict[str, float]:
    """PR-AUC on failures with warning signs, split by whether their fault had begun.

    ``pr_auc_begun`` ranks the positive windows ending at or after their fault's onset
    against every negative, ``pr_auc_not_begun`` those ending before it (their base rate is
    ``base_rate_not_begun``: a model that cannot tell them from negatives scores about that).
    """
    begun = warning_begun(ds, w, idx)
    positive = w.label[idx] & w.warning[idx]
    negative = ~w.label[idx]
    out: dict[str, float] = {}
    for key, sel in (("begun", positive & begun), ("not_begun", positive & ~begun)):
        keep = negative | sel
        y = sel[keep]
        out[f"positives_{key}"] = float(y.sum())
        out[f"pr_auc_{key}"] = (
            float(average_precision_score(y, scores[keep])) if y.any() else float("nan")
        )
    not_begun = positive & ~begun
    n = int((negative | not_begun).sum())
    out["base_rate_not_begun"] = float(not_begun.sum() / n) if n else float("nan")
    return out


def event_leads(
    ds: FailureDataset,
    w: Windows,
    idx: npt.NDArray[np.int64],
    alarms: npt.NDArray[np.bool_],
    horizon_s: float,
    warning: bool,
) -> tuple[list[float], int]:
    """Lead time (s) of each failure caught by an alarm, and how many failures could be.

    A failure with (``warning``) or without warning signs counts when one of the windows
    ``idx`` of its host ends within the horizon before it, and every window that could (each
    step within the horizon before it) has its own whole horizon in the data: a failure in
    the data's last horizon would otherwise be judged on its earliest windows alone
    (:func:`agents.failure_eval.split_windows` leaves the later ones out of validation and
    test), which lowers recall and lengthens lead times. It is caught when one of those
    windows raised an alarm (``alarms``, a mask over ``idx``), and its lead time is from the
    end of the earliest such window to the failure.
    """
    fleets, hosts = w.fleet[idx], w.host[idx]
    t_end = ds.times_s[w.end[idx]]
    f = ds.failures
    n_hosts = ds.features.shape[1]
    observed = set((fleets * n_hosts + hosts).tolist())
    # the last step ending before each failure, and whether its horizon lies in the data
    last_before = ds.times_s[np.maximum(np.searchsorted(ds.times_s, f.t_s, side="left") - 1, 0)]
    complete = last_before + horizon_s <= ds.times_s[-1]
    leads: list[float] = []
    n_events = 0
    for a, h, t_fail, warn, whole in zip(
        f.fleet, f.host, f.t_s, f.warning, complete, strict=True
    ):
        if bool(warn) != warning or not whole or int(a * n_hosts + h) not in observed:
            continue
        in_horizon = (fleets == a) & (hosts == h) & (t_end < t_fail) & (t_end >= t_fail - horizon_s)
        if not in_horizon.any():
            continue
        n_events += 1
        hit = in_horizon & alarms
        if hit.any():
            leads.append(float(t_fail - t_end[hit].min()))
    return leads, n_events


def event_metrics(
    ds: FailureDataset,
    w: Windows,
    idx: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    threshold: float,
    horizon_s: float,
    warning: bool,
) -> dict[str, float]:
    """Alarm precision, event recall and lead times for failures with / without warning."""
    keep, y = pr_auc_items(w, idx, warning)
    sel_pos = w.label[idx] & keep
    alarms = (scores >= threshold) & keep
    n_alarms = int(alarms.sum())
    precision = float(np.sum(alarms & sel_pos) / n_alarms) if n_alarms else float("nan")
    pr_auc = float(average_precision_score(y, scores[keep])) if y.any() else float("nan")
    leads, n_events = event_leads(ds, w, idx, alarms, horizon_s, warning)
    recall = len(leads) / n_events if n_events else float("nan")
    return {
        "events": float(n_events),
        "event_recall": recall,
        "alarm_precision": precision,
        "alarms": float(n_alarms),
        "pr_auc": pr_auc,
        "median_lead_h": float(np.median(leads) / 3600.0) if leads else float("nan"),
        "p10_lead_h": float(np.percentile(leads, 10) / 3600.0) if leads else float("nan"),
    }
