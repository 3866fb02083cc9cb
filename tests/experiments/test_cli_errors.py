"""A bad command line stops ``python -m experiments.run`` at start with one line on stderr."""

from __future__ import annotations

import pytest

from tests.experiments.sandbox import Sandbox


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["scenario=nope"], "scenario", "unknown option 'nope'"),
        (["cluster.hosts=abc"], "cluster.hosts", "abc"),
        (["cluster.bogus=1"], "cluster.bogus", "bogus"),
        (["cluster.hosts=0"], "cluster.hosts", "positive"),
        (["safety.max_capacity_share=2"], "safety.max_capacity_share", "[0, 1]"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_key(
    sandbox: Sandbox, overrides: list[str], key: str, words: str
) -> None:
    """A bad override exits 2 with one stderr line that starts with the key.

    Covers an unknown group option, a wrong type, an unknown key and out-of-range values;
    no traceback, nothing on stdout, no MLflow store created.
    """
    done = sandbox.run(*overrides)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {key}"), lines[0]
    assert words in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
    assert not (sandbox.root / "mlruns").exists()
