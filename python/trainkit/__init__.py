"""trainkit: pre-train language models on exact mixtures of datasets, on Kubernetes or on one machine."""

__version__ = "0.1.0"
