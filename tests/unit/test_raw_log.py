"""The raw driver log (issue 15, ``\\r`` progress bars): the pure ``\\r`` collapsing of RawLineAssembler,
the state API's request builders, and the requests the client really sends in each dashboard access mode."""

from __future__ import annotations

import random

import aiohttp
import pytest
from aiohttp import web

from airflow_provider_flyray import jobs_api
from airflow_provider_flyray.backends.raycluster import proxy_dashboard_url
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.connection import DashboardAccess
from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.errors import RayJobsApiError
from airflow_provider_flyray.log_text import MAX_LINE_CHARS, LineAssembler, RawLineAssembler, utf8_text_decoder

BAR = b"".join(b"\r%3d%% |%-20s| %d/200" % (i // 2, b"#" * (i // 10), i) for i in range(1, 201))
LOG = (
    b"start\n\x1b[31mred\x1b[0m\n"
    + BAR
    + b"\nwindows\r\nover\rX\n\xff\xfe bad\ncaf\xc3\xa9 \xe4\xb8\xad\n\x1b[2Jcleared\n"
    + b"a\r\r\nb\r\n\r\n"  # a trailing \r, then \r\n; an empty \r\n line
    + b"last\rL"  # the log ends inside a rewritten line
)
SHOWN = [
    "start",
    "\x1b[31mred\x1b[0m",
    "100% |####################| 200/200",
    "windows",
    "Xver",
    "\ufffd\ufffd bad",
    "caf\u00e9 \u4e2d",
    "cleared",
    "a",
    "b",
    "",
    "Last",
]


def ray_text(data: bytes) -> str:
    """What Ray's text-mode reads make of the bytes (the Jobs API's view)."""
    decoder = utf8_text_decoder()
    return decoder.decode(data) + decoder.decode(b"", final=True)


def assemble(data: bytes, cuts: list[int], assembler: RawLineAssembler | None = None) -> list[str]:
    lines, at, assembler = [], 0, assembler or RawLineAssembler()
    for cut in [*cuts, len(data)]:
        lines += assembler.feed(data[at:cut])
        at = cut
    return lines + assembler.finish()


def test_a_rewritten_line_shows_its_last_state_once_and_everything_else_as_sanitize_does():
    assert assemble(LOG, []) == SHOWN


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_gives_the_same_lines_and_offsets_agree_with_rays_text_reads(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(LOG)), rng.randint(1, 30)))
    assembler = RawLineAssembler()
    assert assemble(LOG, cuts, assembler) == SHOWN
    assert assembler.shown == len(LOG)
    assert assembler.shown_text == len(ray_text(LOG))  # \r and \r\n count as one character, as Ray reads them


@pytest.mark.parametrize("stop", [10, 30, 40, len(b"start\n\x1b[31mred\x1b[0m\n") + len(BAR) + 3, len(LOG) - 3])
def test_a_reread_resumes_after_the_last_line_shown_in_bytes_and_in_rays_characters(stop):
    """The live stream drops (or the job ends) at ``stop``: the state API re-read skips ``shown`` bytes;
    a Jobs API read skips ``shown_text`` characters. Each line is shown once, none is lost."""
    first = RawLineAssembler()
    before = first.feed(LOG[:stop])
    again = RawLineAssembler(skip=first.shown, skip_text=first.shown_text)
    assert before + assemble(LOG, [7, stop + 1], again) == SHOWN
    text, whole = LineAssembler(skip=first.shown_text), LineAssembler()
    rest = text.feed(ray_text(LOG)) + text.finish()
    # The Jobs API's view of the rest: exactly the lines after the last one shown (each redraw its own).
    view = ray_text(LOG)
    assert first.shown_text == 0 or view[first.shown_text - 1] == "\n"
    assert rest == (whole.feed(view) + whole.finish())[view[: first.shown_text].count("\n") :]


def test_a_line_that_never_ends_is_shown_in_pieces_cut_between_characters():
    data = "\u00e9".encode() * MAX_LINE_CHARS + b"\nnext"
    assembler = RawLineAssembler()
    lines = assemble(data, [5, MAX_LINE_CHARS + 1, MAX_LINE_CHARS * 2 - 1], assembler)
    assert "".join(lines[:-1]) == "\u00e9" * MAX_LINE_CHARS and "\ufffd" not in "".join(lines)
    assert all(len(line.encode()) <= MAX_LINE_CHARS for line in lines) and lines[-1] == "next"
    assert assembler.shown == len(data) and assembler.shown_text == len(ray_text(data))


