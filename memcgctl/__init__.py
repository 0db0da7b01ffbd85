"""memcgctl: strict-priority OOM handling for Linux memory cgroups."""

__version__ = "0.1.0"
