"""Tool use: the tools (tools.py), datasets/tool_use (data.py), models/tool_use's trainer (train.py) and the
loop that runs calls for the eval and the chat CLI (loop.py)."""
