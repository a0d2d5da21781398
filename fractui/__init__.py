"""fractui: share every GPU of a fleet between many jobs, from one terminal."""

__version__ = "0.1.0"
