"""Test helpers (imported by test modules; fixtures live in the conftest.py files)."""
