"""Autonomous control plane: detection, RCA, remediation, incidents, safety, KPIs."""
