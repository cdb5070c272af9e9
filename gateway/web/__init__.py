"""The gateway's web endpoints on aiohttp: /status, /health and /metrics today; the member page
is meant to be added here as further routes (app.py)."""
