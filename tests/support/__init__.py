"""Helpers shared by the test suites: a real server process, a spec validator, a client."""
