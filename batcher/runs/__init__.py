"""A run as a whole: its folder, execute, validate, lineage (resume/retry/report), history, lock."""
