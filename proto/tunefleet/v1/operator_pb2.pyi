from tunefleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessRequest(_message.Message):
    __slots__ = ("key_id", "action", "reason")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    action: str
    reason: str
    def __init__(self, key_id: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AccessEntry(_message.Message):
    __slots__ = ("key_id", "state", "reason", "changed_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    state: str
    reason: str
    changed_at: float
    def __init__(self, key_id: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., changed_at: _Optional[float] = ...) -> None: ...

class AccessReply(_message.Message):
    __slots__ = ("entry", "sessions_ended", "studies_stopped")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    STUDIES_STOPPED_FIELD_NUMBER: _ClassVar[int]
    entry: AccessEntry
    sessions_ended: int
    studies_stopped: int
    def __init__(self, entry: _Optional[_Union[AccessEntry, _Mapping]] = ..., sessions_ended: _Optional[int] = ..., studies_stopped: _Optional[int] = ...) -> None: ...

class ListAccessRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AccessList(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AccessEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AccessEntry, _Mapping]]] = ...) -> None: ...
