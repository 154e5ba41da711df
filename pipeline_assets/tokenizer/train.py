"""Train the llmdag tokenizer: byte-level BPE plus a ChatML chat template, saved as a transformers dir.

    python -m pipeline_assets.tokenizer.train --out /tmp/tok --train data/train/*.jsonl \
        --eval prose=data/val/prose.jsonl --eval code=data/val/code.jsonl --vocab-size 4096

`train_tokenizer(...)` is what the `tokenizer/tokenizer` asset calls; it returns plain JSON metadata. The
saved dir loads with `transformers.AutoTokenizer.from_pretrained(out_dir)`. Input files are JSONL, one
document a line: `{"id": str, "text": str, "metadata": {"source": str, "domain": str, ...}}`.

Token contract that every later stage relies on:
- The special tokens take ids 0..: <|pad|>, <|bos|>, <|im_end|>, <|im_start|>, then `extra_special_tokens`.
- `eos_token` is <|im_end|>. The same id ends an assistant turn in the chat template, separates documents
  in the pretraining shards and stops generation. With one stop id everywhere, the base model already learns
  to emit it at document ends, and SFT/RL generation stops on `tokenizer.eos_token_id` without a list of stop
  ids in every generation config. There is deliberately no separate <|eos|>: a second end token is one the
  chat model would never learn to emit, so generation would run to max length.
- pad is its own token, not eos: collators drop pad from the labels, so pad == eos would teach "never stop".
- Nothing is added implicitly (`tok(text)` adds no bos/eos); callers that want bos prepend `bos_token_id`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline_assets.config_flags import parse_config_args

# GPT-4's split (cl100k). On the stdlib-code + Python-docs corpus it buys no compression: bytes/token at
# vocab 4096 was code 3.42 vs 3.40 (GPT-2 split), docs 3.66 vs 3.68, licenses 2.97 vs 3.08. We keep it for
# numbers: `\p{N}{1,3}` cuts digit runs into <= 3-digit pieces, where GPT-2's `\p{N}+` learns whatever
# long numbers the corpus has (years, line numbers), so "12345" and "12346" tokenize unlike each other.
# That matters for the arithmetic rewards of the reasoning stage; "gpt2" stays selectable.
# "digits" (the default) goes further, as Llama and DeepSeek do: one token per digit, so a small model can
# learn column arithmetic (carry by carry) instead of memorising a table of 2-3 digit tokens, which
# cannot generalise to held-out sums.
SPLIT_PATTERNS: dict[str, str | None] = {
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
    "digits": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
    "gpt2": None,  # the ByteLevel pre-tokenizer's built-in GPT-2 regex
}

# Characters that would break the Jinja string literals the chat template is built from.
_TEMPLATE_UNSAFE = set("'\"\\{}%\n\r")


@dataclass(frozen=True)
class TokenizerConfig:
    """Used by: tokenizer/tokenizer. Every field has a default that trains in seconds on the tiny profile."""

    vocab_size: int = 4096  # includes the 256 byte tokens and the special tokens
    min_frequency: int = 2
    max_train_bytes: int | None = 20_000_000  # text fed to the trainer; None = every train document
    max_eval_bytes: int | None = 5_000_000  # text used for compression/round-trip stats; None = all
    model_max_length: int = 2048
    split_pattern: str = "digits"  # a key of SPLIT_PATTERNS
    pad_token: str = "<|pad|>"
    bos_token: str = "<|bos|>"
    eos_token: str = "<|im_end|>"  # ends chat turns AND documents; see the module docstring
    im_start_token: str = "<|im_start|>"
    extra_special_tokens: tuple[str, ...] = ()  # reserve ids now (tool calls, FIM) to avoid a retrain later

    @property
    def special_tokens(self) -> tuple[str, ...]:
        named = (self.pad_token, self.bos_token, self.eos_token, self.im_start_token)
        return (*named, *self.extra_special_tokens)

    def validate(self) -> None:
        if self.split_pattern not in SPLIT_PATTERNS:
            raise ValueError(
                f"split_pattern={self.split_pattern!r} is unknown; choose one of {sorted(SPLIT_PATTERNS)}"
            )
        specials = self.special_tokens
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {list(specials)}; give each its own")
        for token in specials:
            if not token.strip() or _TEMPLATE_UNSAFE & set(token):
                raise ValueError(
                    f"special token {token!r} is empty or contains one of "
                    f"{''.join(sorted(_TEMPLATE_UNSAFE))!r}; use a form like '<|name|>'"
                )
        min_vocab = 256 + len(specials) + 1  # byte alphabet + specials + at least one merge
        if not min_vocab <= self.vocab_size <= 2**32:
            raise ValueError(f"vocab_size={self.vocab_size} must be in [{min_vocab}, 2**32]: 256 byte tokens "
                             f"and {len(specials)} special tokens come first")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency={self.min_frequency} must be >= 1")
        for name in ("max_train_bytes", "max_eval_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} must be positive, or None to use every document")
        if self.model_max_length < 1:
            raise ValueError(f"model_max_length={self.model_max_length} must be >= 1")


# ----------------------------------------------------------------------------------------------------------
# Reading JSONL documents (shared with shards.py)


class Document(NamedTuple):
    text: str
    domain: str | None
    nbytes: int  # UTF-8 bytes of text


def parse_line(raw: bytes) -> Document | str:
    """One JSONL line -> a Document, or the reason it is rejected (a key for `skipped_records`)."""
    if not raw.strip():
        return "blank_line"
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8"
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; [[[[... raises RecursionError
        return "invalid_json"
    if not isinstance(record, dict):
        return "not_an_object"
    text = record.get("text")
    if not isinstance(text, str):
        return "missing_text"
    if not text:
        return "empty_text"
    try:
        nbytes = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON but not encodable text
        return "invalid_unicode"
    metadata = record.get("metadata")
    domain = metadata.get("domain") if isinstance(metadata, dict) else None
    return Document(text, domain if isinstance(domain, str) else None, nbytes)


def iter_documents(path: Path, skipped: Counter[str], max_raw_bytes: int | None = None) -> Iterator[Document]:
    """Valid documents of one JSONL file in line order; each rejected line is counted in `skipped` by reason.

    `max_raw_bytes` stops before the line that would take the file's consumed bytes past it.
    """
    consumed = 0
    with path.open("rb") as f:
        for raw in f:
            consumed += len(raw)
            if max_raw_bytes is not None and consumed > max_raw_bytes:
                return
            parsed = parse_line(raw)
            if isinstance(parsed, str):
                skipped[parsed] += 1
            else:
                yield parsed


def require_files(files: Iterable[Path], what: str, hint: str) -> list[Path]:
    files = [Path(p) for p in files]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} input file(s) not found, e.g. {missing[:3]}; {hint}")
    return files


def byte_budgets(files: list[Path], cap: int | None) -> list[int | None]:
    """Split a byte cap over files in proportion to their size.

    Taking the first `cap` bytes in file order would train only on the first sources of the mixture; a
    share proportional to size keeps the mixture's domain weights. JSON escaping makes raw bytes >= text
    bytes, so the text actually read stays under the cap.
    """
    sizes = [p.stat().st_size for p in files]
    if cap is None or sum(sizes) <= cap:
        return [None] * len(files)
    return [size * cap // sum(sizes) for size in sizes]


# ----------------------------------------------------------------------------------------------------------
# Tokenizer construction


def chat_template(cfg: TokenizerConfig) -> str:
    """ChatML, with tools the transformers way. `{% generation %}` wraps the assistant content AND its end
    token, so TRL's `assistant_only_loss` trains the model to emit <|im_end|> and stop; the newline after it
    belongs to the next turn's prefix.

    Tools (`apply_chat_template(..., tools=[fn_or_schema])`) render as one system line of signatures,
    `Tools: calculator(expression) python(code)`, not the JSON schemas: the tiny profile trains on
    128-token rows and three schemas are ~400 tokens. An assistant's `tool_calls` render as
    `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Qwen/Hermes form `RESPONSE_TEMPLATE`
    parses back); arguments that are already a JSON string (datasets store them so: Arrow would merge the
    argument keys of every row) are written as they are, not encoded twice. Results come back as `tool`
    turns. Without tools the output is plain ChatML, byte for byte.
    """
    start, end = cfg.im_start_token, cfg.eos_token
    return (
        "{%- set offset = 0 %}"
        "{%- if tools %}"
        f"{{{{- '{start}system\\n' }}}}"
        "{%- if messages and messages[0]['role'] == 'system' %}"
        "{{- messages[0]['content'] + '\\n' }}{%- set offset = 1 %}"
        "{%- endif %}"
        "{{- 'Tools:' }}"
        "{%- for tool in tools %}{%- set fn = tool['function'] if tool['function'] is defined else tool %}"
        "{{- ' ' + fn['name'] + '(' + ((fn['parameters'] or {}).get('properties') or {}) | list | join(', ')"
        " + ')' }}"
        "{%- endfor %}"
        f"{{{{- '{end}\\n' }}}}"
        "{%- endif %}"
        "{%- for message in messages[offset:] %}"
        f"{{{{- '{start}' + message['role'] + '\\n' }}}}"
        "{%- if message['role'] == 'assistant' %}"
        "{%- generation %}{{- message['content'] or '' }}"
        "{%- for call in message.get('tool_calls') or [] %}"
        "{%- set fn = call['function'] if call['function'] is defined else call %}"
        "{%- set args = fn['arguments'] if fn['arguments'] is defined else {} %}"
        "{{- '<tool_call>{\"name\": ' + fn['name'] | tojson + ', \"arguments\": ' "
        "+ (args if args is string else args | tojson) + '}</tool_call>' }}"
        "{%- endfor %}"
        f"{{{{- '{end}' }}}}{{%- endgeneration %}}"
        "{{- '\\n' }}"
        "{%- else %}"
        f"{{{{- message['content'] + '{end}' + '\\n' }}}}"
        "{%- endif %}"
        "{%- endfor %}"
        f"{{%- if add_generation_prompt %}}{{{{- '{start}assistant\\n' }}}}{{%- endif %}}"
    )


def response_template(cfg: TokenizerConfig) -> dict[str, Any]:
    """How `tokenizer.parse_response()` (and `transformers serve`) turns a reply into a message with
    structured `tool_calls`: transformers' own Qwen2 fallback, which reads the `<tool_call>` form
    chat_template writes. Saved in tokenizer_config.json, so every checkpoint's tokenizer carries it."""
    return {
        "defaults": {"role": "assistant"},
        "start_anchor": f"{cfg.im_start_token}assistant\n",
        "fields": {
            "tool_calls": {"open_pattern": r"\s*<tool_call>", "close": "</tool_call>", "repeats": True,
                           "content": "json", "transform": {"type": "function", "function": "{content}"}},
            "content": {"close_pattern": r"\s*" + re.escape(cfg.eos_token), "content": "text"},
        },
    }


def build_bpe(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.BpeTrainer]:
    # No unk token: the 256-byte initial alphabet makes every string encodable.
    tok = Tokenizer(models.BPE())
    pattern = SPLIT_PATTERNS[cfg.split_pattern]
    # add_prefix_space=False: a prefix space would change the first word and break decode(encode(x)) == x.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pattern is None)
    if pattern is None:
        tok.pre_tokenizer = byte_level
    else:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # tqdm bars freeze the Dagster log view; we log lines instead
    )
    return tok, trainer


def wrap_for_transformers(tok: Tokenizer, cfg: TokenizerConfig) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=cfg.pad_token,
        bos_token=cfg.bos_token,
        eos_token=cfg.eos_token,
        extra_special_tokens=[cfg.im_start_token, *cfg.extra_special_tokens],
        model_max_length=cfg.model_max_length,
        clean_up_tokenization_spaces=False,  # the cleanup rewrites " ." to "." and breaks exact round-trips
        chat_template=chat_template(cfg),
        response_template=response_template(cfg),
    )


# ----------------------------------------------------------------------------------------------------------
# Checks run on the saved artifact

SAMPLE_CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And in words?"},
    {"role": "assistant", "content": "Four."},
]


def check_chat_template(tok: Any, cfg: TokenizerConfig) -> list[str]:
    """Problems with the loaded tokenizer's specials and chat template; [] means it is fit for SFT with
    `assistant_only_loss=True` and for generation that stops on eos."""
    problems: list[str] = []
    for token in cfg.special_tokens:
        ids = tok.encode(token, add_special_tokens=False)
        if ids != [tok.convert_tokens_to_ids(token)]:
            problems.append(f"special token {token!r} encodes to {ids}, not one id")
    named = (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    if None in named or len(set(named)) != 3:
        problems.append(f"pad/bos/eos ids must exist and differ, got {named}")
    start, end = cfg.im_start_token, cfg.eos_token
    expected = "".join(f"{start}{m['role']}\n{m['content']}{end}\n" for m in SAMPLE_CHAT)
    rendered = tok.apply_chat_template(SAMPLE_CHAT, tokenize=False)
    if rendered != expected:
        problems.append(f"chat template renders {rendered!r}, expected {expected!r}")
    prompt = tok.apply_chat_template(SAMPLE_CHAT[:-1], tokenize=False, add_generation_prompt=True)
    if not prompt.endswith(f"{end}\n{start}assistant\n"):
        problems.append(f"add_generation_prompt must end with '{start}assistant\\n', got {prompt[-40:]!r}")
    out = tok.apply_chat_template(
        SAMPLE_CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special_tokens=False)
    want = "".join(m["content"] + end for m in SAMPLE_CHAT if m["role"] == "assistant")
    if trained != want:
        problems.append(f"assistant mask covers {trained!r}, expected {want!r}")
    return problems


def evaluate(tok: Any, docs: Iterable[tuple[str, Document]], batch: int = 256) -> dict[str, Any]:
    """Compression (bytes/token) per domain and exact round-trip over (domain, doc) pairs, encoding the way
    the shards do: no added specials, and special-token strings inside documents encoded as plain text."""
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())  # a copy: the flag below must not leak
    backend.encode_special_tokens = True
    nbytes: Counter[str] = Counter()
    ntokens: Counter[str] = Counter()
    failures: list[str] = []
    pending: list[tuple[str, Document]] = []
    ndocs = 0

    def flush() -> None:
        nonlocal ndocs
        ndocs += len(pending)
        texts = [d.text for _, d in pending]
        encoded = backend.encode_batch_fast(texts, add_special_tokens=False)
        decoded = backend.decode_batch([e.ids for e in encoded], skip_special_tokens=False)
        for (domain, doc), enc, back in zip(pending, encoded, decoded, strict=True):
            nbytes[domain] += doc.nbytes
            ntokens[domain] += len(enc.ids)
            if back != doc.text:
                failures.append(doc.text[:80])
        pending.clear()

    for item in docs:
        pending.append(item)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    total_tokens = sum(ntokens.values())
    return {
        "bytes_per_token": round(sum(nbytes.values()) / total_tokens, 4) if total_tokens else 0.0,
        "bytes_per_token_by_domain": {
            d: round(nbytes[d] / ntokens[d], 4) for d in sorted(ntokens) if ntokens[d]
        },
        "eval_bytes": sum(nbytes.values()),
        "eval_tokens": total_tokens,
        "eval_documents": ndocs,
        "roundtrip_failures": len(failures),
        "roundtrip_failure_examples": failures[:3],
    }


# ----------------------------------------------------------------------------------------------------------
# Entry points

_MIXTURE_HINT = "materialize corpus/training_mixture first, or fix the paths"


def train_tokenizer(
    train_files: list[Path],
    out_dir: Path,
    cfg: TokenizerConfig,
    eval_files: dict[str, list[Path]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on `train_files`, save a transformers tokenizer into the existing dir `out_dir`, then measure the
    saved artifact on `eval_files` ({domain: files}; None = the train files, grouped by metadata.domain)."""
    cfg.validate()
    t_start = time.perf_counter()
    train_files = require_files(train_files, "tokenizer train files", _MIXTURE_HINT)
    if not train_files:
        raise ValueError("train_tokenizer got no train files; pass the training mixture's train JSONL files")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir {out_dir} does not exist; the caller must create it first")
    eval_pairs = [(None, p) for p in train_files]
    if eval_files is not None:
        if not any(eval_files.values()):
            raise ValueError(f"eval_files={eval_files} lists no files; pass None to evaluate on train files")
        eval_pairs = [
            (domain, p)
            for domain, files in eval_files.items()
            for p in require_files(files, f"tokenizer eval files for domain {domain!r}", _MIXTURE_HINT)
        ]

    skipped: Counter[str] = Counter()
    seen = {"documents": 0, "bytes": 0}

    def train_texts() -> Iterator[list[str]]:
        # Batches of texts: the Rust trainer pulls them through one Python call per batch, not per document.
        batch: list[str] = []
        next_log = 10_000_000
        for path, budget in zip(train_files, byte_budgets(train_files, cfg.max_train_bytes), strict=True):
            for doc in iter_documents(path, skipped, budget):
                batch.append(doc.text)
                seen["documents"] += 1
                seen["bytes"] += doc.nbytes
                if len(batch) == 1000:
                    yield batch
                    batch = []
                if seen["bytes"] >= next_log:
                    log(f"tokenizer | read {seen['documents']:,} docs, {seen['bytes'] / 1e6:.1f} MB")
                    next_log += 10_000_000
        if batch:
            yield batch

    cap = "all" if cfg.max_train_bytes is None else f"{cfg.max_train_bytes / 1e6:.1f} MB"
    log(f"tokenizer | training byte-level BPE, vocab {cfg.vocab_size}, split {cfg.split_pattern}, "
        f"{len(train_files)} file(s), text cap {cap}")
    tok, trainer = build_bpe(cfg)
    t_train = time.perf_counter()
    tok.train_from_iterator(train_texts(), trainer)
    train_time_s = time.perf_counter() - t_train
    if seen["documents"] == 0:
        raise ValueError(
            f"no usable documents in {[str(p) for p in train_files[:3]]} ({len(train_files)} file(s)); "
            f"skipped: {dict(skipped)}; each line must be a JSON object with a non-empty string 'text'"
        )
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    log(f"tokenizer | trained on {seen['documents']:,} docs, {seen['bytes'] / 1e6:.2f} MB in "
        f"{train_time_s:.1f}s, vocab {vocab_size}" + (f", skipped {dict(skipped)}" if skipped else ""))
    if vocab_size < cfg.vocab_size:
        log(f"tokenizer | WARNING: only {vocab_size} of {cfg.vocab_size} tokens reached min_frequency="
            f"{cfg.min_frequency}; add text or lower vocab_size")

    wrap_for_transformers(tok, cfg).save_pretrained(out_dir)

    # Every check below runs on the tokenizer reloaded from disk: that is what later stages get.
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(out_dir)
    problems = check_chat_template(loaded, cfg)
    for problem in problems:
        log(f"tokenizer | chat template problem: {problem}")

    eval_skipped: Counter[str] = Counter()
    budgets = byte_budgets([p for _, p in eval_pairs], cfg.max_eval_bytes)

    def eval_docs() -> Iterator[tuple[str, Document]]:
        for (domain, path), budget in zip(eval_pairs, budgets, strict=True):
            for doc in iter_documents(path, eval_skipped, budget):
                yield domain or doc.domain or "unknown", doc

    stats = evaluate(loaded, eval_docs())
    if stats["eval_documents"] == 0:
        raise ValueError(f"no usable eval documents in {[str(p) for _, p in eval_pairs[:3]]}; "
                         f"skipped: {dict(eval_skipped)}; pass eval JSONL files with non-empty 'text'")
    log(f"tokenizer | bytes/token {stats['bytes_per_token']:.3f} {stats['bytes_per_token_by_domain']} | "
        f"round-trip failures {stats['roundtrip_failures']} of {stats['eval_documents']:,} docs")
    return {
        "tokenizer_dir": str(out_dir),
        "vocab_size": vocab_size,
        "requested_vocab_size": cfg.vocab_size,
        "split_pattern": cfg.split_pattern,
        "train_time_s": round(train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
        "train_bytes": seen["bytes"],
        "train_documents": seen["documents"],
        "train_files": len(train_files),
        "special_tokens": {t: loaded.convert_tokens_to_ids(t) for t in cfg.special_tokens},
        "eos_token": loaded.eos_token,
        "eos_token_id": loaded.eos_token_id,
        "bos_token_id": loaded.bos_token_id,
        "pad_token_id": loaded.pad_token_id,
        **stats,
        "eval_held_out": eval_files is not None,
        "roundtrip_exact": stats["roundtrip_failures"] == 0,
        "chat_template_ok": not problems,
        "chat_template_problems": problems,
        "skipped_records": {"train": dict(skipped), "eval": dict(eval_skipped)},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }


def _eval_arg(value: str) -> tuple[str, Path]:
    domain, sep, path = value.partition("=")
    if not sep or not domain:
        raise argparse.ArgumentTypeError(f"--eval takes DOMAIN=FILE, got {value!r}")
    return domain, Path(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Train the llmdag byte-level BPE tokenizer.")
    parser.add_argument("--train", nargs="+", type=Path, required=True, help="train JSONL files")
    parser.add_argument("--eval", type=_eval_arg, action="append", default=[], metavar="DOMAIN=FILE",
                        help="held-out JSONL file for one domain; repeat per file (default: the train files)")
    parser.add_argument("--out", type=Path, required=True, help="directory to save the tokenizer into")
    args, cfg = parse_config_args(parser, TokenizerConfig, "tokenizer", argv)
    eval_files: dict[str, list[Path]] | None = None
    for domain, path in args.eval:
        eval_files = eval_files or {}
        eval_files.setdefault(domain, []).append(path)
    args.out.mkdir(parents=True, exist_ok=True)
    result = train_tokenizer(args.train, args.out, cfg, eval_files)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
