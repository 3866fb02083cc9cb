"""Agents: healing policies, the runtime of exported policies, and the optimisers.

Policies share one ``predict`` protocol; the optimisers (genetic search, Bayesian
optimisation, an online tuner) act on a plant. Importing this package imports nothing heavy:
:mod:`agents.dqn` (stable-baselines3, torch) and :mod:`agents.export` are imported only by
whoever trains or exports; :mod:`agents.runtime` needs only numpy and onnxruntime.
"""
