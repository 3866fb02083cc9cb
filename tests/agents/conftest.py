"""Torch on one thread: the tests share a small machine, and determinism needs no more."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
