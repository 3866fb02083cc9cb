"""Healing agents behind one ``predict`` protocol, and the runtime of exported policies.

Importing this package imports nothing heavy: :mod:`agents.dqn` (stable-baselines3, torch)
and :mod:`agents.export` are imported only by whoever trains or exports;
:mod:`agents.runtime` needs only numpy and onnxruntime.
"""
