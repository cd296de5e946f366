"""Myelin: a Matrix homeserver on append-only event logs."""

__version__ = "0.1.0"
