"""Fixtures of the agent tests."""

from __future__ import annotations

import torch

# Tiny GPs are dominated by per-call overhead; extra intra-op threads only contend.
torch.set_num_threads(1)
