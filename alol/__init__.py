"""alol: offline reinforcement learning for language models on data that already exists."""

__version__ = "0.1.0"
