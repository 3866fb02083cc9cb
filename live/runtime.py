"""The control runtime behind the HTTP API: a plant, a controller and the loop between them.

The loop runs in a background thread: every ``step_s`` of wall-clock time it lets the plant
move on (the live fleet: what happened meanwhile; the twin: ``step_s * speed`` simulated
seconds, so the twin runs in real time or accelerated) and, while autonomous mode is enabled,
steps the controller. Every API call that touches the plant or the controller takes the same
lock as the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from control.safety import SafetyGate
from sim.actions import Action, ActionResult
from sim.events import DecisionRecord
from sim.plant import Plant


class GatedController(Protocol):
    """A controller with the safety gate its actions pass (engine or policy controller)."""

    gate: SafetyGate

    def step(self) -> None:
        """One control step."""
        ...

    def emergency_stop(self, reason: str = "operator request") -> None:
        """Halt every action from now on."""
        ...

    def resume(self) -> None:
        """Lift an emergency stop."""
        ...


class Runtime:
    """Runs ``controller`` against ``plant`` in a background thread.

    Args:
        plant: the plant (live fleet or twin).
        controller: the controller.
        mode: ``live`` or ``twin`` (reported by the API).
        step_s: wall-clock seconds between control steps.
        plant_dt_s: plant time to advance per step: 0 for a live plant (wall-clock time
            passes by itself), ``step_s * speed`` for the twin.
        apply: how a manual action reaches the plant, with its idempotency key.
        substep_s: the controller steps after every ``substep_s`` of plant time within a
            step (the twin's tick), so an accelerated twin is controlled as often as in a
            batch run; None steps it once per step.
    """

    def __init__(self, plant: Plant, controller: GatedController, *, mode: str, step_s: float,
                 plant_dt_s: float,
                 apply: Callable[[Action, str | None], ActionResult] | None = None,
                 substep_s: float | None = None) -> None:
        if mode not in ("live", "twin"):
            raise ValueError(f"mode must be 'live' or 'twin', got {mode!r}")
        if not step_s > 0 or plant_dt_s < 0 or (substep_s is not None and not substep_s > 0):
            raise ValueError("step_s and substep_s must be > 0 and plant_dt_s >= 0")
        self.plant = plant
        self.controller = controller
        self.mode = mode
        self.step_s = step_s
        self.plant_dt_s = plant_dt_s
        self.substep_s = substep_s
        self.lock = threading.RLock()
        self.enabled = True
        self.steps = 0
        self._apply = apply
        self._keys: dict[str, ActionResult] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    @property
    def gate(self) -> SafetyGate:
        """The controller's safety gate."""
        return self.controller.gate

    def start(self) -> None:
        """Start the loop thread."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name="control-loop")
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.step_s):
            with self.lock:
                try:
                    left = self.plant_dt_s
                    while True:
                        dt = left if self.substep_s is None else min(self.substep_s, left)
                        self.plant.advance(dt)
                        left -= dt
                        if self.enabled:
                            self.controller.step()
                        if left <= 1e-9:
                            break
                    self.steps += 1
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"

    def emergency_stop(self, reason: str) -> float:
        """Halt actuation now; returns the plant time it took effect."""
        with self.lock:
            self.controller.emergency_stop(reason)
            return self.plant.now_s

    def resume(self) -> None:
        """Lift an emergency stop."""
        with self.lock:
            self.controller.resume()

    def heal(self, action: Action, key: str | None, origin: str = "manual") -> dict[str, Any]:
        """A manual action through the safety gate; the same ``key`` never runs twice.

        ``origin`` prefixes the reason of the decision record (``manual``, ``evolve``...).
        """
        with self.lock:
            if key is not None and key in self._keys:
                prior = self._keys[key]
                return {"verdict": "duplicate", "executed": False, "action_id": prior.action_id,
                        "reason": f"idempotency key {key!r} was used by action "
                                  f"{prior.action_id}"}
            obs = self.plant.observe()
            now = self.plant.now_s
            verdict = self.gate.check(action, obs, now)
            log = self.plant.log
            if verdict.kind != "allowed":
                log.add(DecisionRecord(log.next_seq, now, -1, action.kind, action.target,
                                       verdict.kind, f"{origin}: {verdict.reason}", False))
                return {"verdict": verdict.kind, "executed": False, "action_id": -1,
                        "reason": verdict.reason}
            result = (self._apply(action, key) if self._apply is not None
                      else self.plant.apply(action))
            if result.accepted:
                self.gate.started(action, result.action_id, obs, now)
                if key is not None:
                    self._keys[key] = result
            log.add(DecisionRecord(log.next_seq, now, -1, action.kind, action.target,
                                   "allowed" if result.accepted else "rejected",
                                   f"{origin}: {result.reason or 'operator request'}",
                                   result.accepted, result.action_id))
            return {"verdict": "allowed" if result.accepted else "rejected",
                    "executed": result.accepted, "action_id": result.action_id,
                    "reason": result.reason}

    def wait_steps(self, n: int, timeout_s: float = 10.0) -> bool:
        """Block until the loop has made ``n`` more steps (for tests and scripts)."""
        target = self.steps + n
        deadline = time.monotonic() + timeout_s
        while self.steps < target and time.monotonic() < deadline:
            time.sleep(self.step_s / 4)
        return self.steps >= target
