"""Evaluation: task formats and data, answer metrics, the bench's result matrix and strategies."""
