"""interlock: inline safety interlocks for AI agents."""

__version__ = "0.1.0"
