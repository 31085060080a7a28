"""DermaEdge: offline skin-lesion screening on a Raspberry Pi."""

__version__ = "0.1.0"
