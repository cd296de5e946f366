"""Accounts, devices, access tokens, account data and filters."""
