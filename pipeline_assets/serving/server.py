"""The app behind ``llmdag serve``: transformers' OpenAI-compatible serving handlers, on checkpoints we load.

transformers serve 5.23 (``transformers.cli.serving``) does the generation, streaming, continuous batching
and tool-call parsing; this module closes the gaps a user of our checkpoints hits with it as shipped:

- checkpoints are served under the names clients send ("grpo", "release"), and a LoRA adapter is merged on
  its base, through the pipeline's one loader (model_io.load_checkpoint); ``/v1/models`` lists them (theirs
  scans the hub cache and answers 500 offline);
- greedy requests go through continuous batching (one batch per model), sampled ones through the sequential
  path: CB in 5.23 takes one sampling config for the whole batch, so temperature / top_p / seed apply exactly
  only one request at a time;
- ``n`` (ignored by 5.23) runs n choices; ``stop`` sequences are cut from the reply (stops.py; 5.23 returns
  them); bad requests get a 4xx in OpenAI's error shape (requests.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from transformers import ContinuousBatchingConfig
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.completion import CompletionHandler
from transformers.cli.serving.model_manager import ModelManager, TimedModel
from transformers.cli.serving.utils import BaseHandler, GenerationState, Modality

from pipeline_assets.model_io import device_for, load_checkpoint, max_context_len
from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.serving.requests import (
    RequestError,
    check_messages,
    check_sampling,
    fit_max_tokens,
    parse_body,
)
from pipeline_assets.serving.stops import cut_response, cut_stream
from pipeline_assets.tool_use.tools import call_tool, tool_schemas

PAGES = Path(__file__).parent / "pages"
# transformers' serving modules log every request at WARNING ("[Request received] ..."): 480 lines a smoke run.
logging.getLogger("transformers.cli.serving").setLevel(logging.ERROR)
# Sampling fields continuous batching in 5.23 cannot apply per request: a request with one runs sequentially.
PER_REQUEST_FIELDS = ("stop", "frequency_penalty", "logit_bias", "generation_config", "seed", "top_p")


@dataclass(frozen=True)
class ServedModel:
    name: str  # what clients send as "model"
    path: Path  # the checkpoint dir it was loaded from


class CheckpointManager(ModelManager):
    """transformers' ModelManager holding checkpoints loaded here, keyed by their served name."""

    def __init__(self) -> None:
        super().__init__(device="cpu", model_timeout=-1)  # never loads by itself: every model is registered

    @staticmethod
    def process_model_name(model_id: str) -> str:
        return model_id  # the served name is the key; theirs appends "@main" for hub revisions

    def register(self, name: str, model: Any, tok: Any) -> None:
        self.loaded_models[name] = TimedModel(model, timeout_seconds=-1, processor=tok)


