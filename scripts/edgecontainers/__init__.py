"""meta-edgecontainers tooling: the ``edgectl`` command and the test harness."""

__version__ = "0.1.0"
