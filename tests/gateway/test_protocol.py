"""The picker protocol spoken directly over gRPC (no Envoy): destination header and metadata, subset hint,
served endpoint, immediate responses, health services; the rank metrics picture; settings and the Envoy
bootstrap (checked by ``envoy --mode validate``)."""

import asyncio
import json
import subprocess

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpbalance.emulator import start_group
from dpbalance.gateway import EppConfig, bootstrap_yaml, start_epp
from dpbalance.gateway.config import endpoint_of
from dpbalance.gateway.rankload import parse_metrics
from tests.gateway.stack import envoy_binary
from tests.router.stacks import free_port

pytestmark = pytest.mark.timeout(60)


def _headers(path="/v1/completions", **extra):
    hs = [(":method", "POST"), (":path", path), ("content-type", "application/json"), *extra.items()]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, value=v) for k, v in hs]))


def _messages(body: dict, subset=None, status="200", served=None):
    md = base_pb2.Metadata()
    if subset is not None:
        md.filter_metadata["envoy.lb.subset_hint"].fields["x-gateway-destination-endpoint-subset"].list_value.extend(
            subset
        )
    yield pb.ProcessingRequest(request_headers=_headers(), metadata_context=md)
    yield pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(body).encode(), end_of_stream=True))
    rmd = base_pb2.Metadata()
    if served:
        rmd.filter_metadata["envoy.lb"].fields["x-gateway-destination-endpoint-served"].string_value = served
    rh = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", value=status)]))
    yield pb.ProcessingRequest(response_headers=rh, metadata_context=rmd)
    chunk = b'data: {"choices":[{"text":" a"}]}\n\ndata: {"choices":[{"text":" b"}]}\n\ndata: [DONE]\n\n'
    yield pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=True))


def _dest(resp: pb.ProcessingResponse) -> tuple[str, str, dict]:
    common = resp.request_body.response
    hdrs = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    md = resp.dynamic_metadata.fields["envoy.lb"].struct_value.fields["x-gateway-destination-endpoint"].string_value
    assert common.clear_route_cache
    return hdrs["x-gateway-destination-endpoint"], md, hdrs


