"""Metrics: pure functions over arrays (parity, calibration, alignment, bootstrap intervals)."""
