"""Figures and tables built from scans and results."""
