"""Chat with any llmdag checkpoint in the terminal; the reply streams token by token.

    python -m pipeline_assets.chat sft                                  # a stage name ...
    python -m pipeline_assets.chat models/dpo --temperature 0.7 --max-new-tokens 256
    python -m pipeline_assets.chat /path/to/checkpoint                  # ... or any HF checkpoint dir
    python -m pipeline_assets.chat sft --prompt "What is 2 + 2?"        # one shot, prints the reply, exits

A stage name ("sft", "models/dpo", "release") is the published checkpoint of that stage under the artifact root
(LLMDAG_HOME; pipeline_assets/checkpoint_paths.py has the rules); an existing path is used as given.

Interactive commands: /reset clears the conversation (keeps --system), /exit (or Ctrl-D) quits. Turns go
through the tokenizer's chat template (ChatML: <|im_start|>role ... <|im_end|>); generation stops on eos.
When the history outgrows the model's context, the oldest turns are dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from threading import Thread
from typing import Any, TextIO

from pipeline_assets.checkpoint_paths import resolve_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _fit_history(tok: Any, messages: list[dict[str, Any]], budget: int,
                 tools: list[dict] | None = None) -> list[dict[str, Any]]:
    """Drop the oldest non-system turns until the prompt fits `budget` tokens (the last user turn stays)."""
    messages = list(messages)
    while True:
        ids = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=True,
                                      return_dict=True)
        first = 1 if messages and messages[0]["role"] == "system" else 0
        if len(ids["input_ids"]) <= budget or len(messages) - first <= 1:
            return messages
        del messages[first]


def stream_reply(model: Any, tok: Any, messages: list[dict[str, Any]], max_new_tokens: int,
                 temperature: float, out: TextIO, tools: list[dict] | None = None) -> str:
    """Generate the assistant turn for `messages` (`tools` offered through the chat template), writing text to
    `out` as it is produced; returns it."""
    import torch
    from transformers import TextIteratorStreamer

    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if max_pos:
        messages = _fit_history(tok, messages, max(1, max_pos - max_new_tokens), tools)
    enc = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")
    device = next(model.parameters()).device
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    sample = temperature > 0
    kwargs = dict(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                  max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature if sample else None,
                  top_p=None, top_k=None, streamer=streamer, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id)
    errors: list[BaseException] = []

    def run() -> None:
        # generate() runs in a thread so this one can print while tokens arrive; an error must end the stream,
        # or the loop below would wait forever, and is re-raised here.
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except Exception as err:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(err)
            streamer.end()

    thread = Thread(target=run, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        out.write(piece)
        out.flush()
        pieces.append(piece)
    thread.join()
    if errors:
        raise errors[0]
    out.write("\n")
    out.flush()
    return "".join(pieces).strip()


def respond(model: Any, tok: Any, history: list[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    """Stream the reply to `history` and append it; with --tools, run each call it makes (sandboxed), show
    it and its result, and let the model go on from the result (at most --max-tool-rounds calls)."""
    tools = _tool_schemas(getattr(args, "tools", None))  # a Namespace built by hand may predate --tools
    rounds = getattr(args, "max_tool_rounds", 3)
    for round_ in range(rounds + 1):
        reply = stream_reply(model, tok, history, args.max_new_tokens, args.temperature, out, tools)
        calls = []
        if tools and getattr(tok, "response_template", None) is not None:
            from pipeline_assets.tool_use.loop import parse_reply

            prompt = tok.apply_chat_template(history, tools=tools, tokenize=False, add_generation_prompt=True)
            message, _ = parse_reply(tok, reply, prompt, tools)
            calls = message.get("tool_calls") or []
        if not calls or round_ == rounds:
            history.append({"role": "assistant", "content": reply})
            return
        from pipeline_assets.tool_use.tools import call_arguments, call_tool

        history.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": calls})
        for call in calls:
            name, arguments = call_arguments(call)
            result = call_tool(call, tuple(t["function"]["name"] for t in tools))
            out.write(f"[tool] {name}({json.dumps(arguments)}) -> {result}\nassistant> ")
            history.append({"role": "tool", "name": name, "content": result})


def _tool_schemas(names: str | None) -> list[dict] | None:
    if not names:
        return None
    from pipeline_assets.tool_use.tools import TOOLS, tool_schemas

    return tool_schemas(tuple(TOOLS) if names == "all" else tuple(n.strip() for n in names.split(",")))


def chat_loop(model: Any, tok: Any, args: argparse.Namespace, stdin: TextIO = sys.stdin,
              out: TextIO = sys.stdout) -> None:
    base = [{"role": "system", "content": args.system}] if args.system else []
    history = list(base)
    out.write("type a message; /reset clears the conversation, /exit quits\n")
    while True:
        out.write("you> ")
        out.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D / end of piped input
            out.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = list(base)
            out.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        out.write("assistant> ")
        respond(model, tok, history, args, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Chat with an llmdag checkpoint (streams tokens).")
    parser.add_argument("model", help="checkpoint dir, or a stage name such as sft / models/sft")
    # Generation
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens per reply")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples")
    parser.add_argument("--system", default=None, help="optional system message for every conversation")
    parser.add_argument("--tools", default=None, metavar="NAMES",
                        help="offer tools and run the calls the model makes: 'all' or a comma list of "
                             "calculator, python (bubblewrap sandbox), lookup")
    parser.add_argument("--max-tool-rounds", type=int, default=3, help="tool calls per reply before it must answer")
    # Runtime
    parser.add_argument("--prompt", default=None, help="one-shot: answer this message, print, exit")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens < 1:
        raise SystemExit("--max-new-tokens must be >= 1")
    if args.temperature < 0:
        raise SystemExit("--temperature must be >= 0 (0 = greedy)")
    if args.max_tool_rounds < 0:
        raise SystemExit("--max-tool-rounds must be >= 0")
    try:
        _tool_schemas(args.tools)
    except ValueError as err:
        raise SystemExit(f"--tools: {err}") from err
    try:
        model_dir = resolve_model_dir(args.model)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import torch

    from pipeline_assets.model_io import device_for, load_checkpoint

    torch.manual_seed(args.seed)
    model, tok = load_checkpoint(model_dir, device_for(args.device))
    if not tok.chat_template:
        print(f"error: the tokenizer in {model_dir} has no chat template; use a checkpoint saved with the "
              "llmdag tokenizer (tokenizer/tokenizer)", file=sys.stderr)
        return 2
    print(f"chat | {model_dir} | {sum(p.numel() for p in model.parameters()):,} params", file=sys.stderr)
    if args.prompt is not None:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        respond(model, tok, [*messages, {"role": "user", "content": args.prompt}], args, sys.stdout)
        return 0
    chat_loop(model, tok, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