def test_a_bar_that_redraws_forever_holds_only_its_current_state():
    assembler = RawLineAssembler()
    for i in range(50_000):
        assert assembler.feed(b"\rstep %d" % i) == []
    assert len(assembler._segment) < 20 and len(assembler._screen) < 20
    assert assembler.finish() == ["step 49999"]


# ---- the state API's requests, built like the Jobs API's in every access mode --------------------------

NODE = "c7959cef4b99db867a080bee40a23c9bd5bc7aa995405a46b2560de1"
DIRECT = jobs_api.DashboardEndpoint("http://c1-head-svc.ml.svc.cluster.local:8265")
PROXY = jobs_api.DashboardEndpoint(
    proxy_dashboard_url("https://127.0.0.1:6443", ClusterRef("raycluster", name="c1", namespace="ml")),
    headers={"Authorization": "Bearer kube", **jobs_api.token_headers("ray-token", DashboardAccess.PROXY)},
)


def test_state_api_request_builders():
    whole = jobs_api.driver_log_request(NODE, "dag-task-1/try1")
    follow = jobs_api.follow_driver_log_request(NODE, "dag-task-1/try1")
    assert (whole.method, follow.method) == ("GET", "GET")
    assert whole.path == f"/api/v0/logs/file?node_id={NODE}&filename=job-driver-dag-task-1%2Ftry1.log&lines=-1"
    assert follow.path == (
        f"/api/v0/logs/stream?node_id={NODE}&filename=job-driver-dag-task-1%2Ftry1.log&lines=-1&interval=0.5"
    )
    assert jobs_api.follow_driver_log_request("n&x", "s", interval=2).path.endswith(
        "node_id=n%26x&filename=job-driver-s.log&lines=-1&interval=2"
    )


@pytest.mark.parametrize("endpoint", [DIRECT, PROXY], ids=["direct", "proxy"])
def test_state_api_urls_are_built_like_the_jobs_api_urls(endpoint):
    jobs = endpoint.url(jobs_api.logs_request("s").path)
    state = endpoint.url(jobs_api.follow_driver_log_request(NODE, "s").path)
    assert jobs == endpoint.base_url + "/api/jobs/s/logs"
    assert state.startswith(endpoint.base_url + "/api/v0/logs/stream?")


async def test_the_client_sends_the_state_api_requests_under_the_base_path_with_the_endpoint_headers():
    """A dashboard behind a path prefix (as the API-server service proxy is): the raw log requests go under
    it, with the endpoint's headers, and an error answer raises (the trigger then falls back)."""
    seen: list[tuple[str, str, str | None]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.query_string, request.headers.get("X-Ray-Authorization")))
        if request.query.get("node_id") == "refused":
            return web.Response(status=403, text="forbidden")
        return web.Response(body=b"raw\rbytes\n")

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ml/services/c1-head-svc:dashboard/proxy/api/v0/logs/{media}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/namespaces/ml/services/c1-head-svc:dashboard/proxy"
    endpoint = jobs_api.DashboardEndpoint(base, headers=PROXY.headers)
    try:
        async with aiohttp.ClientSession() as http:
            client = DashboardClient(http)
            whole = b"".join([chunk async for chunk in client.driver_log_bytes(endpoint, NODE, "s")])
            followed = b"".join([chunk async for chunk in client.follow_driver_log(endpoint, NODE, "s")])
            with pytest.raises(RayJobsApiError) as refused:
                async for _ in client.follow_driver_log(endpoint, "refused", "s"):
                    pass
    finally:
        await runner.cleanup()
    assert whole == followed == b"raw\rbytes\n"
    assert [(path.rsplit("/", 1)[1], query.split("&")[-1], token) for path, query, token in seen] == [
        ("file", "lines=-1", "Bearer ray-token"),
        ("stream", "interval=0.5", "Bearer ray-token"),
        ("stream", "interval=0.5", "Bearer ray-token"),
    ]
    assert refused.value.status == 403
