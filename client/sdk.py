"""The researcher SDK: submit studies and read their results from a coordinator.

    from client.sdk import Client
    from tunefleet.tls import ChannelSecurity
    with Client("127.0.0.1:7070", identity, ChannelSecurity(ca=Path("ca.pem"))) as c:
        study_id = c.submit_file("study.toml")
        for status in c.watch(study_id):
            print(status.counts)
        print(c.status(study_id).best)

Every call raises :class:`client.sdk.CoordinatorError` with the coordinator's status code and
message when the coordinator refuses it or cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import grpc
from google.protobuf.message import Message

from client.results import StudyStatus, TrialResult, space_order, status_from_proto, trial_from_proto
from tunefleet import serde
from tunefleet.bundle import SignedBundle, pack_directory
from tunefleet.envelope import seal
from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.keys import Identity
from tunefleet.read_auth import read_metadata
from tunefleet.search_limits import check_search_limits
from tunefleet.study import StudySpec, deadline_text, load_study_file
from tunefleet.tls import ChannelSecurity, open_channel
from tunefleet.v1 import common_pb2, researcher_pb2, researcher_pb2_grpc

__all__ = ["Client", "CoordinatorError", "build_bundle"]

CHUNK = 1024 * 1024


class CoordinatorError(TunefleetError):
    """The coordinator refused a call, or could not be reached."""

    def __init__(self, code: grpc.StatusCode, details: str, address: str,
                 insecure: bool = False) -> None:
        self.code = code
        self.details = details
        if code is grpc.StatusCode.UNAVAILABLE:
            text = f"cannot reach the coordinator at {address} ({details})"
            if "handshake failed" in details.lower():
                text = (f"cannot reach the coordinator at {address}: its TLS certificate is "
                        "not one --ca trusts (give the ca.pem of this coordinator's `coordinator "
                        "init`; a plaintext coordinator needs --insecure)")
            elif insecure and "socket closed" in details.lower():
                text += ("; if it is a TLS coordinator, give its ca.pem with --ca instead of "
                         "--insecure")
        else:
            text = f"{code.name}: {details}"
        super().__init__(text)


def check_submittable(spec: StudySpec, bundle_dir: Path, now: float | None = None) -> None:
    """Raise :class:`InvalidInputError` for what a coordinator would refuse in a study that
    :func:`tunefleet.study.load_study_file` accepted, checked here before any key, upload or
    cluster exists: an entrypoint missing from the bundle directory, a search this version
    cannot run (a grid too large, a GP input too wide), or a deadline already past by this
    machine's clock (``now``; the coordinator judges by its own)."""
    if not (bundle_dir / spec.entrypoint).is_file():
        raise InvalidInputError("entrypoint", spec.entrypoint,
                                f"must be a file in the bundle directory {bundle_dir}")
    check_search_limits(spec)
    now = time.time() if now is None else now
    if spec.budget.deadline is not None and spec.budget.deadline <= now:
        raise InvalidInputError("budget.deadline", deadline_text(spec.budget.deadline),
                                f"is past: this machine's clock says {deadline_text(now)}")
    serde.spec_to_proto(spec, "0" * 64)  # what the message cannot carry


MAX_STUDY_ID_CHARS = 64  # a coordinator's ids are 12 hex digits


def _checked_id(study_id: object) -> str:
    """``study_id`` if it can name a study; else :class:`InvalidInputError` (before any call)."""
    if not isinstance(study_id, str) or not 0 < len(study_id) <= MAX_STUDY_ID_CHARS \
            or not study_id.isprintable():
        raise InvalidInputError("study_id", study_id if not isinstance(study_id, str)
                                else study_id[:80], "must be a study id such as 1a2b3c4d5e6f "
                                "(as submit and `tunefleet studies` print it)")
    return study_id


def build_bundle(spec: StudySpec, directory: Path, identity: Identity) -> SignedBundle:
    """Pack and sign a study's bundle directory with its manifest.

    The manifest names the signing researcher (``publisher``), so two researchers' bundles of
    the same files differ: the coordinator runs a study only with its own researcher's bundle.
    """
    if not (directory / spec.entrypoint).is_file():
        raise InvalidInputError("entrypoint", spec.entrypoint,
                                f"must be a file in the bundle directory {directory}")
    manifest = {
        "entrypoint": spec.entrypoint,
        "publisher": identity.key_id,
        "requirements": _requirements(directory),
        "resources": {"gpus": spec.resources.gpus,
                      "min_gpu_memory_gb": spec.resources.min_gpu_memory_gb},
    }
    return pack_directory(directory, manifest, identity)


def _requirements(directory: Path) -> list[str]:
    path = directory / "requirements.txt"
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


