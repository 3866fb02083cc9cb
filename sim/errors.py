"""Errors raised by the twin for bad input."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration; the message names the field and the problem."""


class ActionError(ValueError):
    """An action that cannot be applied: unknown kind or target, or a failed precondition."""
