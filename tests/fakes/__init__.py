"""Fake upstream LLM servers and helper processes for the test suite.

Independent of the `router` package on purpose: the fakes follow the real wire
formats, not our implementation of them.
"""

from .process import FakeProxy, FakeUpstream, ManagedProcess, free_port, spawn_process

__all__ = ["FakeProxy", "FakeUpstream", "ManagedProcess", "free_port", "spawn_process"]
