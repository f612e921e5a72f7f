from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedEnvelope(_message.Message):
    __slots__ = ("body", "public_key", "signature", "seq", "time")
    BODY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    public_key: bytes
    signature: bytes
    seq: int
    time: float
    def __init__(self, body: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., seq: _Optional[int] = ..., time: _Optional[float] = ...) -> None: ...

class ParamValue(_message.Message):
    __slots__ = ("float_value", "int_value", "string_value", "bool_value")
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    float_value: float
    int_value: int
    string_value: str
    bool_value: bool
    def __init__(self, float_value: _Optional[float] = ..., int_value: _Optional[int] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("name", "type", "low", "high", "log", "choices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    low: ParamValue
    high: ParamValue
    log: bool
    choices: _containers.RepeatedCompositeFieldContainer[ParamValue]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., low: _Optional[_Union[ParamValue, _Mapping]] = ..., high: _Optional[_Union[ParamValue, _Mapping]] = ..., log: _Optional[bool] = ..., choices: _Optional[_Iterable[_Union[ParamValue, _Mapping]]] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("metric", "mode")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    mode: str
    def __init__(self, metric: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_trials", "max_gpu_hours", "deadline", "max_credits")
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    MAX_GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    MAX_CREDITS_FIELD_NUMBER: _ClassVar[int]
    max_trials: int
    max_gpu_hours: float
    deadline: float
    max_credits: float
    def __init__(self, max_trials: _Optional[int] = ..., max_gpu_hours: _Optional[float] = ..., deadline: _Optional[float] = ..., max_credits: _Optional[float] = ...) -> None: ...

class SearchSettings(_message.Message):
    __slots__ = ("searcher", "scheduler", "seed", "max_running", "enqueue")
    SEARCHER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_FIELD_NUMBER: _ClassVar[int]
    searcher: str
    scheduler: str
    seed: int
    max_running: int
    enqueue: _containers.RepeatedCompositeFieldContainer[Config]
    def __init__(self, searcher: _Optional[str] = ..., scheduler: _Optional[str] = ..., seed: _Optional[int] = ..., max_running: _Optional[int] = ..., enqueue: _Optional[_Iterable[_Union[Config, _Mapping]]] = ...) -> None: ...

class Config(_message.Message):
    __slots__ = ("params",)
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.MessageMap[str, ParamValue]
    def __init__(self, params: _Optional[_Mapping[str, ParamValue]] = ...) -> None: ...

class Fidelity(_message.Message):
    __slots__ = ("min", "max", "eta")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    eta: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ..., eta: _Optional[int] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("gpus", "min_gpu_memory_gb")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MIN_GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    gpus: int
    min_gpu_memory_gb: float
    def __init__(self, gpus: _Optional[int] = ..., min_gpu_memory_gb: _Optional[float] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("fraction", "tolerance", "best")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    tolerance: float
    best: bool
    def __init__(self, fraction: _Optional[float] = ..., tolerance: _Optional[float] = ..., best: _Optional[bool] = ...) -> None: ...

class StudySpec(_message.Message):
    __slots__ = ("name", "bundle_digest", "entrypoint", "objective", "budget", "search", "fidelity", "space", "resources", "verification")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    bundle_digest: str
    entrypoint: str
    objective: Objective
    budget: Budget
    search: SearchSettings
    fidelity: Fidelity
    space: _containers.RepeatedCompositeFieldContainer[Parameter]
    resources: Resources
    verification: Verification
    def __init__(self, name: _Optional[str] = ..., bundle_digest: _Optional[str] = ..., entrypoint: _Optional[str] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., search: _Optional[_Union[SearchSettings, _Mapping]] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ..., space: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ...) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BundleHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BundleHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("digest", "size", "publisher_key", "signature")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    publisher_key: bytes
    signature: bytes
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., publisher_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
