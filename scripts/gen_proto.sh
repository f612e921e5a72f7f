#!/usr/bin/env bash
# Regenerate the committed gRPC stubs from proto/tunefleet/v1/*.proto.
# Usage: scripts/gen_proto.sh [OUTDIR]   (default: proto, i.e. in place)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-proto}"
mkdir -p "$out"
"${PYTHON:-python}" -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" \
  --pyi_out="$out" proto/tunefleet/v1/*.proto
