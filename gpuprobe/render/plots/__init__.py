"""Figures, one module per figure family."""
