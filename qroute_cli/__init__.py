"""qroute: per-prompt routing of local LLM draft/verify pairs with speculative decoding."""

__version__ = "0.1.0"
