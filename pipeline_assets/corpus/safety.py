"""Content-safety filters for curation: abusive text and malware payloads, offline, as datatrove filter steps.

    pipeline = [JsonlReader(...), ToxicityFilter(exclusion_writer=...), MalwareFilter(exclusion_writer=...), ...]
    # stats: dropped_toxicity, dropped_malware_<rule> (dropped_malware_reverse_shell, ...)

- ``ToxicityFilter`` scores sentence-sized units with alt-profanity-check (TF-IDF + linear SVM shipped in
  the wheel; detoxify needs torch.hub, datatrove's C4BadWordsFilter downloads its lists). One score for the
  whole document dilutes an abusive paragraph (the TF-IDF vector is L2-normalised over the whole text): a
  10-paragraph gardening guide with one abusive paragraph scores 0.14 as a document and 0.998 on that
  paragraph. So each unit is scored, and the document is dropped on its worst unit (``toxicity_max``) or
  on the share of its units that are toxic (``toxic_units``). The model detects profanity and insults; a
  threat in clean words ("I will come over and smash your face in") scores 0.52 and is kept.
- ``MalwareFilter`` matches payloads with YARA rules in ``rules/*.yar`` (one rule per payload family, the
  rule name is the drop reason) and decodes long base64/hex runs that hold an executable (ELF, PE,
  Mach-O). YARA is the format security teams write signatures in, so a rule can be reviewed and added
  without touching Python; ClamAV's signatures need ``freshclam`` (network). The rules match the payload,
  not talk about it: CVE write-ups, "how to detect web shells" prose, ELF/PE format docs and hexdumps,
  base64 images, CPython's ``subprocess``/``pty``/``socket`` code and ``curl https://... | sh``
  installers from named hosts (package READMEs are full of them) are kept; the same pipe from a raw IP
  address is a dropper. Benign look-alikes are in tests/fixtures/content_safety.jsonl; the CPython
  standard library (13,353 files), every installed package's .py files (22,630), pydoc topics and the
  installed packages' READMEs give 0 matches.

Both filters keep their models in a per-process cache, never on ``self``: the steps pickle to workers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import string
import struct
from collections.abc import Callable
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from pipeline_assets.corpus.config import ContentSafetyConfig

RULES_DIR = Path(__file__).parent / "rules"


def safety_recipe(cfg: ContentSafetyConfig) -> list[tuple[str, Callable[[DiskWriter | None], BaseFilter]]]:
    """(name, make(exclusion_writer)) pairs, the shape of ``filters._recipe``, for the enabled filters."""
    cfg.validate()
    recipe: list[tuple[str, Callable[[DiskWriter | None], BaseFilter]]] = []
    if cfg.toxicity:
        recipe.append(("toxicity", lambda w: ToxicityFilter(
            threshold=cfg.toxicity_threshold, unit_fraction=cfg.toxic_unit_fraction,
            max_threshold=cfg.toxicity_max_threshold, min_unit_chars=cfg.min_unit_chars, exclusion_writer=w)))
    if cfg.malware:
        recipe.append(("malware", lambda w: MalwareFilter(exclusion_writer=w)))
    return recipe


# --- toxicity ----------------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def text_units(text: str, min_chars: int) -> list[str]:
    """Sentences and lines, merged within a paragraph until each has ``min_chars``; a paragraph's short tail
    is its own unit, so an abusive one-liner at the end of a paragraph is not diluted by its neighbour."""
    units = []
    for paragraph in _PARAGRAPH.split(text):
        current = ""
        for piece in _SENTENCE.split(paragraph):
            piece = piece.strip()
            if not piece:
                continue
            current = f"{current} {piece}" if current else piece
            if len(current) >= min_chars:
                units.append(current)
                current = ""
        if current:
            units.append(current)
    return units


def unit_scores(units: list[str]) -> list[float]:
    """Profanity probability per unit (alt-profanity-check's calibrated linear SVM over TF-IDF)."""
    # Imported on first use: the import unpickles the vectorizer and SVM (~1.3 s), once per worker process.
    from profanity_check import predict_prob

    return predict_prob(units).tolist()


class ToxicityFilter(BaseFilter):
    """Drops a document whose worst unit, or whose share of toxic units, is over the threshold."""

    name = "🤬 Toxicity (profanity-check, per unit)"
    _requires_dependencies = [("profanity_check", "alt-profanity-check")]

    def __init__(self, threshold: float = ContentSafetyConfig.toxicity_threshold,
                 unit_fraction: float = ContentSafetyConfig.toxic_unit_fraction,
                 max_threshold: float = ContentSafetyConfig.toxicity_max_threshold,
                 min_unit_chars: int = ContentSafetyConfig.min_unit_chars,
                 exclusion_writer: DiskWriter | None = None, batch_size: int = 256) -> None:
        super().__init__(exclusion_writer, batch_size)
        ContentSafetyConfig(toxicity_threshold=threshold, toxic_unit_fraction=unit_fraction,
                            toxicity_max_threshold=max_threshold, min_unit_chars=min_unit_chars).validate()
        self.threshold = threshold
        self.unit_fraction = unit_fraction
        self.max_threshold = max_threshold
        self.min_unit_chars = min_unit_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        # One model call per batch of documents: a call costs ~3 ms however few units it gets (700-char docs:
        # 286 docs/s at batch_size=1, 6.8k at 64, 9.6k at 256).
        units = [text_units(doc.text, self.min_unit_chars) for doc in batch]
        flat = [u for doc_units in units for u in doc_units]
        scores = unit_scores(flat) if flat else []
        results, start = [], 0
        for doc, doc_units in zip(batch, units, strict=True):
            doc_scores = scores[start:start + len(doc_units)]
            start += len(doc_units)
            worst = float(max(doc_scores, default=0.0))
            toxic = int(sum(s >= self.threshold for s in doc_scores))
            doc.metadata["toxicity_max"] = round(worst, 3)
            doc.metadata["toxic_units"] = toxic
            doc.metadata["toxicity_units"] = len(doc_units)
            dropped = worst >= self.max_threshold or toxic >= self.unit_fraction * max(len(doc_units), 1)
            results.append((False, "toxicity") if dropped else True)
        return results


# --- malware -----------------------------------------------------------------------------------------

_EXEC_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",  # Mach-O 32/64, BE/LE
    b"\xca\xfe\xba\xbe",  # universal Mach-O, and a Java class file: both are executables, not text
)
# Only runs that start like an encoded header are decoded ("f0VMR" is base64 of "\x7fELF", "TV" of "MZ"); the
# patterns start with the literal prefixes so the regex engine skips to them (a lookbehind for the run's
# start made it 3x slower), and the start is checked in Python.
# A base64 run includes the wrapped lines that follow it (MIME wraps at 76 chars, PEM at 64).
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_BASE64_PREFIXES = sorted({base64.b64encode(m).decode()[:len(m) * 8 // 6] for m in (*_EXEC_MAGIC, b"MZ")})
_BASE64_EXEC = re.compile("(?:" + "|".join(map(re.escape, _BASE64_PREFIXES))
                          + r")[A-Za-z0-9+/]{59,}={0,2}(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/]{4,}={0,2})*")
# Lower- and upper-case hex spelled out: re.IGNORECASE loses the prefix skip and costs 6x.
_HEX_EXEC = re.compile("(?:" + "|".join(h for m in (*_EXEC_MAGIC, b"MZ") for h in (m.hex(), m.hex().upper()))
                       + ")[0-9a-fA-F]{120,}")
_MIN_BASE64_CHARS = 64
_HEAD_CHARS = 1024  # 768 decoded bytes: covers a PE's e_lfanew (usually 0x80-0x118) and its "PE\0\0"


def is_executable(head: bytes) -> bool:
    """ELF/Mach-O by magic; PE by "MZ" plus the PE signature or the DOS stub, since "MZ" alone is 2 bytes."""
    if head.startswith(_EXEC_MAGIC):
        return True
    if not head.startswith(b"MZ"):
        return False
    if len(head) >= 64:
        (e_lfanew,) = struct.unpack_from("<I", head, 0x3C)
        if head[e_lfanew:e_lfanew + 4] == b"PE\x00\x00":
            return True
    return head[2:4] == b"\x90\x00" or b"This program cannot be run in DOS mode" in head


def has_encoded_executable(text: str) -> bool:
    """A 64+ char base64 run or a 128+ char hex run in the text that decodes to an executable header."""
    for match in _BASE64_EXEC.finditer(text):
        start, first_line = match.start(), match.group().split("\n", 1)[0].rstrip()
        if (start and text[start - 1] in _BASE64_CHARS) or len(first_line) < _MIN_BASE64_CHARS:
            continue  # inside a longer run (a PNG's bytes can contain "TV"), or too short
        chars = re.sub(r"[^A-Za-z0-9+/]", "", match.group())[:_HEAD_CHARS]
        if is_executable(base64.b64decode(chars[:len(chars) - len(chars) % 4])):
            return True
    for match in _HEX_EXEC.finditer(text):
        start = match.start()
        if start and text[start - 1] in string.hexdigits:
            continue
        chars = match.group()[:_HEAD_CHARS]
        if is_executable(binascii.unhexlify(chars[:len(chars) - len(chars) % 2])):
            return True
    return False


@functools.cache
def _yara_rules(rules_dir: str):
    import yara

    files = sorted(Path(rules_dir).glob("*.yar"))
    if not files:
        raise FileNotFoundError(f"no *.yar under {rules_dir}: reinstall llmdag (package-data includes *.yar)")
    # error_on_warning: a rule YARA calls slow ("string slows down scanning") fails here, not in curation.
    return yara.compile(filepaths={f.stem: str(f) for f in files}, error_on_warning=True)


class MalwareFilter(BaseFilter):
    """Drops documents that carry a malware payload; the reason is ``malware_<rule>``."""

    name = "☣️ Malware payloads (YARA)"
    _requires_dependencies = [("yara", "yara-python")]

    def __init__(self, rules_dir: str | Path | None = None, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)
        # None: the packaged rules, resolved in the worker, whose install path may differ from the driver's.
        self.rules_dir = str(rules_dir) if rules_dir else None

    def matched_rules(self, text: str) -> list[str]:
        """Matched rule names in rule-file order, then ``encoded_executable``."""
        import yara

        rules_dir = self.rules_dir or str(RULES_DIR)
        try:
            names = [m.rule for m in _yara_rules(rules_dir).match(data=text.encode("utf-8", "surrogatepass"))]
        except yara.Error as e:
            raise RuntimeError(f"YARA failed on a {len(text)}-char document: {e}; check the rules in "
                               f"{rules_dir}") from e
        if has_encoded_executable(text):
            names.append("encoded_executable")
        return names

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        rules = self.matched_rules(doc.text)
        doc.metadata["malware_rules"] = rules
        return (False, f"malware_{rules[0]}") if rules else True
