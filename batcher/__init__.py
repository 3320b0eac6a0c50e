"""batcher: mass-delink loyalty customers from Capillary partner programs."""
