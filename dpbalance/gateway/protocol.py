"""The Endpoint Picker protocol on Envoy's ext_proc messages (Gateway API Inference Extension, proposal 004).

- in: the subset hint ``filter_metadata["envoy.lb.subset_hint"]["x-gateway-destination-endpoint-subset"]`` (a
  list of ``ip:port``; Envoy puts it in ``metadata_context``), and on the response the endpoint that served it,
  ``metadata_context["envoy.lb"]["x-gateway-destination-endpoint-served"]``;
- out: the picked endpoint as the ``x-gateway-destination-endpoint`` header *and* as
  ``dynamic_metadata["envoy.lb"]["x-gateway-destination-endpoint"]`` (always the same value, built once here);
  errors as an ``ImmediateResponse`` (503 no endpoint ready, 429 shed, 4xx bad request) with an OpenAI-style body.
"""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from ..router.inbound import error_body
from .config import DEST, LB_NS, SERVED, SUBSET, SUBSET_NS, UPSTREAM_ADDRESS

__all__ = ["DEST", "LB_NS", "SERVED", "SUBSET", "SUBSET_NS", "UPSTREAM_ADDRESS"]
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def headers_of(msg: pb.HttpHeaders) -> dict[str, str]:
    """Lower-case name → value (Envoy sends either ``value`` or ``raw_value``)."""
    out = {}
    for h in msg.headers.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _list_of(v: struct_pb2.Value) -> list[str] | None:
    kind = v.WhichOneof("kind")
    if kind == "list_value":
        return [x.string_value for x in v.list_value.values if x.WhichOneof("kind") == "string_value"]
    if kind == "string_value":  # tolerated: one comma-separated string
        return [p.strip() for p in v.string_value.split(",") if p.strip()]
    return None


def subset_hint(req: pb.ProcessingRequest) -> list[str] | None:
    """The endpoints the proxy lets the picker choose from, or None when it sets no hint."""
    md = req.metadata_context.filter_metadata
    if SUBSET_NS not in md:
        return None
    fields = md[SUBSET_NS].fields
    if SUBSET not in fields:
        return None
    return _list_of(fields[SUBSET]) or []


def served_endpoint(req: pb.ProcessingRequest) -> str | None:
    """The endpoint that served the response: the protocol's metadata when the proxy sets it, else Envoy's
    ``upstream.address`` attribute (which the generated Envoy config asks for)."""
    md = req.metadata_context.filter_metadata
    if LB_NS in md and SERVED in md[LB_NS].fields:
        return md[LB_NS].fields[SERVED].string_value or None
    for attrs in req.attributes.values():
        if UPSTREAM_ADDRESS in attrs.fields:
            return attrs.fields[UPSTREAM_ADDRESS].string_value or None
    return None


def _mutation(headers: dict[str, str]) -> pb.HeaderMutation:
    return pb.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode()),
                append_action=_OVERWRITE,
            )
            for k, v in headers.items()
        ]
    )


def _dest_metadata(endpoint: str) -> struct_pb2.Struct:
    md = struct_pb2.Struct()
    md.fields[LB_NS].struct_value.fields[DEST].string_value = endpoint
    return md


def route_common(endpoint: str, extra: dict[str, str] | None = None) -> tuple[pb.CommonResponse, struct_pb2.Struct]:
    """The header mutation (destination header, plus ``extra``) and its ``envoy.lb`` metadata: one value."""
    common = pb.CommonResponse(header_mutation=_mutation({DEST: endpoint, **(extra or {})}), clear_route_cache=True)
    return common, _dest_metadata(endpoint)


def route_on_headers(endpoint: str, extra: dict[str, str] | None = None) -> pb.ProcessingResponse:
    common, md = route_common(endpoint, extra)
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=md)


def route_on_body(endpoint: str, extra: dict[str, str] | None = None) -> pb.ProcessingResponse:
    common, md = route_common(endpoint, extra)
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=md)


CONTINUE_REQUEST_HEADERS = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
CONTINUE_RESPONSE_HEADERS = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
CONTINUE_RESPONSE_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse())
CONTINUE_REQUEST_BODY = pb.ProcessingResponse(request_body=pb.BodyResponse())


def immediate(
    status: int,
    message: str,
    etype: str = "invalid_request_error",
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> pb.ProcessingResponse:
    """The proxy answers the client itself: ``status`` with an OpenAI-style error body."""
    body = json.dumps(error_body(message, etype, param, code=status)).encode()
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=_mutation({"content-type": "application/json", **(headers or {})}),
            body=body,
            details=f"dpbalance_epp_{status}",
        )
    )
