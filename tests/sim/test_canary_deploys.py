"""Configuration deploys through a canary stage (``TwinConfig.deploys``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sim.actions import Action
from sim.config import DeploySpec, TwinConfig
from sim.events import FaultCleared, FaultRecord, StateChange
from sim.faults import FaultKind, strike
from sim.scenarios import make_config
from sim.twin import Twin

SEED = 3
API = 2
"""Service index of svc-api in the default application."""


def _twin(share: float, bake_s: float = 600.0, hosts: int = 30) -> Twin:
    deploys = DeploySpec(canary_share=share, canary_bake_s=bake_s)
    config = make_config("calm", hosts, deploys=deploys)
    twin = Twin(config, seed=SEED)
    twin.advance(120.0)
    return twin


def _api(twin: Twin) -> np.ndarray:
    st = twin.state
    return st.inst_used & (st.inst_service == API)


def _bad(twin: Twin) -> np.ndarray:
    """Replicas of svc-api running a configuration other than the good one."""
    st = twin.state
    return _api(twin) & (st.inst_config_version != st.svc_good_config_version[API])


def _promotions(twin: Twin) -> list[StateChange]:
    return [r for r in twin.events()
            if isinstance(r, StateChange) and r.state == "config_promoted"]


def test_a_staged_deploy_reaches_its_canaries_first_and_every_replica_after_the_bake() -> None:
    """ceil(share x replicas) canaries carry the bad configuration until the bake ends."""
    twin = _twin(0.25, bake_s=300.0)
    n = int(_api(twin).sum())
    fid = strike(twin, FaultKind.BAD_CONFIG, API, np.random.default_rng(0))
    assert fid is not None
    canaries = int(_bad(twin).sum())
    assert canaries == min(n - 1, max(1, math.ceil(0.25 * n)))
    record = next(r for r in twin.events() if isinstance(r, FaultRecord) and r.fault_id == fid)
    assert record.detail["canaries"] == canaries
    err = record.detail["error_rate"]
    assert np.all(twin.state.inst_cfg_error[_bad(twin)] == err)
    assert np.all(twin.state.inst_cfg_error[_api(twin) & ~_bad(twin)] == 0.0)
    twin.advance(290.0)
    assert int(_bad(twin).sum()) == canaries and not _promotions(twin)
    twin.advance(20.0)
    assert _bad(twin).sum() == _api(twin).sum()
    assert np.all(twin.state.inst_cfg_error[_api(twin)] == err)
    promoted = _promotions(twin)
    assert len(promoted) == 1 and promoted[0].fault_id == fid
    assert promoted[0].target == "svc-api"


def test_a_rollback_during_the_bake_cancels_the_promotion() -> None:
    """config_rollback on the canaries clears the fault; the deploy never reaches the rest."""
    twin = _twin(0.25, bake_s=300.0)
    fid = strike(twin, FaultKind.BAD_CONFIG, API, np.random.default_rng(0))
    assert twin.apply(Action("config_rollback", "svc-api")).accepted
    twin.advance(400.0)
    assert not _bad(twin).any() and not _promotions(twin)
    cleared = [r for r in twin.events() if isinstance(r, FaultCleared) and r.fault_id == fid]
    assert [r.by for r in cleared] == ["config_rollback"]


def test_canaries_are_seeded_and_staging_keeps_a_seeds_fault_schedule() -> None:
    """Same seed, same canaries; with and without the stage the same faults strike."""
    def run(share: float) -> tuple[Twin, list[tuple[float, str, str]]]:
        base = make_config("mixed", 20, tick_s=10.0, telemetry_interval_s=10.0)
        rates = dict(base.faults.rates_per_day_per_100_hosts)
        rates["bad_config"] = 200.0
        config = dataclasses.replace(
            base, faults=dataclasses.replace(base.faults, rates_per_day_per_100_hosts=tuple(
                rates.items())), deploys=DeploySpec(canary_share=share))
        twin = Twin(config, seed=11)
        twin.advance(6 * 3600.0)
        faults = [(r.t_s, r.kind, r.target) for r in twin.events() if isinstance(r, FaultRecord)]
        return twin, faults

    staged, staged_faults = run(0.2)
    again, _ = run(0.2)
    _, direct_faults = run(0.0)
    assert staged.log.digest() == again.log.digest()
    assert staged_faults == direct_faults
    assert sum(kind == "bad_config" for _, kind, _ in staged_faults) >= 5
    details = [r.detail for r in staged.events()
               if isinstance(r, FaultRecord) and r.kind == "bad_config"]
    assert all(d["canaries"] >= 1 for d in details)  # every service runs two replicas or more


def test_without_a_stage_a_deploy_lands_everywhere_at_once() -> None:
    """The default (share 0) keeps the all-at-once deploy and records no canary count."""
    assert TwinConfig().deploys == DeploySpec()
    twin = _twin(0.0)
    fid = strike(twin, FaultKind.BAD_CONFIG, API, np.random.default_rng(0))
    assert _bad(twin).sum() == _api(twin).sum()
    record = next(r for r in twin.events() if isinstance(r, FaultRecord) and r.fault_id == fid)
    assert "canaries" not in record.detail
