"""Outside inputs that are not kernel files, read only: a saved kernel log, the
kubelet's (or API server's) pod list."""
