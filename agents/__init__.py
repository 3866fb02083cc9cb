"""Agents: learned and rule-based components that act on or reason about a plant."""
