"""The vocabulary of agentlog: typed, versioned events, payloads and their codec.

Imports nothing else of agentlog.
"""

from .codec import CodecError, blob_refs, decode, encode, pack, request_hash, to_builtins
from .payloads import AreaFacts, Findings, Review
from .types import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    AgentConfig,
    AgentReconfigured,
    ApprovalDecided,
    ApprovalRequested,
    BudgetReached,
    CallRef,
    DraftReady,
    Event,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunClaimed,
    RunQueued,
    RunResumed,
    RunStarted,
    SettingsChanged,
    SweepMember,
    SweepSpec,
    SweepVariant,
    ToolCall,
    ToolInvoked,
    ToolReturned,
    ToolSpec,
    Usage,
    apply_reconfiguration,
)

__all__ = [
    "EVENT_TYPES", "TERMINAL_TYPES", "AgentConfig", "AgentReconfigured", "ApprovalDecided", "ApprovalRequested",
    "AreaFacts", "BudgetReached", "CallRef",
    "CodecError", "DraftReady", "Event", "Findings", "FindingsReady", "LLMCallAnswered",
    "LLMCallFailed", "LLMCallRequested", "OutputRejected", "ResearchPartReady", "Review", "ReviewScored",
    "RunFailed",
    "RunClaimed", "RunFinished", "RunForked", "RunQueued", "RunResumed", "RunStarted", "SettingsChanged",
    "SweepMember", "SweepSpec",
    "SweepVariant", "ToolCall", "ToolInvoked", "ToolReturned", "ToolSpec", "Usage", "apply_reconfiguration",
    "blob_refs", "decode", "encode", "pack", "request_hash",
    "to_builtins",
]
