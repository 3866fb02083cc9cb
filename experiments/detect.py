"""Failure prediction and anomaly detection on the twin's data and on real data sets.

    python -m experiments.detect dataset=nab                       # data/nab_subset
    python -m experiments.detect dataset=nab data_root=../shared/data/nab
    python -m experiments.detect dataset=nab data_root=FOLDER score_published=numenta
    python -m experiments.detect dataset=smd data_root=../shared/data/smd
    python -m experiments.detect dataset=twin                      # LSTM vs baselines, 72 h

``dataset=nab`` scores each detector of ``detectors`` on every file of the folder (NAB
layout) and prints, per detector and profile, the per-file and total raw scores and the
normalised score, next to the published detectors' totals on the same files.
``score_published=NAME`` instead scores the published raw outputs under
``FOLDER/results/NAME/`` with our NAB scorer and prints their per-file scores per profile,
with the difference from the published per-file scores when those are present.
``dataset=smd`` prints point-wise and point-adjusted precision / recall / F1 per machine.
``dataset=twin`` builds (or reads from ``cache_dir``) the twin's failure data set and
compares the LSTM failure predictor with the baselines on held-out hosts.

The schema is :class:`DetectSchema` (Hydra ConfigStore, no YAML). The last line of standard
output is one JSON object; everything is logged to MLflow unless ``tracking.enabled=false``.
The Hydra output folder gets ``result.json`` and the run's figures (PNG,
:mod:`experiments.detect_plots`), and they are the MLflow run's artifacts.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agents import nab_scoring as nab
from agents.detectors import DetectorInputError
from agents.evaluation import DETECTORS, DetectorSpec, nab_evaluate, smd_evaluate
from agents.failure_data import FailureDataError, FleetSpec
from agents.smd_scoring import SmdDataError
from experiments import joblog, jsonout, tracking
from experiments.config import (
    TrackingSchema,
    _reject_unknown_keys,
    reported_at_exit,
    run_app,
)
from sim.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TwinDataSchema:
    """Twin failure data set and predictor settings (``dataset=twin``)."""

    hosts: int = 60
    days: float = 20.0
    fleets: int = 8
    """Twin runs (seeds ``seed * 1000 + i``). Eight give about 250 failures with warning signs
    and 90 on held-out hosts, so the held-out figures rest on more than a few dozen events."""
    tick_s: float = 60.0
    horizon_h: float = 72.0
    step_s: float = 3600.0
    seq_len: int = 24
    test_host_share: float = 0.3
    val_host_share: float = 0.2
    """Share of the non-test hosts held out for validation (early stopping, calibration,
    thresholds)."""
    neg_per_pos: float = 3.0
    repeats: int = 1
    """Train every model this many times on fresh draws of the training negatives (the LSTM
    also from a fresh initialisation), same split; above 1 the result gains each figure's
    mean and 95% interval and the paired difference LSTM - best baseline in PR-AUC."""
    bootstrap: int = 1000
    """Resamples of the held-out hosts for the interval of the LSTM - best baseline PR-AUC
    difference (0: none)."""
    epochs: int = 30
    hidden: int = 128
    layers: int = 3
    onset_weight: float = 0.0
    """Weight of an auxiliary target in the LSTM's training (0: none): has the coming
    failure's warning fault begun by the window's last step, from the training fleets' fault
    onsets; the baselines train on the labels alone. Off by default: over fleet seeds 0-9 it
    raised the LSTM's PR-AUC on the windows after the onset on all ten, and left its PR-AUC
    unchanged on average (README, *Failure prediction*)."""
    precision: str = "auto"
    cache_dir: str = "outputs/twin_failure_data"


@dataclass
class DetectSchema:
    """Top level of ``python -m experiments.detect``."""

    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"override hydra/job_logging": joblog.OPTION}]
    )
    dataset: str = "nab"
    data_root: str | None = None
    score_published: str | None = None
    detectors: list[str] = field(default_factory=lambda: list(DETECTORS))
    window: int = 300
    lags: int = 8
    refractory: int = 50
    contamination: float = 0.01
    novelty_tolerance: float = 0.15
    seed: int = 0
    twin: TwinDataSchema = field(default_factory=TwinDataSchema)
    tracking: TrackingSchema = field(
        default_factory=lambda: TrackingSchema(experiment="novacron-detect")
    )


joblog.register()
ConfigStore.instance().store(name="detect_config", node=DetectSchema)


class DetectConfigError(ConfigError):
    """A bad value in the detect config (a :class:`ConfigError`: one line from ``run_app``)."""


def data_errors() -> tuple[type[Exception], ...]:
    """What a data set the run cannot use raises: one line and exit status 2 from :func:`app`.

    A function, so that torch (behind :class:`~agents.failure_predictor.PredictorError`) is
    imported once the config has been composed, not before a bad command line is reported.
    """
    from agents.failure_predictor import PredictorError

    return DetectorInputError, nab.NabDataError, SmdDataError, FailureDataError, PredictorError


def _check(schema: DetectSchema) -> None:
    if schema.dataset not in ("nab", "smd", "twin"):
        raise DetectConfigError(f"dataset: must be nab, smd or twin, got {schema.dataset!r}")
    unknown = [d for d in schema.detectors if d not in DETECTORS]
    if unknown:
        raise DetectConfigError(f"detectors: unknown {unknown}; choose from {list(DETECTORS)}")
    if schema.score_published is not None and schema.dataset != "nab":
        raise DetectConfigError("score_published: only with dataset=nab")
    if schema.refractory < 1:
        raise DetectConfigError(f"refractory: must be >= 1, got {schema.refractory}")
    from agents.failure_predictor import PRECISIONS

    if schema.twin.precision not in PRECISIONS:
        raise DetectConfigError(
            f"twin.precision: must be one of {list(PRECISIONS)}, got {schema.twin.precision!r}"
        )
    if schema.twin.repeats < 1:
        raise DetectConfigError(f"twin.repeats: must be >= 1, got {schema.twin.repeats}")
    if schema.twin.bootstrap < 0:
        raise DetectConfigError(f"twin.bootstrap: must be >= 0, got {schema.twin.bootstrap}")
    for key in ("test_host_share", "val_host_share"):
        share = getattr(schema.twin, key)
        if not 0.0 < share < 1.0:
            raise DetectConfigError(f"twin.{key}: must be in (0, 1), got {share}")
    if not 0.0 < schema.contamination < 0.5:
        raise DetectConfigError(f"contamination: must be in (0, 0.5), got {schema.contamination}")
    if schema.novelty_tolerance <= 0.0:
        raise DetectConfigError(f"novelty_tolerance: must be > 0, got {schema.novelty_tolerance}")
    _check_twin(schema.twin)


def _check_twin(t: TwinDataSchema) -> None:
    """The twin data set's sizes, checked before the fleets are built (minutes at the defaults).

    Only what the build, the split or the training would refuse anyway is refused here.
    """
    try:
        spec = FleetSpec(hosts=t.hosts, days=t.days, tick_s=t.tick_s, step_s=t.step_s)
    except FailureDataError as err:  # "hosts must be >= 2, got 0": the field comes first
        field_name, _, rest = str(err).partition(" ")
        raise DetectConfigError(f"twin.{field_name}: {rest}") from None
    for key in ("fleets", "epochs", "hidden", "layers"):
        if getattr(t, key) < 1:
            raise DetectConfigError(f"twin.{key}: must be >= 1, got {getattr(t, key)}")
    if not 1 <= t.seq_len <= spec.n_steps:
        raise DetectConfigError(
            f"twin.seq_len: must be in [1, {spec.n_steps}] (the steps of twin.days at "
            f"twin.step_s), got {t.seq_len}"
        )
    for key in ("horizon_h", "neg_per_pos"):
        value = getattr(t, key)
        if not (math.isfinite(value) and value > 0):
            raise DetectConfigError(f"twin.{key}: must be a finite number > 0, got {value}")
    if not (math.isfinite(t.onset_weight) and t.onset_weight >= 0):
        raise DetectConfigError(
            f"twin.onset_weight: must be a finite number >= 0, got {t.onset_weight}"
        )
    from agents.failure_eval import split_host_counts

    try:  # the shares themselves were checked above
        split_host_counts(t.hosts * t.fleets, t.test_host_share, t.val_host_share)
    except ValueError:
        raise DetectConfigError(
            f"twin.hosts: {t.hosts} hosts x {t.fleets} fleets are too few to split into test "
            f"(twin.test_host_share={t.test_host_share}), validation "
            f"(twin.val_host_share={t.val_host_share}) and training hosts"
        ) from None


def _root(schema: DetectSchema) -> Path:
    if schema.data_root is not None:
        root = Path(schema.data_root)
        return root if root.is_absolute() else Path(hydra.utils.get_original_cwd()) / root
    return REPO / "data" / ("nab_subset" if schema.dataset == "nab" else schema.dataset)


def score_published(root: Path, detector: str) -> dict[str, Any]:
    """Our scorer on a published detector's raw outputs, per file and profile."""
    corpus = nab.NabCorpus(root)
    ours = nab.score_published(corpus, detector)
    out: dict[str, Any] = {"detector": detector, "profiles": {}}
    worst = 0.0
    for profile, files in ours.items():
        try:
            published = corpus.published_scores(detector, profile)
        except nab.NabDataError:
            published = {}
        rows = {}
        for key, fs in files.items():
            row: dict[str, Any] = {
                "score": fs.score,
                "tp": fs.tp,
                "tn": fs.tn,
                "fp": fs.fp,
                "fn": fs.fn,
                "total": fs.total,
            }
            if key in published:
                row["published_score"] = published[key].score
                row["abs_diff"] = abs(fs.score - published[key].score)
                worst = max(worst, row["abs_diff"])
            rows[key] = row
        out["profiles"][profile] = {
            "threshold": next(iter(files.values())).threshold,
            "total": sum(fs.score for fs in files.values()),
            "files": rows,
        }
    out["max_abs_diff_vs_published"] = worst
    return out


