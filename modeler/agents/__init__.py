"""The modeling layer's agents: modelers (sources in, versioned models out) and the neural
agents that score pair batches for them.  Registered as kinds ``modeler`` and ``neural``."""

from modeler.agents.modeler import ModelerAgent
from modeler.agents.neural import NeuralAgent

__all__ = ["ModelerAgent", "NeuralAgent"]
