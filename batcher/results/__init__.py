"""What the API answered: the journal and the per-row outcomes."""
