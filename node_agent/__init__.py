"""The provider's daemon: reports GPUs, runs signed training bundles, streams signed metrics."""
