"""The tasks every stage shares, and nothing else: the layer below the stages (it imports none of them).

    arithmetic.py   the arithmetic problem space, its fixed test/dev/train hash split, prompts and the grader
    refusal.py      the refusal detector the safety evals, SFT data and AI feedback agree on
    docstrings.py   docstring QA: a docstring's first sentence and the question asked about it
    heldout.py      the held-out sets on disk: names, manifest, reading them, the keys training must skip

evals/benchmarks.py writes the held-out files from these; corpus, post-training and evals read them here.
"""
