"""Agents: optimisers and policies that act on a plant."""