class Client:
    """A connection to a coordinator, acting as the researcher ``identity``."""

    def __init__(self, address: str, identity: Identity | None, security: ChannelSecurity,
                 timeout: float = 30.0) -> None:
        """Connect to ``address`` over TLS pinned to ``security.ca`` (plaintext only when
        ``security`` explicitly says insecure)."""
        self.address = address
        self.identity = identity
        self.security = security
        self.timeout = timeout
        self._channel = open_channel(address, security)
        self._stub = researcher_pb2_grpc.ResearcherServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def _signer(self) -> Identity:
        if self.identity is None:
            raise TunefleetError("this call must be signed: create a key with `tunefleet keygen`")
        return self.identity

    def _read(self, request: Message) -> tuple[tuple[str, bytes], ...]:
        """Metadata that signs a read: the coordinator shows a study only to its owner."""
        if self.identity is None:
            raise TunefleetError(
                "reading a study needs the researcher key that submitted it; none was found "
                "(create one with `tunefleet keygen`, or set TUNEFLEET_HOME to the home that "
                "holds it)"
            )
        return read_metadata(self.identity, request)

    def close(self) -> None:
        self._channel.close()

    def _error(self, exc: grpc.RpcError) -> CoordinatorError:
        return CoordinatorError(exc.code(), exc.details() or "",  # type: ignore[attr-defined]
                                self.address, self.security.insecure)

    def upload(self, bundle: SignedBundle) -> bool:
        """Upload a signed bundle; returns whether the coordinator already had it."""
        def chunks() -> Iterator[common_pb2.BundleChunk]:
            header = common_pb2.BundleHeader(
                digest=bundle.digest, size=len(bundle.data),
                publisher_key=bundle.publisher_key, signature=bundle.signature,
            )
            yield common_pb2.BundleChunk(header=header, data=bundle.data[:CHUNK])
            for offset in range(CHUNK, len(bundle.data), CHUNK):
                yield common_pb2.BundleChunk(data=bundle.data[offset: offset + CHUNK])

        try:
            reply = self._stub.UploadBundle(chunks(), timeout=self.timeout * 4)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return bool(reply.already_present)

    def submit(self, spec: StudySpec, bundle_dir: Path) -> StudyStatus:
        """Check what can be checked here (:func:`check_submittable`), then pack, sign and
        upload the bundle and submit the study."""
        check_submittable(spec, bundle_dir)
        bundle = build_bundle(spec, bundle_dir, self._signer())
        self.upload(bundle)
        return self.submit_spec(serde.spec_to_proto(spec, bundle.digest))

    def submit_spec(self, message: common_pb2.StudySpec) -> StudyStatus:
        """Submit an already built study message (its bundle must be uploaded)."""
        try:
            reply = self._stub.SubmitStudy(seal(self._signer(), message), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return status_from_proto(reply)

    def submit_file(self, path: str | Path) -> str:
        """Validate a study file, submit it, and return the study id."""
        path = Path(path)
        spec = load_study_file(path)
        return self.submit(spec, (path.parent / spec.bundle).resolve()).study_id

    def status(self, study_id: str) -> StudyStatus:
        return status_from_proto(self._study_info(study_id))

    def study_spec(self, study_id: str) -> common_pb2.StudySpec:
        """The study as it was submitted (its spec message, bundle digest included)."""
        return self._study_info(study_id).spec

    def _study_info(self, study_id: str) -> researcher_pb2.StudyInfo:
        request = researcher_pb2.StudyRef(study_id=_checked_id(study_id))
        try:
            reply: researcher_pb2.StudyInfo = self._stub.GetStudy(
                request, timeout=self.timeout, metadata=self._read(request))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return reply

    def studies(self) -> list[StudyStatus]:
        request = researcher_pb2.ListStudiesRequest()
        try:
            reply = self._stub.ListStudies(request, timeout=self.timeout,
                                           metadata=self._read(request))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return [status_from_proto(s) for s in reply.studies]

    def trials(self, study_id: str, include_reports: bool = False, page_size: int = 0
               ) -> list[TrialResult]:
        """Every trial of the study, each one's params in the study's ``[space]`` order (which
        one more call, GetStudy, reads: the trials' protobuf maps keep no order). The trials
        come in pages of at most ``page_size`` (0: the coordinator's default, 200) and about
        2 MiB, one call each."""
        order = space_order(self._study_info(study_id))
        trials: list[researcher_pb2.TrialInfo] = []
        token = ""
        while True:  # one call per page of trials (see ListTrialsRequest)
            request = researcher_pb2.ListTrialsRequest(
                study_id=_checked_id(study_id), include_reports=include_reports, page_token=token,
                page_size=page_size, paged=True,
            )
            try:
                reply = self._stub.ListTrials(request, timeout=self.timeout,
                                              metadata=self._read(request))
            except grpc.RpcError as exc:
                raise self._error(exc) from None
            for trial in reply.trials:
                if trials and trials[-1].trial_id == trial.trial_id:
                    # a trial whose reports did not fit in one page: the later part is newer
                    reports = [*trials[-1].reports, *trial.reports]
                    del trial.reports[:]
                    trial.reports.extend(reports)
                    trials[-1] = trial
                else:
                    trials.append(trial)
            if not reply.next_page_token:
                return [trial_from_proto(t, order) for t in trials]
            if reply.next_page_token == token:
                raise TunefleetError(f"the coordinator at {self.address} repeated the page "
                                     f"token {token!r} of study {study_id}'s trials")
            token = reply.next_page_token

    def stop(self, study_id: str) -> StudyStatus:
        request = researcher_pb2.StopStudyRequest(study_id=_checked_id(study_id))
        try:
            reply = self._stub.StopStudy(seal(self._signer(), request), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return status_from_proto(reply)

    def watch(self, study_id: str) -> Iterator[StudyStatus]:
        """Yield the study's status whenever it changes, until it ends."""
        request = researcher_pb2.StudyRef(study_id=_checked_id(study_id))
        try:
            for info in self._stub.WatchStudy(request, metadata=self._read(request)):
                yield status_from_proto(info)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
