"""Generation: a prompt and a pair in, tokens out (the draft/verify loop, drafters, backends, model pool, threads)."""
