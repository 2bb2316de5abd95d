"""Siyu (私域): an open platform for a WeChat mini-program store and its private-domain audience."""

__version__ = "0.1.0"
