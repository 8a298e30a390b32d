"""Reliability proof of the embedded engine (issue 6): crashes, faults, concurrency, hostile input, erasure."""
