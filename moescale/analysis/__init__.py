"""Plots and reports from results and fits (matplotlib; never torch or ray)."""
