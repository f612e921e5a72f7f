"""Bad input and forged messages against a real coordinator process: refused, nothing stored."""

from __future__ import annotations

import hashlib
import queue
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client, CoordinatorError, build_bundle
from tests.integration.helpers import cli, query
from tunefleet import serde
from tunefleet.bundle import SignedBundle, pack_directory, sign_digest
from tunefleet.envelope import seal
from tunefleet.keys import Identity, load
from tunefleet.read_auth import MAX_TOKEN_BYTES, READ_AUTH_METADATA, read_metadata
from tunefleet.study import load_study_file
from tunefleet.tls import open_channel
from tunefleet.v1 import (
    common_pb2,
    node_pb2,
    node_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    researcher_pb2,
    researcher_pb2_grpc,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(agents=0, state_dir=tmp_path_factory.mktemp("refusals")) as c:
        yield c


def counts(db: Path) -> tuple[int, int, int]:
    return tuple(query(db, f"SELECT COUNT(*) FROM {t}")[0][0]  # type: ignore[return-value]
                 for t in ("studies", "trials", "reports"))


BAD_STUDIES = {
    "unknown parameter type": ('x = { type = "float", low = 0.0, high = 1.0 }',
                               'x = { type = "complex", low = 0.0, high = 1.0 }', "space.x.type"),
    "low >= high": ('x = { type = "float", low = 0.0, high = 1.0 }',
                    'x = { type = "float", low = 1.0, high = 1.0 }', "low < high"),
    "log with low <= 0": ('x = { type = "float", low = 0.0, high = 1.0 }',
                          'x = { type = "float", low = 0.0, high = 1.0, log = true }',
                          "space.x.low"),
    "empty choices": ('x = { type = "float", low = 0.0, high = 1.0 }',
                      'x = { type = "categorical", choices = [] }', "space.x.choices"),
    "unknown searcher": ('searcher = "random"', 'searcher = "annealing"', "search.searcher"),
    "fidelity min > max": ("min = 1\nmax = 3", "min = 5\nmax = 3", "fidelity"),
    "missing objective metric": ('metric = "loss"\n', "", "objective.metric"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_cli_refuses_bad_study_and_stores_nothing(case: str, cluster: LocalCluster,
                                                  tiny_train_dir: Path) -> None:
    old, new, field = BAD_STUDIES[case]
    study = tiny_train_dir / "study.toml"
    text = study.read_text()
    assert old in text
    study.write_text(text.replace(old, new))
    before = counts(cluster.db_path)
    bundles = query(cluster.db_path, "SELECT COUNT(*) FROM bundles")[0][0]
    proc = cli("submit", str(study), *cluster.connection_args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunefleet: error:") and field in lines[0]
    assert counts(cluster.db_path) == before
    assert query(cluster.db_path, "SELECT COUNT(*) FROM bundles")[0][0] == bundles


def _raw_spec(tiny_train_dir: Path, client: Client) -> common_pb2.StudySpec:
    spec = load_study_file(tiny_train_dir / "study.toml")
    bundle = build_bundle(spec, tiny_train_dir, client.identity)
    client.upload(bundle)
    return serde.spec_to_proto(spec, bundle.digest)


def _mutations() -> dict[str, Any]:
    def param(m: common_pb2.StudySpec) -> common_pb2.Parameter:
        return m.space[0]

    return {
        "unknown parameter type": lambda m: setattr(param(m), "type", "complex"),
        "low >= high": lambda m: param(m).high.CopyFrom(serde.value_to_proto(-1.0)),
        "log with low <= 0": lambda m: setattr(param(m), "log", True),
        "empty choices": lambda m: (setattr(param(m), "type", "categorical"),
                                    param(m).ClearField("choices")),
        "unknown searcher": lambda m: setattr(m.search, "searcher", "annealing"),
        "unknown scheduler": lambda m: setattr(m.search, "scheduler", "sometimes"),
        "fidelity min > max": lambda m: setattr(m.fidelity, "min", 10),
        "missing objective metric": lambda m: setattr(m.objective, "metric", ""),
        "bundle not uploaded": lambda m: setattr(m, "bundle_digest", "0" * 64),
        # before, accepted: the agents then ran a file the signed manifest does not name
        "entrypoint not the bundle's": lambda m: setattr(m, "entrypoint", "other.py"),
        "malformed digest": lambda m: setattr(m, "bundle_digest", "xyz"),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_server_validates_what_the_client_did_not(case: str, cluster: LocalCluster,
                                                  tiny_train_dir: Path) -> None:
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        message = _raw_spec(tiny_train_dir, client)
        _mutations()[case](message)
        before = counts(cluster.db_path)
        with pytest.raises(CoordinatorError) as info:
            client.submit_spec(message)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details  # names the field and the value
    assert counts(cluster.db_path) == before


def test_settings_this_coordinator_does_not_know_are_refused(cluster: LocalCluster,
                                                            tiny_train_dir: Path) -> None:
    """A newer client's study setting (here: a budget key numbered 9 and a top-level field 101)
    is refused by name instead of being dropped, so no study runs without a limit its owner
    set."""
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        known = _raw_spec(tiny_train_dir, client)
        client.submit_spec(known)  # the same spec without the unknown fields is accepted
        wire = known.SerializeToString() + b"\x2a\x02\x48\x05" + b"\xa8\x06\x01"
        message = common_pb2.StudySpec.FromString(wire)
        assert message.budget.max_trials == known.budget.max_trials  # merged, known part kept
        before = counts(cluster.db_path)
        with pytest.raises(CoordinatorError) as info:
            client.submit_spec(message)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "spec" in info.value.details and "upgrade the coordinator" in info.value.details
    assert "unknown field number(s) 101, budget.9" in info.value.details
    assert counts(cluster.db_path) == before


def test_stop_with_an_option_this_coordinator_does_not_know_is_refused(
        cluster: LocalCluster, tiny_train_dir: Path) -> None:
    """A newer client's stop option (field 2, say "keep the running trials") is refused by
    name, and the study goes on, instead of a stop that ignores what its owner asked for."""
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
    wire = researcher_pb2.StopStudyRequest(study_id=study_id).SerializeToString() + b"\x10\x01"
    request = researcher_pb2.StopStudyRequest.FromString(wire)
    assert request.study_id == study_id  # the known part is read as before
    with open_channel(cluster.address, cluster.security) as channel:
        stub = researcher_pb2_grpc.ResearcherServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.StopStudy(seal(identity, request), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in info.value.details() and "unknown field number(s) 2" in info.value.details()
    assert query(cluster.db_path, "SELECT state FROM studies WHERE id = ?",
                 (study_id,)) == [("running",)]
    with Client(cluster.address, identity, cluster.security) as client:
        assert client.stop(study_id).state == "stopped"  # the same stop without it works


def test_access_change_with_a_condition_this_coordinator_does_not_know_is_refused(
        cluster: LocalCluster) -> None:
    """An operator tool's newer condition on an admission (field 4, say an expiry) is refused
    by name: the key is not admitted without the condition the operator set."""
    operator = load(cluster.tls_dir / "operator.key")
    key_id = Identity.generate().key_id
    wire = (operator_pb2.AccessRequest(key_id=key_id, action="admit").SerializeToString()
            + b"\x20\x80\xa3\x05")
    with open_channel(cluster.address, cluster.security) as channel:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ChangeAccess(seal(operator, operator_pb2.AccessRequest.FromString(wire)),
                              timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown field number(s) 4" in info.value.details()
        assert query(cluster.db_path, "SELECT COUNT(*) FROM access WHERE key_id = ?",
                     (key_id,)) == [(0,)]
        reply = stub.ChangeAccess(seal(operator, operator_pb2.AccessRequest(
            key_id=key_id, action="admit")), timeout=30)
    assert reply.entry.state == "admitted"


def test_unsigned_or_forged_study_is_refused(cluster: LocalCluster, tiny_train_dir: Path) -> None:
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        message = _raw_spec(tiny_train_dir, client)
        envelope = seal(identity, message)
        envelope.body = envelope.body + b"\x10\x01"  # changed after signing
        before = counts(cluster.db_path)
        with pytest.raises(grpc.RpcError) as info:
            client._stub.SubmitStudy(envelope)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert counts(cluster.db_path) == before


def test_bundle_changed_after_signing_is_refused(cluster: LocalCluster, tiny_train_dir: Path
                                                 ) -> None:
    identity, _ = researcher_identity()
    spec = load_study_file(tiny_train_dir / "study.toml")
    bundle = build_bundle(spec, tiny_train_dir, identity)
    data = bytearray(bundle.data)
    data[len(data) // 2] ^= 0xFF
    for forged in (
        SignedBundle(bytes(data), bundle.digest, bundle.publisher_key, bundle.signature),
        SignedBundle(bytes(data), hashlib.sha256(data).hexdigest(),
                     bundle.publisher_key, bundle.signature),
        SignedBundle(bundle.data, bundle.digest, Identity.generate().public_key,
                     bundle.signature),
    ):
        with Client(cluster.address, identity, cluster.security) as client, \
                pytest.raises(CoordinatorError) as info:
            client.upload(forged)
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        # Nothing forged is stored: any row under this digest is the genuine upload.
        for data_, key in query(cluster.db_path,
                                "SELECT data, publisher_key FROM bundles WHERE digest = ?",
                                (forged.digest,)):
            assert data_ == bundle.data
            assert key != forged.publisher_key or forged.publisher_key == bundle.publisher_key


@pytest.mark.parametrize("case", ["size-over", "size-under", "second-header"])
def test_an_upload_whose_bytes_disagree_with_its_header_is_refused(
        case: str, cluster: LocalCluster, tiny_train_dir: Path) -> None:
    # before, header.size was only an upper bound and a later chunk's header was ignored
    identity, _ = researcher_identity()
    bundle = build_bundle(load_study_file(tiny_train_dir / "study.toml"), tiny_train_dir,
                          identity)
    size = {"size-over": len(bundle.data) + 100, "size-under": len(bundle.data) - 1}.get(
        case, len(bundle.data))
    header = common_pb2.BundleHeader(digest=bundle.digest, size=size,
                                     publisher_key=bundle.publisher_key,
                                     signature=bundle.signature)
    half = len(bundle.data) // 2
    chunks = ([common_pb2.BundleChunk(header=header, data=bundle.data[:half]),
               common_pb2.BundleChunk(header=header, data=bundle.data[half:])]
              if case == "second-header" else
              [common_pb2.BundleChunk(header=header, data=bundle.data)])
    expected = {"size-over": "data: got '.* bytes'; must be header.size",
                "size-under": "data: got .*; exceeds header.size",
                "second-header": "header: got 'in a later chunk'; only the first chunk"}[case]
    with open_channel(cluster.address, cluster.security) as channel:
        stub = researcher_pb2_grpc.ResearcherServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadBundle(iter(chunks), timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(expected, info.value.details() or ""), info.value.details()


def test_signed_bytes_that_are_no_bundle_are_refused(cluster: LocalCluster) -> None:
    # before, any bytes with a valid digest and signature were stored as a bundle, and the
    # studies that used them failed on every node
    identity, _ = researcher_identity()
    data = b"garbage, not a bundle"
    digest = hashlib.sha256(data).hexdigest()
    forged = SignedBundle(data, digest, identity.public_key, sign_digest(identity, digest))
    with Client(cluster.address, identity, cluster.security) as client, \
            pytest.raises(CoordinatorError) as info:
        client.upload(forged)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert query(cluster.db_path, "SELECT COUNT(*) FROM bundles WHERE digest = ?",
                 (digest,)) == [(0,)]


def test_a_study_cannot_run_another_researchers_bundle(cluster: LocalCluster,
                                                       tiny_train_dir: Path) -> None:
    # before, a researcher who knew a digest could submit a study with it, and the nodes that
    # trust the bundle's publisher ran that code with the other researcher's parameters
    owner, _ = researcher_identity()
    spec = load_study_file(tiny_train_dir / "study.toml")
    bundle = build_bundle(spec, tiny_train_dir, owner)
    with Client(cluster.address, owner, cluster.security) as client:
        client.upload(bundle)
    other = Identity.generate()
    before = counts(cluster.db_path)
    with Client(cluster.address, other, cluster.security) as client, \
            pytest.raises(CoordinatorError) as info:
        client.submit_spec(serde.spec_to_proto(spec, bundle.digest))
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert f"signed by another key, not by {other.key_id}" in info.value.details
    assert owner.key_id not in info.value.details  # nobody learns whose a digest is
    assert counts(cluster.db_path) == before
    # the same files packed by the other researcher name it: a bundle of its own, accepted
    mine = build_bundle(spec, tiny_train_dir, other)
    assert mine.digest != bundle.digest
    with Client(cluster.address, other, cluster.security) as client:
        assert client.upload(mine) is False
        status = client.submit_spec(serde.spec_to_proto(spec, mine.digest))
        assert client.stop(status.study_id).state == "stopped"


def test_a_bundle_whose_manifest_names_another_publisher_is_refused(
        cluster: LocalCluster, tiny_train_dir: Path) -> None:
    # else a researcher could store a copy of another's bundle under its own signature first,
    # and the owner's own upload of it would then be refused at submission
    signer, named = Identity.generate(), Identity.generate()
    spec = load_study_file(tiny_train_dir / "study.toml")
    bundle = pack_directory(tiny_train_dir, {"entrypoint": spec.entrypoint,
                                             "publisher": named.key_id}, signer)
    with Client(cluster.address, signer, cluster.security) as client, \
            pytest.raises(CoordinatorError) as info:
        client.upload(bundle)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"manifest.publisher: got {named.key_id!r}" in info.value.details
    assert signer.key_id in info.value.details
    assert query(cluster.db_path, "SELECT COUNT(*) FROM bundles WHERE digest = ?",
                 (bundle.digest,)) == [(0,)]


def _session(stub: node_pb2_grpc.NodeServiceStub, node: Identity, inventory: node_pb2.Inventory,
             second: Callable[[int, int], list[common_pb2.SignedEnvelope]]
             ) -> tuple[list[str], grpc.RpcError | None]:
    """Open a session as ``node``; once assigned an attempt, send ``second(attempt, hello_seq)``
    (one or more envelopes, back to back)."""
    hello = seal(node, node_pb2.NodeEvent(node_id=node.key_id,
                                          hello=node_pb2.Hello(inventory=inventory)))
    q: queue.Queue[common_pb2.SignedEnvelope | None] = queue.Queue()
    q.put(hello)

    def requests() -> Iterator[common_pb2.SignedEnvelope]:
        while (item := q.get()) is not None:
            yield item

    kinds: list[str] = []
    try:
        for message in stub.Session(requests(), timeout=20):
            kinds.append(message.WhichOneof("kind"))
            if message.WhichOneof("kind") == "assignment":
                for envelope in second(message.assignment.attempt_id, hello.seq):
                    q.put(envelope)
    except grpc.RpcError as exc:
        return kinds, exc
    finally:
        q.put(None)
    return kinds, None


def _report(attempt_id: int) -> node_pb2.MetricReport:
    return node_pb2.MetricReport(attempt_id=attempt_id, seq=1, step=1, metrics={"loss": -100.0})


def test_forged_replayed_and_stale_reports_are_refused(cluster: LocalCluster,
                                                       tiny_train_dir: Path) -> None:
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
    node, intruder = Identity.generate(), Identity.generate()
    inventory = node_pb2.Inventory(cpu_slots=1)

    def forged(attempt_id: int, _: int) -> list[common_pb2.SignedEnvelope]:
        envelope = seal(intruder, node_pb2.NodeEvent(node_id=node.key_id,
                                                     report=_report(attempt_id)))
        envelope.public_key = node.public_key  # claims to be the node
        # and right behind it a genuine report: the session is over, so it is not handled
        genuine = seal(node, node_pb2.NodeEvent(node_id=node.key_id, report=_report(attempt_id)))
        return [envelope, genuine]

    def replayed(attempt_id: int, hello_seq: int) -> list[common_pb2.SignedEnvelope]:
        return [seal(node, node_pb2.NodeEvent(node_id=node.key_id, report=_report(attempt_id)),
                     seq=hello_seq)]  # a sequence number the coordinator has seen

    def stale(attempt_id: int, _: int) -> list[common_pb2.SignedEnvelope]:
        return [seal(node, node_pb2.NodeEvent(node_id=node.key_id, report=_report(attempt_id)),
                     when=time.time() - 3600)]

    with open_channel(cluster.address, cluster.security) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        stub.Register(seal(node, node_pb2.RegisterRequest(name="n", inventory=inventory)))
        for second in (forged, replayed, stale):
            kinds, error = _session(stub, node, inventory, second)
            assert "assignment" in kinds, second.__name__
            assert error is not None and error.code() is grpc.StatusCode.UNAUTHENTICATED, (
                second.__name__)
            assert query(cluster.db_path, "SELECT COUNT(*) FROM reports WHERE study_id = ?",
                         (study_id,))[0][0] == 0
        # A whole replayed registration is refused as well.
        envelope = seal(node, node_pb2.RegisterRequest(name="n", inventory=inventory))
        stub.Register(envelope)
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(envelope)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with Client(cluster.address, identity, cluster.security) as client:
        client.stop(study_id)


def test_stop_by_someone_else_is_refused(cluster: LocalCluster, tiny_train_dir: Path) -> None:
    identity, _ = researcher_identity()
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
    with Client(cluster.address, Identity.generate(), cluster.security) as other, \
            pytest.raises(CoordinatorError) as info:
        other.stop(study_id)
    assert info.value.code is grpc.StatusCode.NOT_FOUND  # the same as a study that is not there
    assert "only its owner or the operator" in info.value.details
    with Client(cluster.address, identity, cluster.security) as client:
        assert client.status(study_id).state == "running"
        assert client.stop(study_id).state == "stopped"


def test_unknown_study_is_not_found(cluster: LocalCluster) -> None:
    cli("keygen", check=True)
    proc = cli("status", "nope", *cluster.connection_args)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "tunefleet: error: NOT_FOUND: study 'nope' does not exist or is not yours: only its "
        "owner or the operator may read or stop it")


def test_reading_without_a_key_says_how_to_get_one(cluster: LocalCluster) -> None:
    proc = cli("status", "nope", *cluster.connection_args)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "needs the researcher key that submitted it" in line and "tunefleet keygen" in line


def _get_study(cluster: LocalCluster, study_id: str,
               metadata: tuple[tuple[str, bytes], ...]) -> grpc.StatusCode:
    channel = open_channel(cluster.address, cluster.security)
    try:
        stub = researcher_pb2_grpc.ResearcherServiceStub(channel)
        stub.GetStudy(researcher_pb2.StudyRef(study_id=study_id), metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    finally:
        channel.close()


def test_reads_show_a_study_only_to_its_owner_and_the_operator(
    cluster: LocalCluster, tiny_train_dir: Path
) -> None:
    owner, stranger = Identity.generate(), Identity.generate()
    with Client(cluster.address, owner, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
        assert client.status(study_id).study_id == study_id
        assert [s.study_id for s in client.studies()] == [study_id]
        assert client.trials(study_id) == []
    with Client(cluster.address, stranger, cluster.security) as other:
        for read in (other.status, other.trials, lambda s: next(iter(other.watch(s)))):
            with pytest.raises(CoordinatorError) as info:
                read(study_id)
            # the same answer as for a study that does not exist: ids of others stay unknown
            assert info.value.code is grpc.StatusCode.NOT_FOUND
            assert "only its owner or the operator" in info.value.details
            with pytest.raises(CoordinatorError) as missing:
                read("0" * len(study_id))
            assert missing.value.code is grpc.StatusCode.NOT_FOUND
            assert missing.value.details.replace("0" * len(study_id), "ID") == \
                info.value.details.replace(study_id, "ID")
        with pytest.raises(CoordinatorError) as stop:
            other.stop(study_id)
        assert stop.value.code is grpc.StatusCode.NOT_FOUND
        assert study_id not in [s.study_id for s in other.studies()]
    operator = load(cluster.tls_dir / "operator.key")
    with Client(cluster.address, operator, cluster.security) as client:
        assert client.status(study_id).study_id == study_id
        assert study_id in [s.study_id for s in client.studies()]
    request = researcher_pb2.StudyRef(study_id=study_id)
    assert _get_study(cluster, study_id, read_metadata(owner, request)) is grpc.StatusCode.OK
    refused = {
        "unsigned": (),
        "another request": read_metadata(owner, researcher_pb2.StudyRef(study_id="other")),
        "another type": read_metadata(owner, researcher_pb2.ListTrialsRequest(study_id=study_id)),
        "stale": ((READ_AUTH_METADATA,
                   seal(owner, request, when=time.time() - 3600).SerializeToString()),),
        "garbage": ((READ_AUTH_METADATA, b"\x0a\xff not an envelope"),),
        "too large": ((READ_AUTH_METADATA, b"x" * (MAX_TOKEN_BYTES + 1)),),
    }
    for case, metadata in refused.items():
        assert _get_study(cluster, study_id, metadata) is grpc.StatusCode.UNAUTHENTICATED, case


def test_unreachable_coordinator_is_one_line() -> None:
    cli("keygen", check=True)
    proc = cli("status", "x", "--coordinator", "127.0.0.1:1", "--insecure")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the coordinator at 127.0.0.1:1" in lines[0]
