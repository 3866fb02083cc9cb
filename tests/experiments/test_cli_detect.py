"""``python -m experiments.detect``: the published-score check and bad input, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.experiments.sandbox import Done, Sandbox

REPO = Path(__file__).resolve().parents[2]


def _detect(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(REPO)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.detect",
            *args,
            f"hydra.run.dir={tmp_path / 'outputs'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_score_published_prints_per_file_scores_matching_nab(tmp_path: Path) -> None:
    """score_published=numenta on the vendored folder ends with JSON matching NAB's scores."""
    done = _detect(
        tmp_path,
        "dataset=nab",
        f"data_root={REPO / 'data' / 'nab_subset'}",
        "score_published=numenta",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["detector"] == "numenta"
    assert set(result["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for body in result["profiles"].values():
        assert len(body["files"]) == 3
    assert result["max_abs_diff_vs_published"] < 1e-6
    assert result["mlflow_run_id"]


def test_nab_detectors_are_scored_next_to_published_ones(tmp_path: Path) -> None:
    """dataset=nab scores a detector per file and lists the published detectors' totals."""
    done = _detect(tmp_path, "dataset=nab", "detectors=[zscore,novelty]", "tracking.enabled=false")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("zscore", "novelty"):
        ours = result["ours"][name]["standard"]
        assert len(ours["per_file"]) == 3 and ours["normalised"] <= 100.0
    assert {"numenta", "windowedGaussian", "skyline", "randomCutForest"} <= set(result["published"])
    assert result["published"]["null"]["standard"]["normalised"] == 0.0
    figure = tmp_path / "outputs" / "nab_scores.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_config_and_missing_folder_exit_2_with_one_line(sandbox: Sandbox) -> None:
    """An unknown detector or a missing folder stops with exit status 2 and a clear message."""
    off = "tracking.enabled=false"
    cases: list[tuple[list[str], list[str]]] = [
        (["dataset=nab", "detectors=[nope]", off], ["unknown ['nope']"]),
        (["dataset=nab", "novelty_tolerance=0", off], ["novelty_tolerance"]),
        (["dataset=smd", f"data_root={sandbox.root / 'absent'}", off], ["no test/ folder"]),
        (["dataset=twin", "twin.precision=fp16", off], ["twin.precision", "'fp16'"]),
        (["dataset=twin", "twin.val_host_share=1.5", off], ["twin.val_host_share", "1.5"]),
        (["dataset=twin", "twin.bootstrap=-1", off], ["twin.bootstrap", "-1"]),
        (["dataset=twin", "twin.onset_weight=-2", off], ["twin.onset_weight", "-2"]),
    ]
    runs = sandbox.modules("experiments.detect", [args for args, _ in cases])
    for (args, words), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, (args, done.stderr[-2000:])
        for word in words:
            assert word in done.stderr, (args, word, done.stderr[-2000:])


def _one_error_line(done: subprocess.CompletedProcess[str] | Done) -> str:
    """The only stderr line (progress bars aside), which must be the error; no traceback."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    lines = [ln.split("\r")[-1] for ln in done.stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln.strip() and "twin fleets" not in ln]
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: "), lines
    return lines[0]


def test_unknown_key_bad_type_and_bad_twin_size_are_one_line(sandbox: Sandbox) -> None:
    """Hydra's composition errors and the twin data set's sizes stop at start, in one line.

    The twin's sizes are checked before the fleets are built and before an MLflow run starts.
    """
    cases = [
        (["foo=1"], "error: foo: Key 'foo' not in 'DetectSchema'"),
        (["+foo=1"], "error: foo: unknown key"),
        (["+twin.foo=1"], "error: twin.foo: unknown key"),
        (["novelty_tolerance=abc"], "error: novelty_tolerance: Value 'abc'"),
        (["dataset=twin", "twin.hosts=0"], "error: twin.hosts: must be >= 2, got 0"),
        (["dataset=twin", "twin.hosts=2", "twin.fleets=1"], "error: twin.hosts: 2 hosts x 1"),
        (["dataset=twin", "twin.days=1", "twin.seq_len=48"], "error: twin.seq_len: must be in"),
        (["dataset=twin", "twin.neg_per_pos=0"], "error: twin.neg_per_pos: must be"),
    ]
    runs = sandbox.modules("experiments.detect", [args for args, _ in cases])
    for (args, head), done in zip(cases, runs, strict=True):
        line = _one_error_line(done)
        assert line.startswith(head), (args, line)
    assert not (sandbox.root / "mlruns").exists()  # refused before the tracking store was opened


def test_a_fleet_too_small_for_the_split_is_one_line_naming_the_sizes(tmp_path: Path) -> None:
    """A data set whose validation hosts see no failure ends in one line, not a traceback."""
    done = _detect(
        tmp_path, "dataset=twin", "twin.hosts=20", "twin.days=4", "twin.fleets=2",
        f"twin.cache_dir={tmp_path / 'cache'}", "tracking.enabled=false",
    )
    line = _one_error_line(done)
    assert line.startswith("error: twin: cannot train on the data set of twin.hosts=20"), line
    assert "validation labels must contain both classes" in line
    assert "raise twin.hosts, twin.days or twin.fleets" in line
