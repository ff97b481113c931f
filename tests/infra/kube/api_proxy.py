"""A loopback reverse proxy in front of the test kube-apiserver that counts requests and injects faults.

It is the test double the fault matrix is allowed (issue #5, scenario 9): the provider talks to it as
to the API server (plain HTTP on 127.0.0.1, the client's bearer token passed through), and it forwards
over TLS to the real kube-apiserver, streaming watch responses. Faults:

* ``fail(status, count=..., seconds=..., retry_after=...)``: answer ``status`` instead of forwarding;
* ``drop(seconds=...)``: close connections without an answer, and cut the open watch streams.

WebSockets (the Ray log tail through the service proxy) pass through and count as one request.

It also serves as the `kubectl proxy` stand-in of the end-to-end tests (``as_admin=True``: no
authentication needed from the caller, the admin client certificate is presented upstream), so a
browser can open a cluster's dashboard through the API server's service proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"transfer-encoding", "content-encoding", "content-length", "connection", "keep-alive"}


@dataclass
class Fault:
    kind: str  # "status" or "drop"
    status: int = 0
    retry_after: str | None = None
    path_contains: str = ""
    remaining: int | None = None  # requests left to fault (None: until `until`)
    until: float | None = None  # monotonic deadline (None: until `remaining` runs out)

    def active(self, path: str) -> bool:
        if self.path_contains not in path:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.until is None or time.monotonic() < self.until


@dataclass
class Record:
    at: float
    method: str
    path: str
    status: int  # 0: dropped
    faulted: bool

    @property
    def kind(self) -> str:
        """``dashboard`` (through the service proxy), ``watch``, or ``kube``."""
        if "/proxy/" in self.path or self.path.endswith("/proxy"):
            return "dashboard"
        if "watch=true" in self.path.lower() or "watch=1" in self.path:  # kubernetes_asyncio sends watch=True
            return "watch"
        return "kube"


@dataclass
class ApiProxy:
    upstream: str
    ca_file: str
    client_cert: tuple[str, str] | None = None
    as_admin: bool = False
    records: list[Record] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.upstream = self.upstream.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            self._ssl.load_cert_chain(*self.client_cert)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="api-proxy")
        self._streams: set[asyncio.BaseTransport] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- faults and counts (called from the test thread) ---------------------------------------------

    def fail(
        self,
        status: int,
        *,
        count: int | None = None,
        seconds: float | None = None,
        retry_after: str | None = None,
        path_contains: str = "",
    ) -> Fault:
        fault = Fault(
            "status",
            status=status,
            retry_after=retry_after,
            path_contains=path_contains,
            remaining=count,
            until=None if seconds is None else time.monotonic() + seconds,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def drop(self, *, seconds: float, path_contains: str = "") -> Fault:
        fault = Fault("drop", path_contains=path_contains, until=time.monotonic() + seconds)
        with self._lock:
            self.faults.append(fault)
        self._loop.call_soon_threadsafe(self._cut_streams)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def counts(self, since: float = 0.0) -> Counter[str]:
        """Requests by kind (plus ``faulted``) recorded after monotonic time ``since``."""
        counter: Counter[str] = Counter()
        for record in list(self.records):
            if record.at >= since:
                counter[record.kind] += 1
                counter["faulted"] += record.faulted
        return counter

    # ---- serving -------------------------------------------------------------------------------------

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.active(path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _cut_streams(self) -> None:
        for transport in list(self._streams):
            transport.abort()  # type: ignore[attr-defined]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        path = str(request.rel_url)
        fault = self._fault_for(path)
        if fault is not None:
            self.records.append(
                Record(time.monotonic(), request.method, path, 0 if fault.kind == "drop" else fault.status, True)
            )
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=502)  # never sent: the connection is gone
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = (
                '{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected by the test fault proxy",'
                f'"code":{fault.status}}}'
            )
            return web.Response(status=fault.status, text=body, content_type="application/json", headers=headers)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request)
        skip = {"host", "accept-encoding", *HOP_BY_HOP}
        if self.as_admin:
            skip.add("authorization")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        transport = request.transport
        if transport is not None:
            self._streams.add(transport)
        try:
            async with self._session.request(
                request.method,
                self.upstream + path,
                data=await request.read() if request.can_read_body else None,
                headers=headers,
                ssl=self._ssl,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            ) as upstream:
                self.records.append(Record(time.monotonic(), request.method, path, upstream.status, False))
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            if transport is not None:
                self._streams.discard(transport)

    async def _forward_websocket(self, request: web.Request) -> web.StreamResponse:
        """WebSocket pass-through (the Ray log tail through the API server's service proxy); one request."""
        path = str(request.rel_url)
        skip = {"host", "accept-encoding", "upgrade", *HOP_BY_HOP}
        skip |= {k for k in (h.lower() for h in request.headers) if k.startswith("sec-websocket")}
        if self.as_admin:
            skip.add("authorization")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        try:
            upstream = await self._session.ws_connect(self.upstream + path, headers=headers, ssl=self._ssl)
        except aiohttp.WSServerHandshakeError as exc:
            self.records.append(Record(time.monotonic(), request.method, path, exc.status, False))
            return web.Response(status=exc.status, text=exc.message)
        self.records.append(Record(time.monotonic(), request.method, path, 101, False))
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)

        async def pump(source: Any, sink: Any) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        pumps = [asyncio.ensure_future(pump(upstream, downstream)), asyncio.ensure_future(pump(downstream, upstream))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await downstream.close()
        return downstream

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def new_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(auto_decompress=False)

        self._session = self._loop.run_until_complete(new_session())
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._cut_streams()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(runner.cleanup())
            self._loop.run_until_complete(self._session.close())

    def start(self) -> ApiProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the API proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ApiProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
