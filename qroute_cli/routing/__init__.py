"""Routing: a prompt in, a pair out (scorer, features, latency model, calibration, online learning, run log, policy, Router)."""
