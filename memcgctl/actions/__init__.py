"""Actions that change the system (killing), behind small interfaces with fakes."""
