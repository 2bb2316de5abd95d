"""Clients for the third-party services Siyu talks to."""
