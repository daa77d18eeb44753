"""Shared harness of the reliability suites: simulators on loopback, real ``roomkey serve``
processes, booking traffic, the oracle that compares what happened with the correct plan,
the figures written for docs/reliability.md, and the test-only sabotage switches."""
