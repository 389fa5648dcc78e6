"""The HTTP face of the stop: the FastAPI app, the session-key check, the route's settings."""
