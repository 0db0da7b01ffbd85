"""memcgctl's own files in the state directory: the badness registry, the journal, the
running kill totals, and the locking and hardening they share."""
