"""End to end: a DQN trained and exported by the entry points heals a crash on the fleet and twin.

The DQN is trained with ``python -m experiments.train`` and exported with ``python -m
experiments.export`` (subprocesses, as a user runs them), loaded with
:func:`agents.runtime.load_policy` (numpy + onnxruntime), and wrapped once as an
:class:`live.controller.EncodedPolicy` behind a :class:`live.controller.PolicyController`;
:func:`live.controller.control_loop` then drives the twin with a scripted service crash and the
live fleet with a replica killed by SIGKILL. Only the plant differs. On both, the crashed
replica must be restarted by a restart the exported DQN chose, passed by the safety gate and
executed, and the fault must be cleared by it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agents.runtime import ExportedPolicy, load_policy
from envs.spaces import Layout, decode, encode
from live.chaos import inject
from live.controller import EncodedPolicy, PolicyController, control_loop, live_safety
from live.loadgen import run_load
from live.plant import LivePlant
from live.procs import alive
from sim.actions import Action
from sim.config import ScriptedFault
from sim.events import ActionRecord, DecisionRecord, FaultCleared, FaultRecord
from sim.plant import Plant
from sim.scenarios import make_config
from sim.telemetry import Observation
from sim.twin import Twin

pytestmark = pytest.mark.slow  # trains and exports a DQN, then runs real processes

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 4
TRAIN_STEPS = 20_000
VERDICTS = {"allowed", "rejected", "blocked", "dry_run", "needs_approval"}


def _entry_point(module: str, args: list[str], hydra_dir: Path) -> dict[str, object]:
    """Run ``python -m module args`` like a user; its last stdout line is its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "tracking=off", f"hydra.run.dir={hydra_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def exported_dqn(tmp_path_factory: pytest.TempPathFactory) -> ExportedPolicy:
    """A DQN trained on service_crash (4 hosts), exported, loaded with the ONNX runtime."""
    tmp = tmp_path_factory.mktemp("dqn")
    trained = _entry_point(
        "experiments.train",
        [
            "scenario=service_crash",
            "scenario.hours=1",
            f"env.hosts={HOSTS}",
            f"total_timesteps={TRAIN_STEPS}",
            "checkpoint_freq=10000",
            "eval_freq=10000",
            "eval_hours=1",
            "env.fault_rate_scale=1000",
            "agent.learning_starts=500",
            "seed=0",
            f"run_dir={tmp / 'run'}",
        ],
        tmp / "hydra-train",
    )
    assert trained["timesteps"] == TRAIN_STEPS
    exported = _entry_point(
        "experiments.export",
        [
            f"model={tmp / 'run' / 'model.zip'}",
            f"out={tmp / 'export'}",
            f"env.hosts={HOSTS}",
            "parity_observations=500",
            "parity_hours=1",
        ],
        tmp / "hydra-export",
    )
    assert exported["parity"] == 1.0
    return load_policy(tmp / "export")


def onto_layout(obs: Observation, layout: Layout) -> Observation:
    """``obs`` with its services numbered as in ``layout`` (the live fleet runs one of them).

    Services of the layout that the plant does not run have no instances, which the encoder
    reports as such (shares 0); nothing is invented for them.
    """
    if tuple(obs.service_names) == layout.service_names:
        return obs
    missing = [n for n in obs.service_names if n not in layout.service_names]
    if missing:
        raise ValueError(f"services {missing} are not in the policy's layout")
    index = np.array([layout.service_names.index(n) for n in obs.service_names], np.int64)
    return dataclasses.replace(
        obs, service_names=layout.service_names, inst_service=index[obs.inst_service]
    )


class Recorder:
    """The encoder and decoder handed to :class:`EncodedPolicy`; counts the chosen actions."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.labels = layout.action_labels()
        self.picks: Counter[str] = Counter()
        self._obs: Observation | None = None
        self.last_vector: np.ndarray | None = None

    def encode(self, obs: Observation) -> np.ndarray:
        """The policy's input vector."""
        self._obs = onto_layout(obs, self.layout)
        self.last_vector = encode(self._obs, self.layout)
        return self.last_vector

    def decode(self, index: int) -> Action | None:
        """The plant action of ``index``, aimed with the observation just encoded."""
        self.picks[self.labels[index]] += 1
        return decode(index, self.layout, self._obs)


def controller_for(plant: Plant, runtime: ExportedPolicy) -> tuple[PolicyController, Recorder]:
    """The one code path: exported runtime -> EncodedPolicy -> PolicyController (gated)."""
    rec = Recorder(Layout.from_dict(runtime.metadata["layout"]))
    policy = EncodedPolicy(runtime, rec.encode, rec.decode)
    return PolicyController(plant, policy, live_safety(actuate=True)), rec


def _check_path(plant: Plant, rec: Recorder, steps: int, runtime: ExportedPolicy) -> None:
    """The export was asked once per step; every action it chose was gated and logged."""
    assert sum(rec.picks.values()) == steps > 0
    assert rec.last_vector is not None
    q = runtime.q_values(rec.last_vector)[0]
    admissible = runtime.admissible(rec.last_vector)[0]
    assert admissible[0] and int(runtime.predict(rec.last_vector)[0]) == int(
        np.argmax(np.where(admissible, q, -np.inf))
    )
    decisions = [r for r in plant.events(0) if isinstance(r, DecisionRecord)]
    acted = sum(n for label, n in rec.picks.items() if not label.startswith("noop"))
    assert len(decisions) <= acted
    assert all(d.verdict in VERDICTS for d in decisions)
    started = {
        r.action_id for r in plant.events(0) if isinstance(r, ActionRecord) and r.phase == "started"
    }
    for d in decisions:
        assert d.executed == (d.action_id in started), d


