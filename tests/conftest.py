"""Shared pytest setup. Its presence in the ``tests`` package also puts the repository root
on ``sys.path`` (pytest's rootdir-based import), so tests can ``import tests.fixtures``."""
