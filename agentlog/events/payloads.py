"""What agents hand to each other: the validated outputs of the content pipeline.

These structs double as the JSON schema sent to the model for structured output and as
the validator of its answer; nothing downstream ever sees an answer that failed them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class AreaFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    area: str
    facts: list[str]


class Findings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The researcher's output: key areas, facts per area, misconceptions, sources."""

    key_areas: list[str]
    facts: list[AreaFacts]
    misconceptions: list[str]
    sources: list[str]


Score = Annotated[int, msgspec.Meta(ge=1, le=10)]


class Review(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The reviewer's output: a 1-10 score, its verdict, and what to change."""

    score: Score
    approved: bool
    issues: list[str]
    missed_topics: list[str]
    suggestions: list[str]
    summary: str