def _healed_by_the_policy(plant: Plant, fault: FaultRecord) -> DecisionRecord:
    """The DQN's executed restart of the crashed replica, which succeeded and cleared the fault.

    Returns the decision record of that restart.
    """
    events = plant.events(0)
    restarts = [
        r
        for r in events
        if isinstance(r, DecisionRecord)
        and r.executed
        and r.action == "restart_instance"
        and r.target == fault.target
        and r.t_s >= fault.t_s
    ]
    decided = Counter(
        (r.action, r.target, r.verdict) for r in events if isinstance(r, DecisionRecord)
    )
    assert restarts, f"no executed restart of {fault.target}; decisions: {dict(decided)}"
    done = {
        r.action_id: r for r in events if isinstance(r, ActionRecord) and r.phase == "succeeded"
    }
    healed = [d for d in restarts if d.action_id in done]
    assert healed, "the restart was started but did not succeed"
    (cleared,) = [r for r in events if isinstance(r, FaultCleared) and r.fault_id == fault.fault_id]
    assert cleared.t_s >= healed[0].t_s
    return healed[0]


def crash_twin(seed: int) -> Twin:
    """The twin of the end-to-end check: ``HOSTS`` hosts, calm, a service crash at 300 s."""
    config = make_config(
        "calm",
        HOSTS,
        tick_s=10.0,
        telemetry_interval_s=10.0,
        scripted=(ScriptedFault(300.0, "service_crash"),),
    )
    return Twin(config, seed=seed)


def test_exported_dqn_heals_a_scripted_crash_on_the_twin(exported_dqn: ExportedPolicy) -> None:
    """A scripted crash on the twin; the exported DQN, asked every 10 s, restarts the replica."""
    twin = crash_twin(0)
    ctrl, rec = controller_for(twin, exported_dqn)
    steps = control_loop(twin, ctrl, 900.0, 10.0)
    (fault,) = [r for r in twin.events(0) if isinstance(r, FaultRecord)]
    assert fault.kind == "service_crash" and fault.t_s == 300.0
    _check_path(twin, rec, steps, exported_dqn)
    restart = _healed_by_the_policy(twin, fault)
    assert restart.t_s - fault.t_s <= 120.0
    assert rec.picks[f"restart_instance(worst_instance of svc-{_service_of(twin, fault)})"] >= 1
    obs = twin.observe()
    assert bool((obs.inst_ready | ~obs.inst_used).all()), "a replica is still not ready"


def _service_of(plant: Plant, fault: FaultRecord) -> str:
    obs = plant.observe()
    return obs.service_names[int(obs.inst_service[int(fault.target.removeprefix("inst-"))])]


def test_exported_dqn_heals_a_killed_replica_on_the_live_fleet(
    exported_dqn: ExportedPolicy, fleet_factory: Callable[..., LivePlant]
) -> None:
    """The same export, encoder, decoder and controller on real replicas; one is killed -9.

    The DQN restarts it: a new process serves, and requests through HAProxy succeed.
    """
    plant = fleet_factory(2)
    ctrl, rec = controller_for(plant, exported_dqn)
    steps = control_loop(plant, ctrl, 0.5, 0.1)
    assert set(rec.picks) == {"noop(cluster)"}, "the healthy fleet was touched"
    old = plant.pids()["inst-1"]
    fault = inject(plant, "service_crash", "inst-1")

    def cleared() -> bool:
        return any(
            isinstance(r, FaultCleared) and r.fault_id == fault.fault_id
            for r in plant.log.since(fault.seq)
        )

    steps += control_loop(plant, ctrl, 8.0, 0.1, on_step=lambda: not cleared())
    steps += control_loop(plant, ctrl, 1.0, 0.1)
    assert not alive(old)
    restart = _healed_by_the_policy(plant, fault)
    assert restart.t_s - fault.t_s <= 5.0
    assert rec.picks["restart_instance(worst_instance of svc-api)"] >= 1
    new = plant.pids()["inst-1"]
    assert new != old and alive(new)
    obs = plant.observe()
    assert bool(obs.inst_live[1] and obs.inst_ready[1])
    assert run_load(plant.lb_url + "/", 40.0, 0.5).success == 1.0
    _check_path(plant, rec, steps, exported_dqn)


def test_a_plant_running_a_service_outside_the_layout_is_refused(
    exported_dqn: ExportedPolicy,
) -> None:
    """Projecting onto the policy's layout names the unknown service."""
    layout = Layout.from_dict(exported_dqn.metadata["layout"])
    twin = Twin(make_config("calm", HOSTS), seed=0)
    obs = dataclasses.replace(twin.observe(), service_names=("nope",) * len(layout.service_names))
    with pytest.raises(ValueError, match="nope"):
        onto_layout(obs, layout)
