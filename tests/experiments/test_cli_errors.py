"""A bad command line stops ``python -m experiments.run`` at start with one line on stderr."""

from __future__ import annotations

from tests.experiments.sandbox import Sandbox

BAD = [
    (["scenario=nope"], "scenario", "unknown option 'nope'"),
    (["cluster.hosts=abc"], "cluster.hosts", "abc"),
    (["cluster.bogus=1"], "cluster.bogus", "bogus"),
    (["cluster.hosts=0"], "cluster.hosts", "positive"),
    (["safety.max_capacity_share=2"], "safety.max_capacity_share", "[0, 1]"),
    (["cluster.canary_share=1"], "cluster.canary_share", "below 1"),
    (["cluster.canary_bake_s=-5"], "cluster.canary_bake_s", "positive"),
]
"""``(overrides, key, words)``: an unknown group option, a wrong type, an unknown key and
out-of-range values."""


def test_bad_config_fails_with_one_line_naming_the_key(sandbox: Sandbox) -> None:
    """Each bad override exits 2 with one stderr line that starts with the key.

    No traceback, nothing on stdout, no MLflow store created.
    """
    runs = sandbox.modules("experiments.run", [overrides for overrides, _, _ in BAD])
    for (overrides, key, words), done in zip(BAD, runs, strict=True):
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2, (overrides, done.stderr)
        assert len(lines) == 1, (overrides, done.stderr)
        assert lines[0].startswith(f"error: {key}"), (overrides, lines[0])
        assert words in lines[0], (overrides, lines[0])
        assert "Traceback" not in done.stderr
        assert done.stdout.strip() == "", overrides
    assert not (sandbox.root / "mlruns").exists()
