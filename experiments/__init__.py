"""Experiment entry points: Hydra composes the config, MLflow records the run.

Only this package imports Hydra and MLflow; each entry point converts its config once to the
typed dataclasses of ``sim`` / ``control`` and calls their plain functions.
"""
