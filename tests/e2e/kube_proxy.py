"""A `kubectl proxy` stand-in: serves the API server on loopback without auth, adding the admin client
certificate. The UI links' URL template points here so a browser can open a cluster's Ray dashboard
through the API server's service proxy, as a user does with `kubectl proxy`."""

from __future__ import annotations

import asyncio
import ssl
import threading

import aiohttp
from aiohttp import web


class KubeProxy:
    def __init__(self, server: str, ca_file: str, cert: tuple[str, str]) -> None:
        self.server = server.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.ssl.load_cert_chain(*cert)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.server + str(request.rel_url),
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "authorization")},
                ssl=self.ssl,
                allow_redirects=False,
            ) as upstream,
        ):
            body = await upstream.read()
            headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("transfer-encoding", "content-encoding", "content-length", "connection")
            }
            return web.Response(status=upstream.status, body=body, headers=headers)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> KubeProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
