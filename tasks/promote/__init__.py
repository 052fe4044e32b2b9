"""The promotion gate: challenger vs champion on the same frozen test sets, then alias moves."""
