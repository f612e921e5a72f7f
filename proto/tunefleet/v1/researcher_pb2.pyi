from tunefleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BundleRef(_message.Message):
    __slots__ = ("digest", "already_present")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    already_present: bool
    def __init__(self, digest: _Optional[str] = ..., already_present: _Optional[bool] = ...) -> None: ...

class StudyRef(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class StopStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StudyList(_message.Message):
    __slots__ = ("studies",)
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[StudyInfo]
    def __init__(self, studies: _Optional[_Iterable[_Union[StudyInfo, _Mapping]]] = ...) -> None: ...

class TrialCounts(_message.Message):
    __slots__ = ("pending", "running", "completed", "pruned", "failed")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    pending: int
    running: int
    completed: int
    pruned: int
    failed: int
    def __init__(self, pending: _Optional[int] = ..., running: _Optional[int] = ..., completed: _Optional[int] = ..., pruned: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class StudyInfo(_message.Message):
    __slots__ = ("study_id", "name", "state", "spec", "counts", "best", "owner_key_id", "created_at", "ended_at", "end_reason", "gpu_hours", "slot_hours", "credits", "waiting_for")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    SLOT_HOURS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    name: str
    state: str
    spec: _common_pb2.StudySpec
    counts: TrialCounts
    best: TrialInfo
    owner_key_id: str
    created_at: float
    ended_at: float
    end_reason: str
    gpu_hours: float
    slot_hours: float
    credits: float
    waiting_for: str
    def __init__(self, study_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.StudySpec, _Mapping]] = ..., counts: _Optional[_Union[TrialCounts, _Mapping]] = ..., best: _Optional[_Union[TrialInfo, _Mapping]] = ..., owner_key_id: _Optional[str] = ..., created_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., end_reason: _Optional[str] = ..., gpu_hours: _Optional[float] = ..., slot_hours: _Optional[float] = ..., credits: _Optional[float] = ..., waiting_for: _Optional[str] = ...) -> None: ...

class ListTrialsRequest(_message.Message):
    __slots__ = ("study_id", "include_reports", "page_token", "page_size", "paged")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGED_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    include_reports: bool
    page_token: str
    page_size: int
    paged: bool
    def __init__(self, study_id: _Optional[str] = ..., include_reports: _Optional[bool] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ..., paged: _Optional[bool] = ...) -> None: ...

class TrialInfo(_message.Message):
    __slots__ = ("trial_id", "state", "params", "value", "step", "attempts", "node_id", "error", "reports", "verification", "verification_detail", "gpu_utilization", "gpu_memory_peak_gb")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.ParamValue, _Mapping]] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_PEAK_GB_FIELD_NUMBER: _ClassVar[int]
    trial_id: int
    state: str
    params: _containers.MessageMap[str, _common_pb2.ParamValue]
    value: float
    step: int
    attempts: int
    node_id: str
    error: str
    reports: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    verification: str
    verification_detail: str
    gpu_utilization: float
    gpu_memory_peak_gb: float
    def __init__(self, trial_id: _Optional[int] = ..., state: _Optional[str] = ..., params: _Optional[_Mapping[str, _common_pb2.ParamValue]] = ..., value: _Optional[float] = ..., step: _Optional[int] = ..., attempts: _Optional[int] = ..., node_id: _Optional[str] = ..., error: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ..., verification: _Optional[str] = ..., verification_detail: _Optional[str] = ..., gpu_utilization: _Optional[float] = ..., gpu_memory_peak_gb: _Optional[float] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("step", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    step: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TrialList(_message.Message):
    __slots__ = ("trials", "next_page_token")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[TrialInfo]
    next_page_token: str
    def __init__(self, trials: _Optional[_Iterable[_Union[TrialInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
