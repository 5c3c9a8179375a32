"""``kg2text serve``: sentences over HTTP (FastAPI + uvicorn) from one backbone loaded once, with its task prefixes.

* ``POST /generate`` ``{"inputs": [...], "task": ..., "num_beams": ..., "max_new_tokens": ...}``: inputs in every
  form the CLI and the Python API take (a line in the task's syntax, a triple, a list of triples, a JSONL-style
  object) -> ``{"sentences": [...], "linearized": [...]}`` in order. ``GET /health``, ``GET /info``, and a small
  page at ``/``; OpenAPI docs at ``/docs``.
* **Request batching**: requests that arrive within ``batch_window_s`` of each other (up to ``max_batch``
  inputs) and ask for the same decoding are decoded as one batch on one worker thread. A row decodes the
  same in any batch (left padding, positions from the mask; tested), so every client gets exactly what it
  would get alone.
* **Control prefixes**: a ``--method control`` run serves its categories' prefixes; a request's ``"category"``
  picks one for all its inputs (none, or one the run did not train: the general one; ``GET /info`` and the page
  list them).
* **Ensembles**: ``--ensemble RUN`` decodes every request with the runs together; ``GET /info`` and the page name
  them.
* **Limits**: inputs per request, characters per input, a decoding timeout; a bad request is one 4xx with a
  message that names the field, and the others are served as usual. Prefixes are chosen at start-up only.
* **Who may call**: 127.0.0.1 by default; with a token (``--token`` or ``KG2TEXT_TOKEN``) every API request
  needs ``Authorization: Bearer TOKEN`` (the page at ``/`` holds no data and asks for the token itself).
* **SIGTERM / Ctrl-C**: uvicorn stops accepting connections, finishes the requests in flight, then exits.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kg2text import __version__
from kg2text.api import Verbalizer
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, generate_sentences
from kg2text.inputs import UserInput

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_ENV = "KG2TEXT_TOKEN"
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how requests are batched."""

    max_inputs: int = 64
    max_input_chars: int = 2000
    timeout_s: float = 120.0
    batch_window_s: float = 0.02
    max_batch: int = 32


class GenerateRequest(BaseModel):
    """The body of ``POST /generate``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str | dict | list] = Field(min_length=1, description="triples, lines or JSONL-style objects")
    task: str | None = Field(default=None, description="which loaded prefix (needed when several are loaded)")
    num_beams: int | None = Field(default=None, ge=1, le=16)
    max_new_tokens: int | None = Field(default=None, ge=1, le=512)
    category: str = Field(default="", max_length=200,
                          description="a --method control run's WebNLG category for every input (see GET /info)")


@dataclass
class Pending:
    """One request's parsed inputs waiting in the batcher, and the future its sentences go to."""

    parsed: list[UserInput]
    category: str
    decode: DecodeConfig
    future: asyncio.Future


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: anyone who can reach the port could use it."""
    if host not in LOCAL_HOSTS and not token:
        raise UserError(f"--host {host} would let any machine that reaches this port use the server; set a token "
                        f"(--token or {TOKEN_ENV}) so that requests need 'Authorization: Bearer TOKEN', or keep the "
                        "default --host 127.0.0.1")


class Batcher:
    """Collects the requests of a short window and decodes them together, one batch at a time."""

    def __init__(self, verbalizer: Verbalizer, limits: ServeLimits):
        self.verbalizer, self.limits = verbalizer, limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kg2text-decode")

    async def decode(self, parsed: list[UserInput], decode: DecodeConfig, category: str = "") -> list[str]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(parsed, category, decode, future))
        return await asyncio.wait_for(asyncio.shield(future), self.limits.timeout_s)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.limits.batch_window_s
            while sum(len(item.parsed) for item in batch) < self.limits.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0)))
                except TimeoutError:
                    break
            for decode in dict.fromkeys(item.decode for item in batch):  # one decode per setting, in arrival order
                await self._decode_together([item for item in batch if item.decode == decode], decode, loop)

    async def _decode_together(self, items: list[Pending], decode: DecodeConfig,
                               loop: asyncio.AbstractEventLoop) -> None:
        rows = [p for item in items for p in item.parsed]
        categories = [item.category for item in items for _ in item.parsed]
        decode = replace(decode, batch_size=max(decode.batch_size, self.limits.max_batch))  # the window's batch is one
        try:
            sentences = await loop.run_in_executor(self.worker, partial(
                generate_sentences, self.verbalizer.loaded, rows, decode, categories=categories))
        except Exception as err:  # noqa: BLE001 - handed to the waiting requests, which answer 500
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        start = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(sentences[start: start + len(item.parsed)])
            start += len(item.parsed)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(verbalizer: Verbalizer, limits: ServeLimits = ServeLimits(), token: str | None = None) -> FastAPI:
    """The FastAPI app: one backbone, its prefixes, a batcher; ``token`` guards every API request."""
    batcher = Batcher(verbalizer, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="kg2text", version=__version__, lifespan=lifespan,
                  description="Verbalise knowledge-base triples with a frozen LM and trained prefixes.")

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token and not (request.method == "GET" and request.url.path == "/"):
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"body is not valid JSON (at character {e['loc'][-1]})" if e["type"] == "json_invalid" else
                    f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors()]
        return _error(422, "; ".join(problems[:5]))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        formats = verbalizer.loaded.formats
        return {"version": __version__, "backbone": verbalizer.loaded.header["backbone"],
                "tasks": {task: {"format": fmt.name, "example": fmt.example} for task, fmt in formats.items()},
                "categories": verbalizer.loaded.categories[1:], "ensemble": list(verbalizer.loaded.ensemble),
                "decoding": asdict(verbalizer.decode),
                "limits": asdict(limits), "token_required": bool(token)}

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> JSONResponse:
        if len(body.inputs) > limits.max_inputs:
            return _error(413, f"inputs: {len(body.inputs)} inputs, more than the limit of {limits.max_inputs} "
                               "per request; split them over several requests")
        for number, value in enumerate(body.inputs, start=1):
            if len(str(value)) > limits.max_input_chars:
                return _error(413, f"inputs: input {number} has {len(str(value))} characters, more than the limit "
                                   f"of {limits.max_input_chars}")
        try:
            verbalizer.check_category(body.category)
        except UserError as err:
            return _error(400, str(err))
        try:
            parsed = verbalizer.parse(body.inputs, body.task)
        except UserError as err:
            return _error(400, f"inputs: {err}")
        settings = {k: v for k, v in (("num_beams", body.num_beams), ("max_new_tokens", body.max_new_tokens)) if v}
        try:
            sentences = await batcher.decode(parsed, replace(verbalizer.decode, **settings), body.category)
        except TimeoutError:
            return _error(504, f"decoding took longer than {limits.timeout_s:.0f} s; send fewer inputs or lower "
                               "max_new_tokens")
        except UserError as err:
            return _error(400, f"inputs: {err}")
        return JSONResponse({"sentences": sentences, "linearized": [verbalizer.linearized(p) for p in parsed]})

    return app


def serve(verbalizer: Verbalizer, host: str, port: int, limits: ServeLimits, token: str | None) -> None:
    """Run the server until SIGTERM or Ctrl-C; requests in flight are finished first."""
    import uvicorn

    check_bind(host, token)
    uvicorn.run(create_app(verbalizer, limits, token), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(limits.timeout_s))
