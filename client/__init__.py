"""The researcher's CLI (``tunefleet``) and SDK (:class:`client.sdk.Client`)."""
