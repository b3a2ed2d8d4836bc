#!/usr/bin/env bash
# Set up qroute, fetch the built-in models, and route and answer a sample prompt.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/qroute models pull
.venv/bin/qroute run --explain "${1:-Write a Python function that checks whether a string is a palindrome.}"
