"""Every exception the node raises on purpose, in one tree.

    NodeError
    ├── ConfigError           bad configuration; start-up stops (not retriable)
    ├── SchemaError           an Avro schema file is unusable; start-up stops (not retriable)
    ├── CatalogError          the resource catalog has problems; start-up stops (not retriable)
    ├── GrantRefused          a grant operation cannot be done (an answer to the caller)
    ├── EnvelopeError         a record's headers are missing or malformed (not retriable: refuse it)
    ├── PayloadError          a record's value cannot be decoded (not retriable: refuse it)
    └── TransportError        Kafka failed or is unreachable (retriable: back off, try again)
        ├── DeliveryError     a batch could not be produced in time; retriable (rewind, retry)
        └── RecordRejected    the destination refuses one record for good (too large); refuse it

aiokafka and fastavro exceptions are translated into these where they enter our code. The
supervisor reads ``retriable``: a retriable error backs off and restarts the loop, anything else
(a configuration error, a bug) stops the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class NodeError(Exception):
    """Base of every error the node raises on purpose."""

    retriable = False


class ConfigError(NodeError):
    """A configuration field is wrong: ``path`` names it, the message says what was expected."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class SchemaError(NodeError):
    """An Avro schema file cannot be parsed or clashes with another."""


class CatalogError(NodeError):
    """The catalog has problems; ``problems`` lists every one (each says file, code, field)."""

    def __init__(self, problems: Sequence[object]) -> None:
        super().__init__(f"{len(problems)} catalog problem(s); first: {problems[0]}")
        self.problems = list(problems)


class GrantProblem(StrEnum):
    """Why a grant operation was refused (the admin API maps each to an HTTP status)."""

    BAD_REQUEST = "bad_request"
    NOT_HERE = "not_here"  # decide at the provider's node
    UNKNOWN = "unknown"  # resource, consumer or grant
    CONFLICT = "conflict"  # the grant is in the wrong state
    UNAVAILABLE = "unavailable"  # the grants topic cannot be written now


class GrantRefused(NodeError):
    """A grant operation cannot be done; ``problem`` says which kind of refusal it is."""

    def __init__(self, problem: GrantProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class EnvelopeError(NodeError):
    """A header of the envelope is missing or malformed."""

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"header {header}: {problem}")
        self.header = header


class PayloadError(NodeError):
    """A record value is not a decodable single-object Avro datum of a known schema."""


class TransportError(NodeError):
    """Kafka refused or failed an operation, or could not be reached."""

    retriable = True


class DeliveryError(TransportError):
    """Producing a batch failed in a way that may pass on retry."""

    retriable = True


class RecordRejected(TransportError):
    """The destination rejects one record permanently (for example: too large)."""

    retriable = False


class StatsError(NodeError):
    """An exchange statistics line or query is malformed; ``field`` names what (not retriable)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
