"""Entrypoints that run inside a Ray cluster (the operator's RayJob runs `python -m trainkit.jobs.train`)."""
