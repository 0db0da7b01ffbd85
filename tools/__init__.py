"""Generators for the completion scripts and the man page (run them after changing commands)."""
