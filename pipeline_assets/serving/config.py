"""What ``llmdag serve`` and ``serving/smoke`` run with, per profile (profiles.py section ``serve``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    device: str = "auto"  # "auto" = cuda when there is one
    # transformers' continuous batching sizes its paged KV cache from free GPU memory when these are None. On
    # CPU its defaults took 32 s for 4 requests; 16-token pages x 128 blocks (2,048 cached tokens) and 256 tokens a
    # step served 16 concurrent greedy requests at 2,048 tok/s vs 463 one at a time (tiny grpo, 2 cores).
    cb_page_size: int | None = None
    cb_num_blocks: int | None = None
    cb_max_batch_tokens: int | None = None
    # A request body above this is refused with 413 before it is parsed (the tiny models' whole context is a
    # few KB of text; 256 KiB leaves room for long tool schemas on the bigger profiles).
    max_request_bytes: int = 256 * 1024
    max_n: int = 16  # choices one chat request may ask for
    default_max_tokens: int = 256  # when a request names none (clipped to what the context has left)
    # serving/smoke: held-out arithmetic prompts sent through the openai client, and how many at once.
    smoke_prompts: int = 32
    smoke_concurrency: int = 16

    def validate(self) -> None:
        for name in ("cb_page_size", "cb_num_blocks", "cb_max_batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"serve.{name}={value}: must be >= 1 (or None: sized by transformers)")
        if self.max_request_bytes < 1024 or self.max_n < 1 or self.default_max_tokens < 1:
            raise ValueError("serve: max_request_bytes >= 1024, max_n >= 1 and default_max_tokens >= 1")
        if self.smoke_prompts < 1 or self.smoke_concurrency < 1:
            raise ValueError("serve: smoke_prompts and smoke_concurrency must be >= 1")
