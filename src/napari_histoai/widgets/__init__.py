"""Thin Qt docks: read layers, start jobs, show results. No numerics here."""