class Server:
    """The served checkpoints, and transformers' chat and text handlers on two paths: continuous batching
    (one batch per model) and sequential generation (one request at a time, per model)."""

    def __init__(self, models: list[ServedModel], cfg: ServeConfig) -> None:
        if not models:
            raise ValueError("serve at least one checkpoint")
        self.cfg, self.models = cfg, {m.name: m for m in models}
        self.manager = CheckpointManager()
        device = device_for(cfg.device)
        for m in models:
            model, tok = load_checkpoint(m.path, device)
            self.manager.register(m.name, model, tok)
        sequential = GenerationState(continuous_batching=False)
        cb_config = ContinuousBatchingConfig(**{k: v for k, v in {
            "page_size": cfg.cb_page_size, "num_blocks": cfg.cb_num_blocks,
            "max_batch_tokens": cfg.cb_max_batch_tokens}.items() if v is not None})
        self.sequential_chat = ChatCompletionHandler(self.manager, sequential)
        self.sequential_text = CompletionHandler(self.manager, sequential)
        # One CB state per model: a shared one restarts its batch whenever the requested model changes.
        self.batched_chat: dict[str, ChatCompletionHandler] = {}
        self.batched_text: dict[str, CompletionHandler] = {}
        for name in self.models:
            state = GenerationState(continuous_batching=True, cb_config=cb_config)
            self.batched_chat[name] = ChatCompletionHandler(self.manager, state)
            self.batched_text[name] = CompletionHandler(self.manager, state)

    def loaded(self, name: str) -> tuple[Any, Any]:
        timed = self.manager.loaded_models[name]
        return timed.model, timed.processor

    def resolve(self, body: dict) -> str:
        """The served name a request's ``model`` means (a served name or the checkpoint's path); first if none."""
        asked = body.get("model")
        if asked is None:
            return next(iter(self.models))
        if isinstance(asked, str):
            for m in self.models.values():
                if asked in (m.name, str(m.path)):
                    return m.name
        raise RequestError(404, f"model {asked!r} is not served here; served: {sorted(self.models)}",
                           param="model", code="model_not_found")

    def batched(self, name: str, body: dict) -> bool:
        temperature = body.get("temperature")
        greedy = temperature == 0 or (temperature is None and not self.loaded(name)[0].generation_config.do_sample)
        return greedy and not any(body.get(f) is not None for f in PER_REQUEST_FIELDS)

    def prepare(self, body: dict, prompt_tokens: int, name: str) -> dict:
        model, _ = self.loaded(name)
        body = {**body, "model": name,
                "max_tokens": fit_max_tokens(body, prompt_tokens, max_context_len(model), self.cfg.default_max_tokens)}
        body.pop("max_completion_tokens", None)
        if (body.get("temperature") or 0) > 0 and body.get("generation_config") is None:
            # 5.23 sets temperature on the checkpoint's config but leaves its do_sample=False: greedy again.
            body["generation_config"] = json.dumps({**model.generation_config.to_diff_dict(), "do_sample": True})
        return body

    async def chat_completion(self, body: dict, request_id: str) -> Response:
        check_messages(body)
        check_sampling(body, self.cfg.max_n)
        name = self.resolve(body)
        if body.pop("tool_choice", None) == "none":
            body.pop("tools", None)
        _, tok = self.loaded(name)
        messages = BaseHandler.get_processor_inputs_from_messages(body["messages"], Modality.LLM)
        try:
            prompt = tok.apply_chat_template(messages, tools=body.get("tools"), add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
        except Exception as err:  # the template rejects the conversation (a tool turn without a call, ...)
            raise RequestError(400, f"the chat template cannot render these messages: {err}",
                               param="messages") from None
        body = self.prepare(body, len(prompt), name)
        handler = self.batched_chat[name] if self.batched(name, body) else self.sequential_chat
        n = body.pop("n", None) or 1
        if n == 1:
            return with_stops(await handler.handle_request(body, request_id), body, chat=True)
        return with_stops(await self._n_choices(handler, body, request_id, n), body, chat=True)

    async def completion(self, body: dict, request_id: str) -> Response:
        check_sampling(body, self.cfg.max_n)
        if not isinstance(body.get("prompt"), str):
            raise RequestError(400, "prompt must be a string", param="prompt")
        if (body.pop("n", None) or 1) > 1:
            raise RequestError(400, "n > 1 is served on /v1/chat/completions", param="n")
        name = self.resolve(body)
        _, tok = self.loaded(name)
        body = self.prepare(body, len(tok(body["prompt"])["input_ids"]), name)
        handler = self.batched_text[name] if self.batched(name, body) else self.sequential_text
        return with_stops(await handler.handle_request(body, request_id), body, chat=False)

    async def _n_choices(self, handler: Any, body: dict, request_id: str, n: int) -> Response:
        """n independent completions of one request as one response. With a seed, choice i draws with seed + i,
        one after another: 5.23 seeds torch's global generator when it builds the config, not in the generating
        thread, so choices generated concurrently would draw from each other's streams."""
        seed = body.get("seed")
        if seed is None:
            responses = await asyncio.gather(*[handler.handle_request(dict(body), f"{request_id}-{i}")
                                               for i in range(n)])
        else:
            responses = [await handler.handle_request({**body, "seed": seed + i}, f"{request_id}-{i}")
                         for i in range(n)]
        parts = [json.loads(r.body) for r in responses]
        merged = parts[0]
        merged["choices"] = [{**p["choices"][0], "index": i} for i, p in enumerate(parts)]
        usage = merged.get("usage") or {}
        completion = sum((p.get("usage") or {}).get("completion_tokens", 0) for p in parts)
        merged["usage"] = {**usage, "completion_tokens": completion,
                           "total_tokens": usage.get("prompt_tokens", 0) + completion}
        return JSONResponse(merged)

    def shutdown(self) -> None:
        """Stop continuous batching's worker threads: they are not daemon threads, so a process whose server
        has stopped would otherwise never exit (and SIGTERM, when its parent ignores it, would not end it)."""
        for handler in self.batched_chat.values():
            handler.generation_state.shutdown()

    def model_list(self) -> dict:
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": int(m.path.stat().st_mtime), "owned_by": "llmdag",
             "root": str(m.path)} for m in self.models.values()]}


