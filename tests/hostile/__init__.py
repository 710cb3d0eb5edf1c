"""Hostile inputs against the dock: packages attacking the jail (test_jail_*.py) and others."""
