"""Data layer: declarative base, portable column types, engines and sessions.

All SQLite/PostgreSQL differences live in this package (see ``dialect.py``).
"""
