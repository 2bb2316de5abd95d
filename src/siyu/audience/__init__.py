"""Audience: member statistics, lifecycle stages, RFM tiers and predicted customer value.

The pure-math modules (``rfm``, ``summary``, ``clv``) depend only on numpy/scipy and are fed
from the database by the service layer.
"""
