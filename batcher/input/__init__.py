"""Reading the hand-off: files, rows (normalise, validate, dedupe), and the tables written back."""
