"""How a request ends in the router: exactly one ``Outcome`` with one ``Reason`` (the labels of
``dpbalance_requests_total{outcome,reason}``). The values are the label strings, so a member is its label.

A rank's own refusal is ``rejected`` with the reason ``rank_<status>`` (``rank_status``); a client's bad body
is ``rejected`` with the inbound parser's reason (``bad_request``, ``too_large``, ``body_timeout``, ...).
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    COMPLETED = "completed"  # the client received the whole answer
    FAILED = "failed"  # it started (or waited) and could not finish
    REJECTED = "rejected"  # refused before it reached a rank, or refused by the rank


class Reason(StrEnum):
    OK = "ok"
    # failed
    CLIENT_DISCONNECT = "client_disconnect"
    CLIENT_TIMEOUT = "client_timeout"
    SHUTDOWN = "shutdown"
    INTERNAL_ERROR = "internal_error"
    PREFILL_FAILED = "prefill_failed"
    RANK_UNAVAILABLE = "rank_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_BROKEN = "upstream_broken"
    MAX_WAIT = "max_wait"
    NO_RANK_IN_ROTATION = "no_rank_in_rotation"
    # rejected before any rank saw it
    SHUTTING_DOWN = "shutting_down"
    OVERLOADED = "overloaded"
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    BODY_TIMEOUT = "body_timeout"


def rank_status(status: int) -> str:
    """The reason a rank's own refusal is counted under: ``rank_<HTTP status>``."""
    return f"rank_{int(status)}"
