"""Run the serving app: in the foreground (``llmdag serve``) or on a background thread for a block of code
(``serving/smoke``, tests, bench/serve.py), on 127.0.0.1 unless asked otherwise."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from pipeline_assets.arena_votes import votes_path
from pipeline_assets.checkpoint_paths import artifact_root, resolve_model_dir, stage_name
from pipeline_assets.serving.arena import Arena, heldout_prompts
from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.serving.server import ServedModel, Server, build_app

DEFAULT_MODEL = "release"  # release/model: what the gates let out


def served_name(spec: str) -> str:
    """The name clients send for a spec: "models/sft" -> "sft", "release/model" -> "release", a path as given."""
    return stage_name(spec) or spec.rstrip("/") or spec


def served_models(specs: list[str]) -> list[ServedModel]:
    """Each stage name or checkpoint path resolved (checkpoint_paths.resolve_model_dir: inside the artifact root)."""
    models, seen = [], set()
    for spec in specs or [DEFAULT_MODEL]:
        name = served_name(spec)
        if name in seen:
            raise ValueError(f"{spec!r} is served twice (as {name!r})")
        seen.add(name)
        models.append(ServedModel(name=name, path=resolve_model_dir(spec)))
    return models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """``with RunningServer(models, cfg) as url:`` serves on a free local port until the block ends."""

    def __init__(self, models: list[ServedModel], cfg: ServeConfig, host: str = "127.0.0.1",
                 port: int | None = None, votes: Path | None = None, arena_prompts: list[str] | None = None,
                 seed: int | None = None) -> None:
        server = Server(models, cfg)
        arena = Arena(server, votes, arena_prompts or [], seed) if votes is not None else None
        self.app = build_app(server, arena)
        self.host, self.port = host, port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="llmdag-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if not self.thread.is_alive():
                break
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server did not answer /health on {self.url}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.app.state.server.shutdown()  # also when uvicorn never got to its lifespan shutdown


def serve_forever(specs: list[str], cfg: ServeConfig, host: str, port: int) -> None:
    models = served_models(specs)
    server = Server(models, cfg)
    root, votes = artifact_root(), votes_path(artifact_root())
    prompts = heldout_prompts(root, os.environ.get("LLMDAG_PROFILE", "tiny"))
    app = build_app(server, Arena(server, votes, prompts))
    for m in models:
        print(f"serving {m.name!r} from {m.path}")
    print(f"OpenAI-compatible API on http://{host}:{port}/v1; chat page http://{host}:{port}/chat; arena "
          f"http://{host}:{port}/arena ({len(prompts)} held-out prompts; votes append to {votes})", flush=True)
    # Ctrl-C waits at most 5 s for open requests (uvicorn's default waits for every connection to close).
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("LLMDAG_SERVE_LOG", "warning"),
                timeout_graceful_shutdown=5)


