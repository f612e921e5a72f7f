from tunefleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gpu(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_total_gb", "memory_free_gb", "compute_capability")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_GB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_GB_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_total_gb: float
    memory_free_gb: float
    compute_capability: str
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_gb: _Optional[float] = ..., memory_free_gb: _Optional[float] = ..., compute_capability: _Optional[str] = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("gpus", "cpu_slots", "driver_version", "cuda_version", "hostname", "platform")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    cpu_slots: int
    driver_version: str
    cuda_version: str
    hostname: str
    platform: str
    def __init__(self, gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., cpu_slots: _Optional[int] = ..., driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("name", "inventory", "time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    inventory: Inventory
    time: float
    def __init__(self, name: _Optional[str] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., time: _Optional[float] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("node_id", "lease_seconds")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    lease_seconds: float
    def __init__(self, node_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("node_id", "hello", "heartbeat", "report", "finished", "declined")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hello: Hello
    heartbeat: Heartbeat
    report: MetricReport
    finished: AttemptFinished
    declined: AttemptDeclined
    def __init__(self, node_id: _Optional[str] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., report: _Optional[_Union[MetricReport, _Mapping]] = ..., finished: _Optional[_Union[AttemptFinished, _Mapping]] = ..., declined: _Optional[_Union[AttemptDeclined, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("inventory", "running_attempts", "draining")
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    inventory: Inventory
    running_attempts: _containers.RepeatedScalarFieldContainer[int]
    draining: bool
    def __init__(self, inventory: _Optional[_Union[Inventory, _Mapping]] = ..., running_attempts: _Optional[_Iterable[int]] = ..., draining: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running_attempts", "draining")
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    running_attempts: _containers.RepeatedScalarFieldContainer[int]
    draining: bool
    def __init__(self, running_attempts: _Optional[_Iterable[int]] = ..., draining: _Optional[bool] = ...) -> None: ...

class MetricReport(_message.Message):
    __slots__ = ("attempt_id", "seq", "step", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    seq: int
    step: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, attempt_id: _Optional[int] = ..., seq: _Optional[int] = ..., step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AttemptFinished(_message.Message):
    __slots__ = ("attempt_id", "outcome", "exit_code", "error", "gpu_seconds", "wall_seconds", "reports_sent", "gpu_utilization", "gpu_memory_peak_gb")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_SENT_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_PEAK_GB_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    outcome: str
    exit_code: int
    error: str
    gpu_seconds: float
    wall_seconds: float
    reports_sent: int
    gpu_utilization: float
    gpu_memory_peak_gb: float
    def __init__(self, attempt_id: _Optional[int] = ..., outcome: _Optional[str] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., gpu_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., reports_sent: _Optional[int] = ..., gpu_utilization: _Optional[float] = ..., gpu_memory_peak_gb: _Optional[float] = ...) -> None: ...

class AttemptDeclined(_message.Message):
    __slots__ = ("attempt_id", "reason")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    reason: str
    def __init__(self, attempt_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("assignment", "report_ack", "stop", "finished_ack", "error")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    REPORT_ACK_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    FINISHED_ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    report_ack: ReportAck
    stop: StopOrder
    finished_ack: FinishedAck
    error: SessionError
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., report_ack: _Optional[_Union[ReportAck, _Mapping]] = ..., stop: _Optional[_Union[StopOrder, _Mapping]] = ..., finished_ack: _Optional[_Union[FinishedAck, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("attempt_id", "study_id", "trial_id", "params", "bundle_digest", "entrypoint", "fidelity_max", "gpu_uuids", "lease_seconds", "metric")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.ParamValue, _Mapping]] = ...) -> None: ...
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_MAX_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    study_id: str
    trial_id: int
    params: _containers.MessageMap[str, _common_pb2.ParamValue]
    bundle_digest: str
    entrypoint: str
    fidelity_max: int
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    metric: str
    def __init__(self, attempt_id: _Optional[int] = ..., study_id: _Optional[str] = ..., trial_id: _Optional[int] = ..., params: _Optional[_Mapping[str, _common_pb2.ParamValue]] = ..., bundle_digest: _Optional[str] = ..., entrypoint: _Optional[str] = ..., fidelity_max: _Optional[int] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ..., metric: _Optional[str] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("attempt_id", "seq", "decision")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    seq: int
    decision: str
    def __init__(self, attempt_id: _Optional[int] = ..., seq: _Optional[int] = ..., decision: _Optional[str] = ...) -> None: ...

class StopOrder(_message.Message):
    __slots__ = ("attempt_id", "reason")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    reason: str
    def __init__(self, attempt_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FinishedAck(_message.Message):
    __slots__ = ("attempt_id",)
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    def __init__(self, attempt_id: _Optional[int] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class BundleRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...
