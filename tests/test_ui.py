"""The Dagster UI in a real browser (Debian's Chromium driven by Playwright), as a person uses it.

One landing source of real prose is curated, tokenized and pretrained on in-process against a fresh
DAGSTER_HOME; then ``dagster dev`` serves that instance and the browser checks what a person would:
the asset graph with our groups and assets, the source partition, the loss-curve image of
``models/base``, and a materialization launched with the Materialize button that succeeds.

Screenshots of every step (and the ``dagster dev`` log) go to ``$LLMDAG_TEST_ARTIFACTS/ui/``
(default ``<repo>/test-artifacts/ui/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `ui_tools` fixture with the install command, not as a collection error
    sync_playwright = expect = None

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LLMDAG_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
SOURCE = "reference_manual"
TIMEOUT_MS = 60_000  # the first GraphQL load of the code location imports torch; 2 busy cores are slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update"]
# `loss_finite_and_below_unigram` is a blocking check, and the tiny profile (vocab 4096, d_model 128) is
# still at the unigram loss after 60 steps on ~90 KB of text. A 512-token vocab and a 2-layer d_model 64
# model beat it in 100 steps (~6 s): val 4.68 vs unigram 5.22 nats/token.
RUN_CONFIG = {"ops": {
    "tokenizer__tokenizer": {"config": {"vocab_size": 512}},
    "models__base": {"config": {"max_steps": 100, "warmup_steps": 5, "eval_every": 50, "checkpoint_every": 50,
                                "log_every": 10, "learning_rate": 1e-2, "d_model": 64, "n_layers": 2, "n_heads": 2,
                                "n_kv_heads": 2, "intermediate_size": 192}},
}}
RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status assetSelection { path } } } } }"
LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _prose_files(folder: Path, files: int = 40, paragraphs: int = 12) -> None:
    """The prose paragraphs of the Python reference manual's topics (no code, no tables): one file per topic."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True)
    written = 0
    for name in sorted(topics):
        prose = [" ".join(p.split()) for p in topics[name].split("\n\n")
                 if p[:1].isalpha() and len(p.split()) >= 30]
        if len(prose) >= 3:  # a topic that is mostly grammar or examples is not prose
            (folder / f"{name}.txt").write_text("\n\n".join(prose[:paragraphs]) + "\n", encoding="utf-8")
            written += 1
        if written == files:
            break


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response)
    assert not reply.get("errors"), reply["errors"]
    return reply["data"]


def _runs(base: str) -> dict[str, dict]:
    return {r["runId"]: r for r in _graphql(base, RUNS_QUERY)["runsOrError"]["results"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_dagster_dev(env: dict, port: int, log) -> subprocess.Popen:
    # A harness that starts pytest in the background of a script hands it SIGINT *ignored*, and exec keeps
    # an ignored signal ignored: dagster dev would then ignore our Ctrl-C and hang (../shared/notes/ops.md §5).
    # A handler (unlike SIG_IGN) is reset to the default on exec, so install one just for the fork.
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Own session = own process group: teardown signals the webserver, daemon, code server and run
        # workers together, and nothing else (not pytest, not the terminal's foreground group).
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if inherited is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_dagster_dev(proc: subprocess.Popen) -> str:
    """SIGINT to the whole group (what Ctrl-C does), SIGKILL for whatever is left after 40 s; says which."""
    pgid, t0 = proc.pid, time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    while _group_alive(pgid) and time.monotonic() - t0 < 40:
        time.sleep(0.2)
    how = f"stopped by SIGINT in {time.monotonic() - t0:.1f} s"
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        how = "SIGINT left processes behind after 40 s: SIGKILLed them"
    proc.wait(timeout=30)
    return how


def _wait_until_served(base: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    """The webserver answers and the code location has loaded (or the test fails with why not)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=5).close()
            entries = _graphql(base, LOCATIONS_QUERY)["workspaceOrError"].get("locationEntries") or []
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            entries = []
        for entry in entries:
            location = entry["locationOrLoadError"] or {}
            if location.get("__typename") == "PythonError":
                pytest.fail(f"code location {entry['name']} failed to load: {location['message']}")
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return
        time.sleep(0.5)
    pytest.fail(f"dagster dev did not serve {base} within {timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def ui_tools() -> str:
    """Playwright and a Chromium binary: missing ones fail with the command that installs them.

    Not a skip: a skip would pass CI green with the UI untested (.ci/run installs both), and on a
    developer machine the message says exactly what to install.
    """
    if sync_playwright is None:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (no `playwright install` needed: "
                    "the test drives the system Chromium)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is not installed: sudo apt-get update && sudo apt-get install -y chromium "
                    "(Debian/Ubuntu; the test needs a `chromium` binary on PATH)")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # screenshots of an earlier run would pass for this one's
    ARTIFACTS.mkdir(parents=True)
    return chromium


@pytest.fixture(scope="module")
def ui_home(ui_tools, tmp_path_factory):
    """A fresh DAGSTER_HOME whose history holds the runs that give models/base a checkpoint and loss curve."""
    from conftest import materialize_in_process

    from pipeline_assets.definitions import build_definitions

    tmp = tmp_path_factory.mktemp("ui")
    # LLMDAG_BUILTIN_SOURCES=0: the UI's code location loads the module's `defs`, whose sources sensor would
    # otherwise register the built-in sources too.
    env = {"DAGSTER_HOME": str(tmp / "dagster_home"), "LLMDAG_HOME": str(tmp / "artifacts"),
           "LLMDAG_LANDING": str(tmp / "landing"), "LLMDAG_BUILTIN_SOURCES": "0"}
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    _prose_files(Path(env["LLMDAG_LANDING"]) / SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        defs = build_definitions(root=env["LLMDAG_HOME"], landing=env["LLMDAG_LANDING"], builtin_sources=False)
        instance = dg.DagsterInstance.get()  # not `with`: see the note in test_corpus.fixture_run
        # In-process (a daemon-driven backfill is what test_corpus.py exercises; here it would only add minutes).
        materialize_in_process(defs, instance, dg.AssetSelection.from_string('+key:"models/base"'), RUN_CONFIG)
        records = instance.fetch_materializations(dg.AssetKey(["models", "base"]), limit=1).records
        instance.dispose()
        assert records and "data:image/png;base64," in records[0].asset_materialization.metadata[
            "loss_curve"].value
    return env


@pytest.fixture(scope="module")
def dagster_ui(ui_home) -> str:
    """``dagster dev`` on that DAGSTER_HOME; stopped in teardown, with SIGKILL if SIGINT was not enough."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / "dagster-dev.log"
    env = {**os.environ, **ui_home, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                os.environ.get("PYTHONPATH")]))}
    with log_path.open("w") as log:
        proc = _start_dagster_dev(env, port, log)
        try:
            _wait_until_served(base, proc, log_path)
            yield base
        finally:
            how = _stop_dagster_dev(proc)
            log.write(f"\n[test_ui] dagster dev {how}\n")


