"""The modeler's HTTP side: the dependency-model interface as JSON and the supervision page."""
