"""The web application of `zfcaffe serve`: Starlette on uvicorn, loopback by default.

Every request that touches the net goes to one worker thread through a bounded queue:
past the bound a request is refused at once (503, Retry-After), so a burst neither
grows memory nor stalls the server. Top-9 scans and optimised images run as jobs on a
second thread (bounded too); the page polls them. The browser names images by their id
in the served list, never by a path, and the static files come from a fixed list."""
from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import socket
import sys
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..analyses.projection import parse_modes
from ..errors import ZfcaffeError
from .model import MAX_UPLOAD_BYTES, MODES, NotFound, ServedModel

STATIC = pathlib.Path(__file__).parent / "static"
#: the only files served from disk, by URL path
FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


class Busy(Exception):
    """The queue is full: refused with 503."""


class Worker:
    """One thread for the net, at most `limit` requests waiting or running."""

    def __init__(self, limit: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zfcaffe-net")
        self.limit, self.pending = limit, 0

    async def run(self, fn, *args):
        if self.pending >= self.limit:           # the event loop is one thread: no lock needed
            raise Busy()
        self.pending += 1
        try:
            return await asyncio.wrap_future(self.pool.submit(fn, *args))
        finally:
            self.pending -= 1


class Jobs:
    """The long jobs' thread, at most `limit` jobs waiting or running."""

    def __init__(self, limit: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zfcaffe-jobs")
        self.limit, self.pending, self.lock = limit, 0, threading.Lock()

    def start(self, fn) -> None:
        with self.lock:
            if self.pending >= self.limit:
                raise Busy()
            self.pending += 1

        def run():
            try:
                fn()
            finally:
                with self.lock:
                    self.pending -= 1
        self.pool.submit(run)


def _int(request: Request, name: str, required: bool = True) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        if required:
            raise ZfcaffeError(f"missing ?{name}=N")
        return None
    if not text.lstrip("-").isdigit() or len(text) > 9:
        raise ZfcaffeError(f"?{name}={text[:20]!r}: expected a whole number")
    return int(text)


def _str(request: Request, name: str) -> str:
    text = request.query_params.get(name)
    if not text:
        raise ZfcaffeError(f"missing ?{name}=...")
    return text


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={**HEADERS, "Cache-Control": "private, max-age=60"})


def create_app(model: ServedModel, queue: int = 16, jobs: int = 8) -> Starlette:
    worker, job_runner = Worker(queue), Jobs(jobs)

    async def page(request: Request) -> Response:
        name, media = FILES[request.url.path]
        return Response((STATIC / name).read_bytes(), media_type=media, headers=HEADERS)

    async def info(request):
        return await worker.run(model.info)

    async def input_png(request):
        return _png(await worker.run(model.input_png, _str(request, "image")))

    async def scores(request):
        return await worker.run(model.scores, _str(request, "image"))

    async def maps_png(request):
        return _png((await worker.run(model.maps, _str(request, "image"), _str(request, "layer")))[0])

    async def maps(request):
        return (await worker.run(model.maps, _str(request, "image"), _str(request, "layer")))[1]

    async def unit(request):
        return await worker.run(model.unit, _str(request, "image"), _str(request, "layer"), _int(request, "c"),
                                _int(request, "y", False), _int(request, "x", False),
                                parse_modes(request.query_params.get("modes", ",".join(MODES))[:200]))

    async def dense(request):
        return await worker.run(model.dense_results, _str(request, "image"))

    def _modes(request):
        return parse_modes(request.query_params.get("modes", "deconvnet,guided")[:200])

    async def detection(request):
        return await worker.run(model.detection, _str(request, "image"), _int(request, "k"), _modes(request))

    async def keypoint(request):
        return await worker.run(model.keypoint, _str(request, "image"), _int(request, "k"), _modes(request))

    async def segment(request):
        return await worker.run(model.segment, _str(request, "image"), _int(request, "x"), _int(request, "y"),
                                _modes(request))

    async def filters(request):
        return _png(await worker.run(model.filters, _str(request, "layer")))

    def job(kind):
        async def handler(request):
            state = await worker.run(model.job, kind, _str(request, "layer"), _int(request, "c"), job_runner.start)
            return JSONResponse(state, status_code=202 if state["state"] == "running" else 200, headers=HEADERS)
        return handler

    async def upload(request: Request):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_UPLOAD_BYTES):
            return JSONResponse({"error": f"an upload holds at most {MAX_UPLOAD_BYTES:,} bytes"}, 413, HEADERS)
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_UPLOAD_BYTES:
                return JSONResponse({"error": f"an upload holds at most {MAX_UPLOAD_BYTES:,} bytes"}, 413, HEADERS)
            chunks.append(chunk)
        return {"id": await worker.run(model.add_upload, b"".join(chunks))}

    def api(handler):
        async def wrapped(request: Request) -> Response:
            try:
                result = await handler(request)
            except Busy:
                return JSONResponse({"error": "busy: too many requests are waiting; try again"}, 503,
                                    {**HEADERS, "Retry-After": "1"})
            except NotFound as e:
                return JSONResponse({"error": str(e)}, 404, HEADERS)
            except ZfcaffeError as e:
                return JSONResponse({"error": str(e)}, 400, HEADERS)
            return result if isinstance(result, Response) else JSONResponse(result, headers=HEADERS)
        return wrapped

    routes = [Route(path, page) for path in FILES] + [
        Route("/api/model", api(info)), Route("/api/input.png", api(input_png)), Route("/api/scores", api(scores)),
        Route("/api/maps.png", api(maps_png)), Route("/api/maps", api(maps)), Route("/api/unit", api(unit)),
        Route("/api/filters.png", api(filters)), Route("/api/top9", api(job("top9"))),
        Route("/api/classviz", api(job("classviz"))), Route("/api/detections", api(dense)),
        Route("/api/detection", api(detection)), Route("/api/segment", api(segment)),
        Route("/api/keypoint", api(keypoint)), Route("/api/upload", api(upload), methods=["POST"])]
    return Starlette(routes=routes)


def serve(app: Starlette, host: str, port: int, quiet: bool = False) -> None:
    """Listen on host:port (port 0: a free one) and print the address once listening."""
    import uvicorn
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"zfcaffe serve: warning: listening on {host}, not only on this machine's loopback address: "
              "anyone who reaches it can use the model and upload images", file=sys.stderr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise ZfcaffeError(f"--host {host} --port {port}: cannot listen there: {e.strerror or e}") from None
    bound = sock.getsockname()
    url = f"http://{'[' + bound[0] + ']' if family == socket.AF_INET6 else bound[0]}:{bound[1]}/"
    print(f"zfcaffe serve: {url}", flush=True)
    config = uvicorn.Config(app, log_level="warning" if not quiet else "error", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
