"""homellm: run your own LLM at home and share it safely with every device in the house."""

__version__ = "0.1.0"
