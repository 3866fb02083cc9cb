"""The Hydra config: schemas mirror the library, every option composes, one conversion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from control.engine import EngineConfig
from control.run import AGENTS, OperatorSpec, RunSpec, build_twin
from control.safety import SafetyConfig
from experiments.config import (
    CONFIG_ERRORS,
    EngineSchema,
    OperatorSchema,
    SafetySchema,
    error_line,
    register_configs,
    to_run_spec,
    to_schema,
)
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _compose(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _spec(*overrides: str) -> RunSpec:
    return to_run_spec(to_schema(_compose(*overrides)))


def test_defaults_are_the_library_defaults() -> None:
    """With no overrides the config converts to RunSpec(): mixed, 100 hosts, 24 h, seed 0."""
    spec = _spec()
    assert spec == RunSpec()
    assert (spec.scenario, spec.hosts, spec.hours, spec.seed, spec.agent) == (
        "mixed", 100, 24.0, 0, "rules",
    )


@pytest.mark.parametrize(
    ("schema", "library"),
    [(SafetySchema, SafetyConfig), (OperatorSchema, OperatorSpec), (EngineSchema, EngineConfig)],
)
def test_group_schemas_mirror_library_dataclasses(schema: type, library: type) -> None:
    """Each group schema has exactly the library dataclass's fields, with equal defaults."""
    ours = dataclasses.asdict(schema())
    theirs = dataclasses.asdict(library())
    assert list(ours) == list(theirs)
    for name, value in ours.items():
        expected = theirs[name]
        assert (list(value) if isinstance(value, list) else value) == (
            list(expected) if isinstance(expected, tuple) else expected
        ), name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_registered_scenario_is_an_option(name: str) -> None:
    """scenario=<id> selects that scenario for every id in sim.scenarios.SCENARIOS."""
    assert _spec(f"scenario={name}").scenario == name


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_is_an_option(name: str) -> None:
    """agent=<name> selects that healing agent."""
    assert _spec(f"agent={name}").agent == name


def test_the_canary_stage_reaches_the_twin_config() -> None:
    """cluster.canary_share / canary_bake_s become the twin's DeploySpec; off by default."""
    assert not _spec().deploys.staged
    spec = _spec("cluster.canary_share=0.125", "cluster.canary_bake_s=300")
    assert (spec.deploys.canary_share, spec.deploys.canary_bake_s) == (0.125, 300.0)
    assert build_twin(spec).config.deploys == spec.deploys


def test_yaml_options_override_only_what_they_name() -> None:
    """cluster=small, safety=strict / dry_run and tracking=off change just their fields."""
    assert _spec("cluster=small").hosts == 20
    strict = _spec("safety=strict").safety
    assert strict.human_approval_required and strict.safety_mode
    assert strict.cooldown_s == SafetyConfig().cooldown_s
    assert _spec("safety=dry_run").safety.dry_run
    assert to_schema(_compose("tracking=off")).tracking.enabled is False


def test_overrides_reach_the_run_spec() -> None:
    """Command-line values land in the typed spec, lists as tuples."""
    spec = _spec("seed=7", "scenario.hours=0.5", "cluster.tick_s=2", "cluster.probe_interval_s=4",
                 "safety.approval_risks=[medium,high]", "operator.approval_prob=0.5",
                 "engine.slo_target=0.99")
    assert (spec.seed, spec.hours, spec.tick_s, spec.probe_interval_s) == (7, 0.5, 2.0, 4.0)
    assert spec.safety.approval_risks == ("medium", "high")
    assert spec.operator.approval_prob == 0.5
    assert spec.engine.slo_target == 0.99


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("cluster.hosts=0", "cluster.hosts"),
        ("scenario.hours=-1", "scenario.hours"),
        ("cluster.probe_interval_s=0.5", "cluster.probe_interval_s"),
        ("seed=-3", "seed"),
        ("scenario.name=nope", "scenario.name"),
        ("agent.name=smart", "agent.name"),
        ("safety.max_capacity_share=2", "safety.max_capacity_share"),
        ("operator.approval_prob=1.5", "operator.approval_prob"),
        ("engine.slo_target=0", "engine.slo_target"),
    ],
)
def test_out_of_range_values_name_their_key(override: str, key: str) -> None:
    """The one conversion raises ConfigError whose message starts with the config key."""
    with pytest.raises(ConfigError) as err:
        _spec(override)
    assert str(err.value).startswith(key + " ") or str(err.value).startswith(key + ":")


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("agent=smart", "agent: unknown option 'smart'; available: noop, rules"),
        ("safety.dry_run=maybe", "safety.dry_run: Value 'maybe' is not a valid bool (type str)"),
        ("cluster.hosts=1.5", "cluster.hosts: Value '1.5' of type 'float' could not be converted"),
        ("operator.bogus=1", "operator.bogus: Key 'bogus' not in 'OperatorSchema'"),
        ("+cluster.extra=1", "cluster.extra: unknown key; known here: hosts, tick_s"),
        ("seed=[1", "cannot parse override 'seed=[1'"),
    ],
)
def test_composition_errors_become_one_line_naming_the_key(override: str, line: str) -> None:
    """Unknown options, wrong types, unknown keys and bad syntax read as one line."""
    with pytest.raises(CONFIG_ERRORS) as err:
        _spec(override)
    text = error_line(err.value)
    assert "\n" not in text
    assert text.startswith(line)
