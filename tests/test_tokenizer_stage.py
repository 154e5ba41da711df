"""Tests for the tokenizer stage (pipeline_assets/tokenizer/train.py and shards.py).

Run: python -m pytest tests/test_tokenizer_stage.py

Hermetic and CPU-only: the corpus is ~420 KB of real text from this Python's standard-library sources and
`pydoc_data.topics`, written as llmdag JSONL; one 1024-token tokenizer and one shard set serve the module.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray hub id must fail fast, never download

from pipeline_assets.tokenizer.shards import SHARD_FORMAT, ShardConfig, tokenize_to_shards  # noqa: E402
from pipeline_assets.tokenizer.train import TokenizerConfig, train_tokenizer  # noqa: E402

CFG = TokenizerConfig(vocab_size=1024)
SHARD_CFG = ShardConfig(shard_tokens=20_000, batch_documents=16)  # small, so documents cross shard edges


def _write_jsonl(path: Path, docs: list[tuple[str, str]], domain: str) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for doc_id, text in docs:
            metadata = {"source": "stdlib", "domain": domain}
            record = {"id": f"{domain}/{doc_id}", "text": text, "metadata": metadata}
            f.write(json.dumps(record) + "\n")
    return path


def _take(items: list[tuple[str, str]], max_bytes: int) -> list[tuple[str, str]]:
    out, total = [], 0
    for item in items:
        if total + len(item[1]) > max_bytes:
            continue
        out.append(item)
        total += len(item[1])
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("corpus")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(stdlib.glob("*.py"))[:80]]
    prose = sorted(topics.items())
    return {
        "train_code": _write_jsonl(root / "train_code.jsonl", _take(code[0::2], 150_000), "code"),
        "train_prose": _write_jsonl(root / "train_prose.jsonl", _take(prose[0::2], 150_000), "prose"),
        "val_code": _write_jsonl(root / "val_code.jsonl", _take(code[1::2], 60_000), "code"),
        "val_prose": _write_jsonl(root / "val_prose.jsonl", _take(prose[1::2], 60_000), "prose"),
    }


@pytest.fixture(scope="module")
def trained(corpus: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    out_dir = tmp_path_factory.mktemp("tokenizer")
    logs: list[str] = []
    result = train_tokenizer(
        [corpus["train_code"], corpus["train_prose"]],
        out_dir,
        CFG,
        eval_files={"code": [corpus["val_code"]], "prose": [corpus["val_prose"]]},
        log=logs.append,
    )
    return out_dir, result, logs


@pytest.fixture(scope="module")
def tok(trained: tuple[Path, dict, list[str]]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(trained[0])


def _splits(corpus: dict[str, Path]) -> dict[str, list[Path]]:
    return {
        "train": [corpus["train_code"], corpus["train_prose"]],
        "val": [corpus["val_code"], corpus["val_prose"]],
    }


@pytest.fixture(scope="module")
def shards(trained: tuple[Path, dict, list[str]], corpus: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("shards")
    return out_dir, tokenize_to_shards(trained[0], _splits(corpus), out_dir, SHARD_CFG, log=lambda _: None)


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


# --- config -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocab_size": 100}, "vocab_size=100 must be in"),
        ({"split_pattern": "gpt5"}, "choose one of ['digits', 'gpt2', 'gpt4']"),
        ({"eos_token": "<|pad|>"}, "must be distinct"),
        ({"extra_special_tokens": ("<|it's|>",)}, "use a form like"),
        ({"max_train_bytes": 0}, "or None to use every document"),
        ({"min_frequency": 0}, "min_frequency=0 must be >= 1"),
    ],
)
def test_config_validate_says_what_to_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TokenizerConfig(**kwargs).validate()
    with pytest.raises(ValueError):
        ShardConfig(shard_tokens=0).validate()


# --- train_tokenizer ----------------------------------------------------------------------------------------


def test_train_returns_json_metadata(trained: tuple[Path, dict, list[str]]) -> None:
    _, result, logs = trained
    json.dumps(result)  # plain JSON types only: it becomes Dagster metadata
    assert result["vocab_size"] == CFG.vocab_size
    assert result["train_documents"] > 10 and result["train_bytes"] > 200_000
    assert set(result["bytes_per_token_by_domain"]) == {"code", "prose"}
    assert result["eval_held_out"] is True
    assert result["roundtrip_exact"] is True and result["roundtrip_failures"] == 0
    assert result["chat_template_ok"] is True, result["chat_template_problems"]
    assert result["special_tokens"] == {"<|pad|>": 0, "<|bos|>": 1, "<|im_end|>": 2, "<|im_start|>": 3}
    assert result["skipped_records"] == {"train": {}, "eval": {}}
    assert any("bytes/token" in line for line in logs)


def test_compression_on_prose(trained: tuple[Path, dict, list[str]]) -> None:
    by_domain = trained[1]["bytes_per_token_by_domain"]
    assert by_domain["prose"] > 2.0, by_domain  # measured 2.64 at vocab 1024, 1.98 at 512


def test_reloads_and_round_trips_exactly(tok: Any) -> None:
    hard = [
        "def f(x):\r\n\treturn x  # trailing   \n\n",
        "naïve café — 東京 🙂 \u200b zero-width, \U0001f9ea emoji",
        "  leading spaces and 1234567890 digits 3.14159",
        "literal <|im_end|> and <|im_start|>user inside a document",
    ]
    for text in hard:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.encode("hello", add_special_tokens=True) == tok.encode("hello", add_special_tokens=False)


def test_special_tokens_are_single_ids(tok: Any) -> None:
    for token in CFG.special_tokens:
        assert tok.encode(token, add_special_tokens=False) == [tok.convert_tokens_to_ids(token)]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>" and tok.bos_token == "<|bos|>"
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    assert tok.model_max_length == CFG.model_max_length


def test_chat_template_masks_only_assistant_tokens(tok: Any) -> None:
    chat = [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven is prime."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Eleven."},
    ]
    rendered = tok.apply_chat_template(chat, tokenize=False)
    assert rendered == (
        "<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\nSeven is prime.<|im_end|>\n"
        "<|im_start|>user\nAnother?<|im_end|>\n<|im_start|>assistant\nEleven.<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n"

    out = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(masked) == "Seven is prime.<|im_end|>Eleven.<|im_end|>"
    assert masked.count(tok.eos_token_id) == 2  # the model is trained to emit the stop token
    unmasked = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "Name a prime." in unmasked and "Seven" not in unmasked and "Eleven" not in unmasked


def test_max_train_bytes_caps_text(corpus: dict[str, Path], tmp_path: Path) -> None:
    cfg = TokenizerConfig(vocab_size=400, max_train_bytes=60_000, max_eval_bytes=30_000)
    result = train_tokenizer([corpus["train_code"], corpus["train_prose"]], tmp_path, cfg, log=lambda _: None)
    assert 0 < result["train_bytes"] <= 60_000
    assert 0 < result["eval_bytes"] <= 30_000
    assert result["eval_held_out"] is False and set(result["bytes_per_token_by_domain"]) == {"code", "prose"}


def test_training_is_deterministic(trained: tuple[Path, dict, list[str]], corpus: dict[str, Path],
                                   tmp_path: Path) -> None:
    eval_files = {"code": [corpus["val_code"]], "prose": [corpus["val_prose"]]}
    train_files = [corpus["train_code"], corpus["train_prose"]]
    train_tokenizer(train_files, tmp_path, CFG, eval_files, log=lambda _: None)
    names = sorted(p.name for p in trained[0].iterdir())
    assert "tokenizer.json" in names and names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (trained[0] / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_train_without_usable_documents_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\nnot json\n')
    out = tmp_path / "tok"
    out.mkdir()
    with pytest.raises(ValueError, match=r"no usable documents.*'missing_text': 1, 'invalid_json': 1"):
        train_tokenizer([bad], out, CFG, log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="training_mixture"):
        train_tokenizer([tmp_path / "nope.jsonl"], out, CFG, log=lambda _: None)


# --- tokenize_to_shards -------------------------------------------------------------------------------------


def test_shards_match_index(shards: tuple[Path, dict], corpus: dict[str, Path], tok: Any) -> None:
    out_dir, result = shards
    index = json.loads((out_dir / "index.json").read_text())
    assert {k: result[k] for k in index} == index
    assert index["format"] == SHARD_FORMAT and index["dtype"] == "uint16"
    assert index["vocab_size"] == len(tok) and index["eos_id"] == tok.eos_token_id
    assert index["bos_id"] == tok.bos_token_id
    assert result["tokens_per_s"] > 0 and result["wall_time_s"] > 0
    for split, files in _splits(corpus).items():
        info = index["splits"][split]
        texts = [t for f in files for t in _texts(f)]
        assert info["documents"] == len(texts)
        assert info["bytes"] == sum(len(t.encode()) for t in texts)
        arrays = [np.load(out_dir / s["file"]) for s in info["shards"]]
        assert len(arrays) > 1  # documents cross shard boundaries in this test
        assert [len(a) for a in arrays[:-1]] == [SHARD_CFG.shard_tokens] * (len(arrays) - 1)
        for shard, arr in zip(info["shards"], arrays, strict=True):
            assert arr.dtype == np.uint16 and arr.ndim == 1 and len(arr) == shard["tokens"]
            assert int(np.count_nonzero(arr == index["eos_id"])) == shard["documents"]
        stream = np.concatenate(arrays)
        assert len(stream) == info["tokens"] == sum(s["tokens"] for s in info["shards"])
        assert int(np.count_nonzero(stream == index["eos_id"])) == info["documents"]
        assert stream[-1] == index["eos_id"]
        # eos separates documents: cutting the stream at eos gives back every document, in order
        cuts = np.flatnonzero(stream == index["eos_id"])
        starts = np.concatenate([[0], cuts[:-1] + 1])
        decoded = [tok.decode(stream[a:b].tolist()) for a, b in zip(starts, cuts, strict=True)]
        assert decoded == texts
    assert sum(info["tokens"] for info in index["splits"].values()) > 100_000
    assert not list(out_dir.glob("*.tmp"))


def test_shards_are_deterministic(shards: tuple[Path, dict], trained: tuple[Path, dict, list[str]],
                                  corpus: dict[str, Path], tmp_path: Path) -> None:
    first, _ = shards
    tokenize_to_shards(trained[0], _splits(corpus), tmp_path, SHARD_CFG, log=lambda _: None)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_bad_records_are_counted_not_dropped_silently(trained: tuple[Path, dict, list[str]],
                                                      tmp_path: Path) -> None:
    messy = tmp_path / "messy.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": "A fine document.", "metadata": {"domain": "prose"}}).encode(),
        b"{not json",
        b"[1, 2, 3]",
        json.dumps({"id": "no-text"}).encode(),
        json.dumps({"id": "int-text", "text": 5}).encode(),
        json.dumps({"id": "empty", "text": ""}).encode(),
        b"",
        b'{"id": "bad-utf8", "text": "\xff\xfe"}',
        b'{"id": "surrogate", "text": "\\ud800"}',
        json.dumps({"id": "ok2", "text": "Forged <|im_end|> boundary stays text."}).encode(),
    ]
    messy.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    out.mkdir()
    result = tokenize_to_shards(trained[0], {"train": [messy]}, out, SHARD_CFG, log=lambda _: None)
    assert result["skipped_records"]["train"] == {
        "invalid_json": 1, "not_an_object": 1, "missing_text": 2, "empty_text": 1, "blank_line": 1,
        "invalid_utf8": 1, "invalid_unicode": 1,
    }
    assert result["splits"]["train"]["documents"] == 2
    stream = np.load(out / "train_00000.npy")
    assert int(np.count_nonzero(stream == result["eos_id"])) == 2  # the literal "<|im_end|>" is not an eos


def test_empty_or_missing_split_raises_with_names(trained: tuple[Path, dict, list[str]],
                                                   tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("nope\n")
    for i, (splits, error, pattern) in enumerate([
        ({"train": [junk]}, ValueError, r"split 'train' has no usable documents in \[.*junk\.jsonl'\]"),
        ({"val": []}, ValueError, "split 'val' has no input files"),
        ({"val": [tmp_path / "missing.jsonl"]}, FileNotFoundError, "split 'val'.*missing.jsonl"),
        ({"../x": [junk]}, ValueError, "split name"),
    ]):
        out = tmp_path / f"out{i}"
        out.mkdir()
        with pytest.raises(error, match=pattern):
            tokenize_to_shards(trained[0], splits, out, SHARD_CFG, log=lambda _: None)


def test_refuses_non_empty_out_dir(shards: tuple[Path, dict], trained: tuple[Path, dict, list[str]],
                                   corpus: dict[str, Path]) -> None:
    with pytest.raises(FileExistsError, match="pass an empty dir"):
        tokenize_to_shards(trained[0], _splits(corpus), shards[0], SHARD_CFG, log=lambda _: None)
