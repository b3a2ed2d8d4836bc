"""Inference backends. Only backends/llama.py imports llama_cpp."""
