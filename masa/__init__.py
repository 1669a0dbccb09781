"""masa: the agent platform (hosts, agents, naming, migration, node list, store)."""

__version__ = "0.1.0"