def run_detect(
    schema: DetectSchema,
    log_metric: Callable[[str, float, int], None] | None = None,
    plot_dir: Path | None = None,
) -> dict[str, Any]:
    """Do the work for one composed config; returns the result object.

    ``log_metric(name, value, step)`` receives the LSTM's per-epoch metrics (``dataset=twin``).
    With ``plot_dir`` the run's figures are written there as PNG
    (:mod:`experiments.detect_plots`; none for ``score_published``).
    """
    _check(schema)
    spec = DetectorSpec(
        window=schema.window,
        lags=schema.lags,
        contamination=schema.contamination,
        novelty_tolerance=schema.novelty_tolerance,
        seed=schema.seed,
    )
    if schema.dataset == "twin":
        from agents.failure_predictor import PredictorError
        from experiments.detect_twin import run_twin

        try:
            return run_twin(schema.twin, schema.seed, log_metric, plot_dir)
        except PredictorError as err:
            t = schema.twin
            hint = (
                "; too few failures for the split: raise twin.hosts, twin.days or twin.fleets"
                if "both classes" in str(err) else ""
            )
            raise DetectConfigError(
                f"twin: cannot train on the data set of twin.hosts={t.hosts} x "
                f"twin.fleets={t.fleets} over twin.days={t.days:g}: {err}{hint}"
            ) from None
    root = _root(schema)
    if schema.dataset == "nab" and schema.score_published is not None:
        return {
            "dataset": "nab",
            "data_root": str(root),
            **score_published(root, schema.score_published),
        }
    with tqdm(desc=schema.dataset, file=sys.stderr, unit="job") as bar:

        def progress(text: str) -> None:
            bar.set_postfix_str(text, refresh=False)
            bar.update(1)

        if schema.dataset == "nab":
            result = nab_evaluate(
                nab.NabCorpus(root), schema.detectors, spec, schema.refractory, progress=progress
            )
        else:
            result = smd_evaluate(root, schema.detectors, spec, progress=progress)
    out = {"dataset": schema.dataset, "data_root": str(root), **result}
    if plot_dir is not None:
        from experiments import detect_plots

        for name, fig in detect_plots.result_figures(out).items():
            detect_plots.save(fig, plot_dir / name)
    return out