async def _exchange(port: int, body: dict, **kw) -> list[pb.ProcessingResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.ExternalProcessorStub(ch)
        out = []
        async for r in stub.Process(_messages(body, **kw)):
            out.append(r)
            if r.HasField("immediate_response"):
                break
        return out


def test_destination_subset_health_and_immediate_responses():
    async def main():
        group, urls, _ = await start_group(3, slots=4, time_scale=20.0)
        epp = await start_epp(
            EppConfig(decode=tuple(urls), slots=4, port=0, tokenize="estimate", prometheus_port=None, model="m")
        )
        eps = [endpoint_of(u) for u in urls]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{epp.port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                for _ in range(50):
                    r = await health.Check(health_pb2.HealthCheckRequest(service="readiness"))
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                    await asyncio.sleep(0.05)
                for svc in ("liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                    r = await health.Check(health_pb2.HealthCheckRequest(service=svc))
                    assert r.status == health_pb2.HealthCheckResponse.SERVING, svc
            body = {"prompt": "hello", "max_tokens": 2, "stream": True}
            resps = await _exchange(epp.port, body)
            assert resps[0].HasField("request_headers")
            hdr, md, _ = _dest(resps[1])
            assert hdr == md and hdr in eps  # one value, in both places
            # the subset hint: only from the list; a list with nothing eligible is a 503
            for want in eps:
                hdr, md, _ = _dest((await _exchange(epp.port, body, subset=[want], served=want))[1])
                assert hdr == md == want
            r = (await _exchange(epp.port, body, subset=["10.9.9.9:1"]))[-1]
            assert r.immediate_response.status.code == 503
            r = (await _exchange(epp.port, {"prompt": 3}))[-1]
            assert r.immediate_response.status.code == 400
            assert json.loads(r.immediate_response.body)["error"]["param"] == "prompt"
            # --model fills a missing model: the body is rewritten, with its new length
            resp = (await _exchange(epp.port, body))[1]
            assert json.loads(resp.request_body.response.body_mutation.body)["model"] == "m"
            assert _dest(resp)[2]["content-length"] == str(len(resp.request_body.response.body_mutation.body))
            for _ in range(100):
                if epp.router.dispatcher.active == 0:
                    break
                await asyncio.sleep(0.02)
            assert epp.router.outcomes == {"completed": 5, "failed": 0, "rejected": 2}
            assert epp.router.dispatcher.active == 0
            # readiness follows the ranks: none in rotation → NOT_SERVING (liveness stays SERVING)
            for g in range(3):
                epp.router.dispatcher.set_rotation(g, False)
            await asyncio.sleep(0.5)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{epp.port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                r = await health.Check(health_pb2.HealthCheckRequest(service="readiness"))
                assert r.status == health_pb2.HealthCheckResponse.NOT_SERVING
                r = await health.Check(health_pb2.HealthCheckRequest(service="liveness"))
                assert r.status == health_pb2.HealthCheckResponse.SERVING
            r = (await _exchange(epp.port, body))[-1]
            assert r.immediate_response.status.code == 503
        finally:
            await epp.stop(grace=0)
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_dp_endpoint_sets_the_rank_header():
    async def main():
        group, _urls, _ = await start_group(2, slots=4, time_scale=20.0, dp_port=0)
        cfg = EppConfig(dp_endpoint=group.server.dp_url, dp_size=2, slots=4, port=0, tokenize="estimate")
        epp = await start_epp(cfg, metrics=False)
        try:
            ranks = set()
            for _ in range(4):
                hdr, md, hdrs = _dest((await _exchange(epp.port, {"prompt": "x", "max_tokens": 50, "stream": True}))[1])
                assert hdr == md == endpoint_of(group.server.dp_url)
                ranks.add(hdrs["X-data-parallel-rank"])
            assert ranks <= {"0", "1"} and ranks
        finally:
            await epp.stop(grace=0)
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_rank_metrics_hold_what_other_replicas_placed():
    async def main():
        group, urls, _ = await start_group(2, slots=8, time_scale=1.0)
        cfg = EppConfig(decode=tuple(urls), slots=8, port=0, tokenize="estimate", rank_metrics_interval_s=0)
        epp = await start_epp(cfg, metrics=False)
        try:
            # another front door puts three long requests on rank 1
            import aiohttp

            async with aiohttp.ClientSession() as s:
                tasks = [
                    asyncio.create_task(
                        s.post(urls[1] + "/v1/completions", json={"prompt": "a " * 500, "max_tokens": 10**5})
                    )
                    for _ in range(3)
                ]
                for _ in range(100):
                    if len(group.ranks[1].running) == 3:
                        break
                    await asyncio.sleep(0.02)
                await epp.loads.scrape_once()
                st = epp.router.dispatcher.state
                assert len(epp.loads.foreign_slots[1]) == 3 and st.counts.tolist() == [0, 3]
                assert st.loads[1] >= 1500 and st.loads[0] == 0 and epp.loads.fresh.all()
                # the policy now sends new work to rank 0
                hdr, _, _ = _dest((await _exchange(epp.port, {"prompt": "b", "max_tokens": 5, "stream": True}))[1])
                assert hdr == endpoint_of(urls[0])
                for t in tasks:
                    t.cancel()
                await group.server.kill(1)
                await asyncio.sleep(0.05)
                epp.loads.seen_at[:] = 0  # as if the last answer were long ago: the stale rank's slots go
                await epp.loads.scrape_once()
                assert not epp.loads.fresh[1] and epp.loads.foreign_slots[1] == []
        finally:
            await epp.stop(grace=0)
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_parse_metrics_per_engine():
    text = (
        'vllm:num_requests_running{engine="0",model_name="m"} 3\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 1\n'
        'vllm:cache_config_info{engine="0",block_size="16",num_gpu_blocks="100"} 1\n'
        "# HELP x y\nvllm:kv_cache_usage_perc 0.5\n"
    )
    m = parse_metrics(text)
    assert m["0"]["vllm:num_requests_running"] == 3 and m["1"]["vllm:num_requests_running"] == 1
    assert m["0"]["kv_blocks"] == 100 and m["0"]["block_size"] == 16 and m[""]["vllm:kv_cache_usage_perc"] == 0.5


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"decode": ("http://my-host:8001",)}, "IP address"),
        ({"decode": ("https://10.0.0.1:8001",)}, "plain http"),
        ({"decode": ("http://10.0.0.1:8001/v1",)}, "no path"),
        ({"decode": ()}, "at least one"),
    ],
)
def test_bad_settings_are_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        EppConfig(**kw)


@pytest.mark.parametrize("mode", ["streamed", "decision-only"])
def test_printed_envoy_config_validates(mode, tmp_path):
    cfg = EppConfig(decode=("http://10.0.0.1:8001", "http://10.0.0.2:8001"), mode=mode)
    text = bootstrap_yaml(cfg)
    conf = yaml.safe_load(text)
    ext = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    body_mode = ext["typed_config"]["processing_mode"]["response_body_mode"]
    assert body_mode == ("STREAMED" if mode == "streamed" else "NONE")
    p = tmp_path / "envoy.yaml"
    p.write_text(text)
    out = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "OK" in out.stdout + out.stderr, out.stdout + out.stderr


def test_leader_election_one_ready_replica_and_failover():
    async def main():
        group, urls, _ = await start_group(2, slots=4, time_scale=20.0)
        ports = sorted([free_port(), free_port()])
        addrs = [f"127.0.0.1:{p}" for p in ports]
        kw = dict(decode=tuple(urls), slots=4, tokenize="estimate", prometheus_port=None, peers=tuple(addrs))
        epps = [await start_epp(EppConfig(port=p, **kw)) for p in ports]

        async def readiness(port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="readiness"))
                return r.status == health_pb2.HealthCheckResponse.SERVING

        try:
            for _ in range(50):
                if [await readiness(p) for p in ports] == [True, False]:
                    break
                await asyncio.sleep(0.1)
            assert [await readiness(p) for p in ports] == [True, False]  # the lowest address leads
            # a follower still answers what reaches it (no request is refused for being sent to it)
            hdr, md, _ = _dest((await _exchange(ports[1], {"prompt": "x", "max_tokens": 2, "stream": True}))[1])
            assert hdr == md
            await epps[0].stop(grace=0)  # the leader goes: the other takes over
            for _ in range(50):
                if await readiness(ports[1]):
                    break
                await asyncio.sleep(0.1)
            assert await readiness(ports[1])
        finally:
            for e in epps:
                await e.stop(grace=0)
            await group.server.close()
            await group.stop()

    asyncio.run(main())
