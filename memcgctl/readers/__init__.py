"""Readers: the only code that opens cgroup and proc files.

Each reader takes its root path, so tests point the same code at a fixture tree.
"""
