"""The contract suite: the behaviour of the public API, run on every backend (see conftest.py)."""
