"""The committed gRPC stubs are exactly what the .proto files generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    committed = sorted(p.relative_to(ROOT / "proto")
                       for p in (ROOT / "proto" / "tunefleet" / "v1").glob("*_pb2*.py*"))
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_text() == (ROOT / "proto" / rel).read_text(), (
            f"{rel} is stale: run `make proto` and commit the result"
        )
