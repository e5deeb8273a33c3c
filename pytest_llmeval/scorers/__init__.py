"""Scorers (placeholder until the scorer module lands)."""
