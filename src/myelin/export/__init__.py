"""Exporters that read the room event log, e.g. into a matrixdir."""
