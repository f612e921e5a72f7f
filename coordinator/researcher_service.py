"""The researcher-facing gRPC service: translates messages and delegates to the hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import Message

from coordinator.grpc_errors import guarded
from coordinator.models import StudyState
from coordinator.trial_pages import trial_page
from coordinator.views import study_info_to_proto
from tunefleet import serde
from tunefleet.bundle import MAX_BUNDLE_BYTES, read_manifest, verify_bundle
from tunefleet.envelope import open_envelope
from tunefleet.errors import BundleError, InvalidInputError, NotFoundError, StateError
from tunefleet.keys import key_id_of
from tunefleet.read_auth import read_signer
from tunefleet.unknown_fields import refuse_unknown_fields
from tunefleet.v1 import common_pb2, researcher_pb2, researcher_pb2_grpc

if TYPE_CHECKING:
    from coordinator.server import CoordinatorServer

__all__ = ["ResearcherServicer"]

WATCH_POLL_SECONDS = 0.5
MAX_SPEC_BYTES = 256 * 1024


def manifest_entrypoint(manifest: dict[str, object]) -> str:
    """The entrypoint a bundle's manifest names; :class:`BundleError` if it names none (the
    agent runs the study's entrypoint, so the coordinator holds a study to its bundle's)."""
    entrypoint = manifest.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint:
        raise BundleError("the bundle's manifest names no entrypoint")
    return entrypoint


class ResearcherServicer(researcher_pb2_grpc.ResearcherServiceServicer):
    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.hub = server.hub_thread

    async def UploadBundle(
        self, request_iterator: AsyncIterator[common_pb2.BundleChunk],
        context: grpc.aio.ServicerContext,
    ) -> researcher_pb2.BundleRef:
        async def work() -> researcher_pb2.BundleRef:
            header: common_pb2.BundleHeader | None = None
            parts: list[bytes] = []
            received = 0
            async for chunk in request_iterator:
                if header is None:
                    if not chunk.HasField("header"):
                        raise InvalidInputError("header", None, "the first chunk must carry it")
                    header = chunk.header
                    await self.hub.call(self.server.hub.check_researcher,
                                        key_id_of(header.publisher_key))
                    if not 0 < header.size <= MAX_BUNDLE_BYTES:
                        raise InvalidInputError(
                            "header.size", header.size, f"must be in [1, {MAX_BUNDLE_BYTES}]"
                        )
                elif chunk.HasField("header"):
                    raise InvalidInputError("header", "in a later chunk",
                                            "only the first chunk carries one")
                received += len(chunk.data)
                if received > header.size:
                    raise InvalidInputError("data", received, f"exceeds header.size {header.size}")
                parts.append(chunk.data)
            if header is None:
                raise InvalidInputError("chunks", 0, "a bundle upload needs at least one chunk")
            if received != header.size:
                raise InvalidInputError("data", f"{received:,} bytes",
                                        f"must be header.size ({header.size:,}) bytes")
            data = b"".join(parts)
            verify_bundle(data, header.digest, header.publisher_key, header.signature)
            manifest = await asyncio.to_thread(read_manifest, data)
            manifest_entrypoint(manifest)  # a bundle at all
            publisher = key_id_of(header.publisher_key)
            named = manifest.get("publisher", publisher)  # older clients named nobody
            if named != publisher:
                # else one researcher could sign a copy of another's bundle first and so keep
                # its owner from submitting it (a study runs only its owner's bundles)
                raise InvalidInputError("manifest.publisher", named,
                                        f"must be the key that signs the bundle, {publisher}")
            present = await self.hub.call(
                self.server.hub.put_bundle, header.digest, data, header.publisher_key,
                publisher, header.signature,
            )
            return researcher_pb2.BundleRef(digest=header.digest, already_present=present)

        return await guarded(context, work())

    async def SubmitStudy(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> researcher_pb2.StudyInfo:
        async def work() -> researcher_pb2.StudyInfo:
            message, signer = open_envelope(request, common_pb2.StudySpec,
                                            max_skew=self.server.max_skew)
            hub = self.server.hub
            await self.hub.call(hub.check_researcher, signer)
            if len(request.body) > MAX_SPEC_BYTES:
                raise InvalidInputError("spec", f"{len(request.body)} bytes",
                                        f"at most {MAX_SPEC_BYTES} bytes")
            refuse_unknown_fields(message, "spec")  # a newer client's settings, never dropped
            spec, digest = await self.hub.call(serde.spec_from_proto, message)  # off the loop
            try:
                row = await self.hub.call(hub.store.get_bundle, digest)
            except NotFoundError:
                row = None
            # a missing bundle or someone else's: submit_study refuses it, naming no more
            if row is not None and row["publisher_key_id"] == signer:
                named = manifest_entrypoint(await asyncio.to_thread(read_manifest, row["data"]))
                if spec.entrypoint != named:
                    raise InvalidInputError(
                        "entrypoint", spec.entrypoint,
                        f"must be the one the bundle's signed manifest names, {named!r}")
            await self.hub.call(hub.accept, signer, request.seq)
            study_id = await self.hub.call(hub.submit_study, spec, digest, request.body, signer)
            await self.server.deliver(await self.hub.call(hub.assign_all))
            return study_info_to_proto(await self.hub.call(hub.study_view, study_id))

        return await guarded(context, work())

    async def _reader(self, context: grpc.aio.ServicerContext, request: Message,
                      study_id: str | None) -> str:
        """The signer of this read, once it is known to be allowed to read ``study_id``."""
        signer = read_signer(context.invocation_metadata(), request, self.server.max_skew)
        await self.hub.call(self.server.hub.check_reader, signer, study_id)
        return signer

    async def GetStudy(
        self, request: researcher_pb2.StudyRef, context: grpc.aio.ServicerContext
    ) -> researcher_pb2.StudyInfo:
        async def work() -> researcher_pb2.StudyInfo:
            await self._reader(context, request, request.study_id)
            view = await self.hub.call(self.server.hub.study_view, request.study_id)
            return study_info_to_proto(view)

        return await guarded(context, work())

    async def ListStudies(
        self, request: researcher_pb2.ListStudiesRequest, context: grpc.aio.ServicerContext
    ) -> researcher_pb2.StudyList:
        async def work() -> researcher_pb2.StudyList:
            reader = await self._reader(context, request, None)
            views = await self.hub.call(self.server.hub.list_studies, reader)
            out = researcher_pb2.StudyList()
            for view in views:
                info = study_info_to_proto(view)
                info.spec.ClearField("space")  # kept small: GetStudy has the whole spec
                out.studies.append(info)
            return out

        return await guarded(context, work())

    async def ListTrials(
        self, request: researcher_pb2.ListTrialsRequest, context: grpc.aio.ServicerContext
    ) -> researcher_pb2.TrialList:
        def collect() -> researcher_pb2.TrialList:
            page = trial_page(self.server.hub.store, request.study_id, request.include_reports,
                              request.page_token, request.page_size)
            if page.next_page_token and not request.paged:
                raise StateError(
                    "this study's trials need more than one reply, and this client reads only "
                    "one: update tunefleet (its clients read the trials in pages)")
            return page

        async def work() -> researcher_pb2.TrialList:
            await self._reader(context, request, request.study_id)
            return await self.hub.call(collect)

        return await guarded(context, work())

    async def StopStudy(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> researcher_pb2.StudyInfo:
        async def work() -> researcher_pb2.StudyInfo:
            message, signer = open_envelope(request, researcher_pb2.StopStudyRequest,
                                            max_skew=self.server.max_skew)
            refuse_unknown_fields(message, "request")  # a newer client's option, never dropped
            hub = self.server.hub
            await self.hub.call(hub.accept, signer, request.seq)
            await self.server.deliver(await self.hub.call(hub.stop_study, message.study_id, signer))
            return study_info_to_proto(await self.hub.call(hub.study_view, message.study_id))

        return await guarded(context, work())

    async def WatchStudy(
        self, request: researcher_pb2.StudyRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[researcher_pb2.StudyInfo]:
        last: bytes | None = None
        reader = await guarded(context, self._reader(context, request, request.study_id))
        while True:
            # the signature is checked once, the access at every poll: a ban ends the stream
            await guarded(context, self.hub.call(self.server.hub.check_reader, reader,
                                                 request.study_id))
            view = await guarded(
                context, self.hub.call(self.server.hub.study_view, request.study_id)
            )
            info = study_info_to_proto(view)
            encoded = info.SerializeToString()
            if encoded != last:
                last = encoded
                yield info
            if view.study.state is not StudyState.RUNNING:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.stopping.wait(), WATCH_POLL_SECONDS)
            if self.server.stopping.is_set():  # a client that follows it reconnects later
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "the coordinator is shutting down")
