"""Does an exported DQN heal a crash? The twin over several seeds, the live fleet over kills.

    python benchmarks/exported_dqn_heal.py EXPORT_DIR [--twin-seeds 12] [--live-kills 6]

Runs the export (``python -m experiments.export``) through the code path of
``tests/live/test_exported_dqn.py``: ``agents.runtime.load_policy`` -> ``EncodedPolicy`` ->
``PolicyController`` (safety gate) -> ``control_loop``. On the twin (4 hosts, ``calm`` plus
a scripted ``service_crash`` at 300 s, the policy asked every 10 s for 900 s) once per seed,
so the crash strikes different services; on a 2-replica live fleet (asked every 0.1 s) a
replica is killed with SIGKILL ``--live-kills`` times, each on a fresh fleet. A crash counts
as healed when the DQN's executed restart of the crashed replica succeeded and the fault
was cleared after it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.runtime import ExportedPolicy, load_policy  # noqa: E402
from live.chaos import inject  # noqa: E402
from live.controller import control_loop  # noqa: E402
from live.procs import kill  # noqa: E402
from sim.events import FaultCleared, FaultRecord  # noqa: E402
from sim.plant import Plant  # noqa: E402
from tests.live.conftest import make_fleet  # noqa: E402
from tests.live.test_exported_dqn import Recorder, controller_for, crash_twin  # noqa: E402
from tests.live.test_exported_dqn import _healed_by_the_policy as healed_by  # noqa: E402


def _outcome(plant: Plant, fault: FaultRecord, rec: Recorder) -> dict[str, object]:
    row: dict[str, object] = {"target": fault.target, "picks": dict(rec.picks)}
    try:
        restart = healed_by(plant, fault)
    except AssertionError as err:
        return {**row, "healed": False, "why": str(err).splitlines()[0]}
    (cleared,) = [
        r for r in plant.events(0) if isinstance(r, FaultCleared) and r.fault_id == fault.fault_id
    ]
    return {
        **row,
        "healed": True,
        "restart_after_s": round(restart.t_s - fault.t_s, 3),
        "cleared_after_s": round(cleared.t_s - fault.t_s, 3),
    }


def twin_run(runtime: ExportedPolicy, seed: int) -> dict[str, object]:
    """One scripted crash on the twin."""
    twin = crash_twin(seed)
    ctrl, rec = controller_for(twin, runtime)
    control_loop(twin, ctrl, 900.0, 10.0)
    (fault,) = [r for r in twin.events(0) if isinstance(r, FaultRecord)]
    obs = twin.observe()
    service = obs.service_names[int(obs.inst_service[int(fault.target.removeprefix("inst-"))])]
    return {"seed": seed, "service": service, **_outcome(twin, fault, rec)}


def live_run(runtime: ExportedPolicy, index: int) -> dict[str, object]:
    """One SIGKILL on a fresh 2-replica fleet."""
    plant = make_fleet(Path(tempfile.mkdtemp(prefix="novacron-dqn-heal-")), 2, actuate=True)
    try:
        ctrl, rec = controller_for(plant, runtime)
        control_loop(plant, ctrl, 0.5, 0.1)
        fault = inject(plant, "service_crash", f"inst-{index % 2}")

        def open_fault() -> bool:
            return not any(
                isinstance(r, FaultCleared) and r.fault_id == fault.fault_id
                for r in plant.log.since(fault.seq)
            )

        control_loop(plant, ctrl, 8.0, 0.1, on_step=open_fault)
        return {"kill": index, **_outcome(plant, fault, rec)}
    finally:
        pids = list(plant.pids().values())
        plant.close()
        for pid in pids:
            kill(pid)


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Command line; prints and returns the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="export folder written by python -m experiments.export")
    parser.add_argument("--twin-seeds", type=int, default=12)
    parser.add_argument("--live-kills", type=int, default=6)
    args = parser.parse_args(argv)
    if args.twin_seeds < 0 or args.live_kills < 0:
        parser.error("--twin-seeds and --live-kills must be >= 0")
    runtime = load_policy(args.export)
    twin = [twin_run(runtime, s) for s in range(args.twin_seeds)]
    live = [live_run(runtime, i) for i in range(args.live_kills)]
    result: dict[str, object] = {
        "export": str(Path(args.export).resolve()),
        "twin_healed": sum(bool(r["healed"]) for r in twin),
        "twin_runs": len(twin),
        "live_healed": sum(bool(r["healed"]) for r in live),
        "live_runs": len(live),
        "twin": twin,
        "live": live,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
