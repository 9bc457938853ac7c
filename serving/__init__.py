"""Serving: the FastAPI app, thin routes over recsys / search / features, and the model registry."""
