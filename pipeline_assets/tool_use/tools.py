"""The tools a tool-use model may call: plain Python functions with Google-style docstrings, their schemas from
`transformers.utils.get_json_schema`, and `call_tool` to run one call the way the chat CLI, the eval and the
training data do.

    calculator  exact integer arithmetic of any size (a tiny model cannot multiply 3-digit numbers in its head)
    python      a program run in the bubblewrap sandbox (posttrain/sandbox.py), its printed output returned
    lookup      the first docstring sentence of a Python standard-library object: a lookup over the Python
                documentation the corpus is built from, from a fixed index (no model-chosen import ever runs)

A call never raises: a wrong name, missing or unexpected arguments, or a failing expression come back as an
`error: ...` string, which is what the model sees as the tool's result.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

CALCULATOR, PYTHON, LOOKUP = "calculator", "python", "lookup"
# Integer results past this many digits are refused: 10**10**9 would take the process with it.
_MAX_DIGITS = 1000
_MAX_EXPRESSION_CHARS = 200
# A result goes back into the model's context: a print loop must not fill it (tiny's context is 256 tokens).
MAX_RESULT_CHARS = 1000
_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _evaluate(node: ast.AST) -> int:
    # Hand-written on purpose: eval() runs arbitrary code, and no well-kept library does exact big-integer
    # arithmetic on a whitelisted grammar (numexpr and sympy go through floats or parse far more than this).
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (right < 0 or right * max(left.bit_length(), 1) > 3.4 * _MAX_DIGITS):
            raise ValueError("exponent too large or negative")
        if isinstance(node.op, ast.FloorDiv | ast.Mod) and right == 0:
            raise ValueError("division by zero")
        return _BINARY[type(node.op)](left, right)
    raise ValueError(f"unsupported syntax {type(node).__name__}: integers with + - * // % ** and parentheses")


def calculator(expression: str) -> str:
    """Evaluate an integer arithmetic expression exactly, whatever the size of the numbers.

    Args:
        expression: Integers combined with + - * // % ** and parentheses, e.g. "347 * 812".
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    value = _evaluate(ast.parse(expression.strip(), mode="eval"))
    if len(str(abs(value))) > _MAX_DIGITS:
        raise ValueError(f"result longer than {_MAX_DIGITS} digits")
    return str(value)


def python(code: str) -> str:
    """Run a Python program in a sandbox and return what it prints.

    Args:
        code: A Python program that prints its result, e.g. "print(sum(range(10)))".
    """
    from pipeline_assets.posttrain.sandbox import run_python

    result = run_python(code)
    if not result.passed:
        reason = result.reason or (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise RuntimeError(reason)
    return result.stdout.strip()


@lru_cache(maxsize=1)
def _lookup_index() -> dict[str, str]:
    from pipeline_assets.posttrain.data import DOCSTRING_MODULES, docstring_items
    from pipeline_assets.tasks.heldout import HELDOUT_MODULES

    # A reference tool may read the held-out modules' docs: the eval then measures looking up, not recall.
    return {f"{module}.{name}": sentence for module, name, sentence in
            docstring_items(DOCSTRING_MODULES) + docstring_items(HELDOUT_MODULES, allow_heldout=True)}


def lookup(name: str) -> str:
    """Look up what a Python standard-library function or class does.

    Args:
        name: Its dotted name, e.g. "os.path.join".
    """
    key = name.strip().strip("`")
    if key not in _lookup_index():
        raise KeyError(f"no documentation for {key!r}")
    return _lookup_index()[key]


TOOLS: dict[str, Callable[..., str]] = {CALCULATOR: calculator, PYTHON: python, LOOKUP: lookup}


@lru_cache(maxsize=1)
def _schemas() -> dict[str, dict[str, Any]]:
    from transformers.utils import get_json_schema

    return {name: get_json_schema(fn) for name, fn in TOOLS.items()}


def tool_schemas(names: tuple[str, ...] = tuple(TOOLS)) -> list[dict[str, Any]]:
    """OpenAI-style schemas (`{"type": "function", "function": {...}}`) of `names`, for apply_chat_template."""
    unknown = sorted(set(names) - set(TOOLS))
    if unknown:
        raise ValueError(f"unknown tools {unknown}; available: {', '.join(TOOLS)}")
    return [_schemas()[name] for name in names]


def call_arguments(call: dict[str, Any]) -> tuple[str, Any]:
    """(name, arguments) of a `tool_calls` entry (`{"function": {...}}` or bare); JSON-string arguments decoded."""
    fn = call.get("function", call) if isinstance(call, dict) else {}
    args = fn.get("arguments") if isinstance(fn, dict) else None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return str(fn.get("name", "")) if isinstance(fn, dict) else "", args


def call_tool(call: dict[str, Any], allowed: tuple[str, ...] = tuple(TOOLS)) -> str:
    """Run one `tool_calls` entry; the result, or `error: ...` (unknown tool, bad arguments, a failure)."""
    name, args = call_arguments(call)
    if name not in allowed:
        return f"error: unknown tool {name!r}; available: {', '.join(allowed)}"
    if not isinstance(args, dict):
        return f"error: {name} takes a JSON object of arguments, got {args!r}"
    params = _schemas()[name]["function"]["parameters"]
    missing = sorted(set(params.get("required", ())) - set(args))
    extra = sorted(set(args) - set(params["properties"]))
    if missing or extra:
        return f"error: {name} " + "; ".join(
            [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra))
    if any(not isinstance(v, str) for v in args.values()):
        return f"error: {name} takes string arguments"
    try:
        result = TOOLS[name](**args)
    except Exception as exc:  # the model sees the failure as the tool's result, as an API would return it
        result = f"error: {type(exc).__name__}: {exc}"
    return result if len(result) <= MAX_RESULT_CHARS else result[:MAX_RESULT_CHARS] + " ...(truncated)"
