"""The entry points' job log: INFO to the Hydra job's ``<job name>.log``, warnings to stderr.

Hydra's default job logging writes INFO records to standard output, whose last line every
entry point keeps for its JSON result, and to a ``<job name>.log`` file that nothing here
wrote to, so each run's output folder (and its MLflow artifacts) held an empty log. With
the ``novacron`` option of ``hydra/job_logging`` that every entry point selects, the file
records what ran (the composed config) and what came out (the result line), with whatever
the libraries log at INFO; the console shows only warnings and errors, on stderr.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from experiments import jsonout

OPTION = "novacron"
"""The ``hydra/job_logging`` option the entry points select."""

JOB_LOGGING: dict[str, Any] = {
    "version": 1,
    "formatters": {
        "simple": {"format": "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "simple",
            "stream": "ext://sys.stderr",
            "level": "WARNING",
        },
        "file": {
            "class": "logging.FileHandler",
            "formatter": "simple",
            "filename": "${hydra.runtime.output_dir}/${hydra.job.name}.log",
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "file"]},
    "disable_existing_loggers": False,
}


def register() -> None:
    """Store the ``novacron`` job-logging option in Hydra's ConfigStore."""
    ConfigStore.instance().store(group="hydra/job_logging", name=OPTION, node=JOB_LOGGING)


def log_config(name: str, cfg: DictConfig) -> None:
    """Write the composed config of the job to its log."""
    text = OmegaConf.to_yaml(cfg, resolve=False).rstrip()
    logging.getLogger(name).info("config:\n%s", text)


def log_result(name: str, line: Any) -> None:
    """Write the job's result line (the JSON it prints last) to its log."""
    logging.getLogger(name).info("result: %s", jsonout.dumps(line))
