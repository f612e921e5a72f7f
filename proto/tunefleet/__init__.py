"""tunefleet: the package every party shares.

It holds what the coordinator, the node agent and the client must agree on: identities and
signed envelopes (:mod:`tunefleet.keys`, :mod:`tunefleet.envelope`), the bundle format
(:mod:`tunefleet.bundle`), the search space and study schema (:mod:`tunefleet.space`,
:mod:`tunefleet.study`), the trial API that training code imports (:mod:`tunefleet.trial`), the
protobuf conversions (:mod:`tunefleet.serde`) and the error types (:mod:`tunefleet.errors`).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