@pytest.fixture(scope="module")
def browser(ui_tools):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=ui_tools, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, dagster_ui, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # The "Join the Dagster community" dialog opens over any page of a new instance, at any moment:
    # Playwright dismisses it whenever it shows up before an action or an assertion.
    page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click())
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        _shot(page, f"FAILED-{request.node.name}")
    context.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", animations="disabled")  # no half-faded dialogs


def test_asset_graph_shows_our_assets_and_source_partition(page, dagster_ui):
    page.goto(f"{dagster_ui}/asset-groups")
    canvas = page.locator("foreignObject")  # graph nodes are HTML inside the lineage SVG
    for group in ("corpus", "evals", "tokenizer", "models"):
        expect(canvas.get_by_text(group, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    # With this many assets the graph opens with each group collapsed; a double click opens one.
    canvas.get_by_text("corpus", exact=True).dblclick()
    for asset in ("raw_documents", "duplicate_clusters", "training_mixture"):
        name = canvas.get_by_text(asset, exact=True)
        expect(name).to_be_visible(timeout=TIMEOUT_MS)
        # Drawn green once the UI has read the in-process runs from the instance (gray while unknown).
        expect(name.locator("..")).to_have_attribute("style", re.compile("green"), timeout=TIMEOUT_MS)
    _shot(page, "01-asset-graph")

    page.goto(f"{dagster_ui}/assets/corpus/raw_documents")
    page.get_by_text("Partitions", exact=True).click()
    partition = page.get_by_text(SOURCE, exact=True).filter(visible=True)  # a hidden copy measures truncation
    expect(partition).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Materialized (1)")).to_be_visible(timeout=TIMEOUT_MS)
    partition.click()
    expect(page.get_by_text("docs_in", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    _shot(page, "02-raw-documents-partitions")


def test_base_model_page_renders_the_loss_curve(page, dagster_ui):
    page.goto(f"{dagster_ui}/assets/models/base")
    row = page.get_by_role("row").filter(has_text="loss_curve")
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    # A long markdown value sits behind a link that opens it rendered in a dialog; a short one is inline.
    opener = row.get_by_text("Show Markdown")
    if opener.count():
        opener.click()
        scope = page.get_by_role("dialog")
    else:
        scope = row
    img = scope.locator('img[src^="data:image/png"]')
    expect(img).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    width, height = img.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 100 and height > 100, f"loss curve decoded to {width}x{height} px"
    _shot(page, "03-base-model-loss-curve")


def test_materialize_button_launches_a_run_that_succeeds(page, dagster_ui):
    before = set(_runs(dagster_ui))
    page.goto(f"{dagster_ui}/assets/evals/benchmarks")
    # The button's accessible name includes its icon: match by text, not by exact role name.
    page.locator("button", has_text="Materialize").first.click()
    toast = page.get_by_text(re.compile(r"Launched run \w+"))
    expect(toast).to_be_visible(timeout=TIMEOUT_MS)
    launched = re.search(r"Launched run (\w+)", toast.inner_text()).group(1)
    _shot(page, "04-benchmarks-launched")

    deadline = time.monotonic() + 180  # queued, dequeued by the daemon, run worker imports torch, ~1 s of work
    while time.monotonic() < deadline:
        new = [r for run_id, r in _runs(dagster_ui).items() if run_id not in before]
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    else:
        pytest.fail(f"no finished run within 180 s; new runs: {new}")
    assert len(new) == 1, f"one click, one run: {new}"
    run = new[0]
    assert run["runId"].startswith(launched), f"the toast named {launched}, GraphQL has {run['runId']}"
    assert run["assetSelection"] == [{"path": ["evals", "benchmarks"]}]
    assert run["status"] == "SUCCESS", f"{dagster_ui}/runs/{run['runId']} ended {run['status']}"

    page.goto(f"{dagster_ui}/runs/{run['runId']}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible(timeout=TIMEOUT_MS)
    _shot(page, "05-benchmarks-run-succeeded")
