"""Seeded simulation of RawNodes over a faulty network (see sim.py)."""