def summary_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat numeric metrics of a result, for MLflow."""
    out: dict[str, float] = {}
    if "ours" in result:
        for name, body in result["ours"].items():
            for profile in nab.PROFILE_NAMES:
                if profile in body:
                    out[f"nab_{name}_{profile}"] = body[profile]["normalised"]
    elif result.get("dataset") == "smd":
        for machine, dets in result.items():
            if isinstance(dets, dict):
                for name, body in dets.items():
                    out[f"{machine}_{name}_pa_f1"] = body["point_adjusted"]["f1"]
                    out[f"{machine}_{name}_pw_f1"] = body["point_wise"]["f1"]
    elif "metrics" in result:
        out.update({k: float(v) for k, v in result["metrics"].items()})
    if "max_abs_diff_vs_published" in result:
        out["max_abs_diff_vs_published"] = result["max_abs_diff_vs_published"]
    return out


@hydra.main(version_base="1.3", config_path=None, config_name="detect_config")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Validate, run, log to MLflow, print one JSON line.

    A bad config value or a data set the run cannot use ends the job as one line on stderr
    and exit status 2, from :func:`main` (:func:`~experiments.config.reported_at_exit`).
    """
    with reported_at_exit(*data_errors()):
        return _detect(cfg)


def _detect(cfg: DictConfig) -> dict[str, Any]:
    joblog.log_config("experiments.detect", cfg)
    _reject_unknown_keys(cfg, DetectSchema, "")  # a key added with +key=value
    schema = OmegaConf.to_object(cfg)
    if not isinstance(schema, DetectSchema):
        raise DetectConfigError("the composed config is not a DetectSchema")
    _check(schema)  # before the MLflow run: a bad value leaves no run behind
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    client, run_id = None, None
    if schema.tracking.enabled:
        client = tracking.client_for(schema.tracking.tracking_uri)
        experiment_id = tracking.ensure_experiment(client, schema.tracking.experiment)
        run_id = tracking.start_run(
            client,
            experiment_id,
            run_name=schema.tracking.run_name or f"detect-{schema.dataset}",
            params={**tracking.flatten(dataclasses.asdict(schema)),
                    "data_root": str(_root(schema))},  # the folder read, default resolved
            tags={"dataset": schema.dataset}, entry_point="detect",
        )
    try:
        log_metric = None
        if client is not None and run_id is not None:
            tracked_client, tracked_run = client, run_id

            def log_metric(name: str, value: float, step: int) -> None:
                tracked_client.log_metric(tracked_run, name, value, step=step)

        result = run_detect(schema, log_metric, plot_dir=out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "result.json").write_text(jsonout.dumps(result, indent=1) + "\n")
        joblog.log_result("experiments.detect", result)
        if client is not None and run_id is not None:
            tracking.finish_run(client, run_id, summary_metrics(result), out_dir)
    except BaseException:
        if client is not None and run_id is not None:
            tracking.fail_run(client, run_id)
        raise
    result["mlflow_run_id"] = run_id
    sys.stdout.write(jsonout.dumps(result) + "\n")
    sys.stdout.flush()
    return result


def main() -> None:
    """Entry point: a bad config or data set becomes one line on stderr and exit status 2."""
    run_app(app)


if __name__ == "__main__":
    main()
