"""Model files: where they live, how they are fetched and verified."""