def with_stops(response: Response, body: dict, chat: bool) -> Response:
    """``response`` with its text cut before the request's first stop sequence (stops.py), if it has any."""
    stop = body.get("stop")
    if not stop:
        return response
    stops = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(response, StreamingResponse):
        response.body_iterator = cut_stream(response.body_iterator, stops, chat)
        return response
    return JSONResponse(cut_response(json.loads(response.body), stops, chat), status_code=response.status_code)


def build_app(server: Server, arena: Any = None) -> FastAPI:
    """The API, /chat and, given an ``arena.Arena``, /arena."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        server.shutdown()  # uvicorn's graceful shutdown (Ctrl-C, SIGTERM, should_exit) ends here

    app = FastAPI(title="llmdag serve", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(RequestError)
    async def refused(_request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.payload(), status_code=err.status)

    @app.exception_handler(HTTPException)  # raised inside transformers' handlers: same OpenAI error shape
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(RequestError(err.status_code, str(err.detail)).payload(), status_code=err.status_code)

    async def body_of(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > server.cfg.max_request_bytes:
            raise RequestError(413, f"request body is {int(declared):,} bytes; this server takes at most "
                               f"{server.cfg.max_request_bytes:,}", code="request_too_large")
        return parse_body(await request.body(), server.cfg.max_request_bytes)

    def request_id(request: Request) -> str:
        return request.headers.get("x-request-id") or f"req-{time.monotonic_ns():x}"

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await server.chat_completion(await body_of(request), request_id(request))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.completion(await body_of(request), request_id(request))

    @app.get("/v1/models")
    def list_models() -> dict:
        return server.model_list()

    @app.get("/v1/models/{name:path}")
    def get_model(name: str) -> dict:
        for entry in server.model_list()["data"]:
            if entry["id"] == name:
                return entry
        raise RequestError(404, f"model {name!r} is not served here; served: {sorted(server.models)}",
                           param="model", code="model_not_found")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": list(server.models)}

    @app.get("/chat")
    def chat_page() -> FileResponse:
        return FileResponse(PAGES / "chat.html", media_type="text/html")

    @app.get("/chat/tools")
    def chat_tools() -> list[dict]:
        """The schemas of the tools models/tool_use was trained to call, for the page's "offer tools" box."""
        return tool_schemas()

    @app.post("/chat/tools/call")
    async def chat_tool_call(request: Request) -> dict:
        """Runs one of the page's tool calls as the tool-use eval does (call_tool: python in its sandbox); the
        page sends the result back as a ``tool`` turn. Off the OpenAI API: a client of /v1 runs its own tools."""
        call = await body_of(request)
        return {"content": await asyncio.to_thread(call_tool, call)}

    @app.get("/arena")
    def arena_page() -> FileResponse:
        return FileResponse(PAGES / "arena.html", media_type="text/html")

    @app.post("/arena/pair")
    async def arena_pair(request: Request) -> dict:
        if arena is None:
            raise RequestError(404, "this server has no arena (no votes directory)")
        prompt = (await body_of(request)).get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise RequestError(400, "prompt must be a string", param="prompt")
        return await arena.pair(prompt)

    @app.post("/arena/vote")
    async def arena_vote(request: Request) -> dict:
        if arena is None:
            raise RequestError(404, "this server has no arena (no votes directory)")
        body = await body_of(request)
        return await asyncio.to_thread(arena.vote, body.get("pair_id"), body.get("choice"))

    return app
