"""`qroute serve`: the router behind an OpenAI-compatible HTTP API.

app.py builds the ASGI app (endpoints, the one worker thread, auth and size limits),
models.py the request and response bodies and model names, metrics.py the Prometheus metrics.
The CLI command (cli/commands/serve.py) imports this package only when it runs.
"""
