"""The researcher's CLI (``tunefleet``) and SDK (:class:`client.sdk.Client`)."""

import os as _os

# gRPC's C core logs a TLS handshake failure at INFO on stderr, in its own format, before the
# error the CLI prints in one line: only its errors are wanted (the caller's setting wins)
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
