"""Helpers shared by several test suites, so that each is written once."""
