"""What agents hand to each other: the validated outputs of the content pipeline.

These structs double as the JSON schema sent to the model for structured output and as
the validator of its answer; nothing downstream ever sees an answer that failed them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


# Bounds keep a small model's schema-constrained decoding from looping forever inside a
# list or a string; they are generous for a capable model.
Line = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Lines = Annotated[list[Line], msgspec.Meta(max_length=8)]


class AreaFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    area: Line
    facts: Lines


class Findings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The researcher's output: key areas, facts per area, misconceptions, sources."""

    key_areas: Annotated[list[Line], msgspec.Meta(min_length=1, max_length=8)]
    facts: Annotated[list[AreaFacts], msgspec.Meta(max_length=8)]
    misconceptions: Lines
    sources: Lines


Score = Annotated[int, msgspec.Meta(ge=1, le=10)]


class Review(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The reviewer's output: a 1-10 score, its verdict, and what to change."""

    score: Score
    approved: bool
    issues: Lines
    missed_topics: Lines
    suggestions: Lines
    summary: Annotated[str, msgspec.Meta(max_length=1000)]
