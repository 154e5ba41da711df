"""Serving: ``llmdag serve`` (server.py, an OpenAI-compatible API on transformers' serving handlers), the checks
it makes on each request (requests.py), the chat page (pages/) and ``serving/smoke`` (smoke.py, assets.py)."""
