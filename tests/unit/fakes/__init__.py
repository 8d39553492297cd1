"""Fake executables (kas, kas-container, bmaptool) and helpers for edgectl's unit tests."""
