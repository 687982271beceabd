"""The MLflow UI in a real browser over a store written by a tiny real ``train.py -m`` sweep.

The session's two-job sweep (a parent run and two children, conftest's ``tiny_sweep``) is in a SQLite
store in a temporary folder, the venv's ``mlflow ui`` serves it on a free loopback port, and headless chromium
(Playwright driving the system's chromium: Debian's ``chromium`` package, or ``VIDLAB_CHROMIUM=/path``) opens it.
Facts (run ids, statuses) come from the UI server's REST API; the page is used only for what a browser alone can
tell: the run page and the compare view render, a PNG artifact decodes in an ``<img>``, and the preview
``previews/preview.mp4`` decodes in the artifact viewer's ``<video>`` (MPEG-4 part 2, OpenCV's
``mp4v``, does not play in browsers; H.264 does).

``VIDLAB_SCREENSHOTS=docs/images`` (relative to the project) saves ``mlflow_run.png`` and
``mlflow_compare.png`` there; without it nothing is written outside the temporary folder.
Skipped, with the reason, where playwright or chromium is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_until_answers

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None


def _find_chromium() -> str | None:
    explicit = os.environ.get("VIDLAB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _find_chromium()
EXPERIMENT = "restoration"
VIDEO = "previews/preview.mp4"
IMAGES = ("per_frame.png", "preview.png")  # at the top level, where the compare view finds them

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium at VIDLAB_CHROMIUM={os.environ['VIDLAB_CHROMIUM']}"
                       if os.environ.get("VIDLAB_CHROMIUM")
                       else "no chromium on PATH (apt-get install chromium, or set VIDLAB_CHROMIUM)"),
]

# Cosmetic, for the screenshots only: the "Model training" sidebar instead of the GenAI one, and the
# assistant panel closed. Unknown keys are ignored by other MLflow versions.
UI_PREFERENCES = """try {
  localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
  localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
  localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
} catch (e) {}"""

# Waits for the first <video> to load its metadata or fail; reports what the browser made of it.
PROBE_VIDEO = """async (timeoutMs) => {
  const deadline = Date.now() + timeoutMs;
  let v = null;
  while (Date.now() < deadline) {
    v = document.querySelector('video');
    if (v && (v.readyState >= 1 || v.error)) break;
    await new Promise(r => setTimeout(r, 100));
  }
  if (!v) return null;
  return {src: (v.currentSrc || v.src || '').slice(0, 80), readyState: v.readyState,
          duration: Number.isFinite(v.duration) ? v.duration : -1, width: v.videoWidth, height: v.videoHeight,
          error: v.error ? `MediaError ${v.error.code}: ${v.error.message}` : null};
}"""

# Adds a <video> playing ``src`` (same origin) to the page: the fallback where the viewer shows none.
ADD_VIDEO = """(src) => { document.querySelectorAll('video').forEach(v => v.remove());
  const v = document.createElement('video'); v.muted = true; v.preload = 'auto'; v.src = src;
  document.body.appendChild(v); }"""

# The decoded size of the artifact viewer's image (alt is the artifact path, src a blob:), or 0.
IMAGE_WIDTH = """(path) => { const imgs = [...document.querySelectorAll('img')].filter(
  i => i.alt === path || i.src.startsWith('blob:') || i.src.includes('get-artifact'));
  return Math.max(0, ...imgs.filter(i => i.complete).map(i => i.naturalWidth)); }"""


def _stop_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process group we started (mlflow ui, its uvicorn and workers), SIGKILL what outlives the grace."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        while time.time() < deadline:
            process.poll()
            os.killpg(process.pid, 0)  # ProcessLookupError once every member has exited
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


class UI:
    """A running ``mlflow ui`` and its REST API."""

    def __init__(self, url: str):
        self.url = url

    def api(self, endpoint: str, body: dict | None = None, **query: str) -> dict:
        url = f"{self.url}/ajax-api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        """Every artifact file of a run, recursively."""
        listed = self.api("artifacts/list", run_uuid=run_id, **({"path": path} if path else {})).get("files", [])
        found = []
        for item in listed:
            found += self.artifacts(run_id, item["path"]) if item.get("is_dir") else [item["path"]]
        return found

    def artifact_url(self, run_id: str, path: str) -> str:
        return f"{self.url}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


def _start_ui(root: Path, cwd: Path, port: int, log) -> subprocess.Popen:
    """``mlflow ui`` over ``root``'s store, started in ``cwd``."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{root}/mlruns.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )


@pytest.fixture(scope="module")
def ui(tiny_sweep: Path, tmp_path_factory: pytest.TempPathFactory):
    """``mlflow ui`` serving the session's tiny real two-job sweep (conftest) on a free loopback port."""
    folder = tmp_path_factory.mktemp("mlflow_ui")
    log = open(folder / "mlflow_ui.log", "wb")  # closed below, once the server is gone
    server = None
    try:
        port = free_port()
        server = _start_ui(tiny_sweep, folder, port, log)
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/health", server, 120, folder / "mlflow_ui.log")
        yield UI(url)
    finally:
        if server is not None:
            _stop_group(server)
        log.close()


@pytest.fixture(scope="module")
def runs(ui: UI) -> dict:
    """The sweep's runs, from the REST API: experiment id, parent, and children sorted by name."""
    experiment = ui.api("experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]["experiment_id"]
    found = ui.api("runs/search", {"experiment_ids": [experiment], "max_results": 100}).get("runs", [])
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found}
    parents = [r for r in found if tags[r["info"]["run_id"]].get("vidlab.sweep_parent") == "true"]
    assert len(parents) == 1, [r["info"]["run_name"] for r in found]
    parent = parents[0]["info"]
    children = sorted((r["info"] for r in found
                       if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parent["run_id"]),
                      key=lambda info: info["run_name"])
    assert len(children) == 2, [r["info"]["run_name"] for r in found]
    return {"experiment": experiment, "parent": parent, "children": children}


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A fresh browser page that knows when the network has gone quiet."""

    KINDS = ("document", "script", "stylesheet", "fetch", "xhr", "image")  # not media, websockets, workers

    def __init__(self, browser, ui: UI):
        self.ui = ui
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.add_init_script(UI_PREFERENCES)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.pending: set = set()
        self.page.on("request", self._started)
        self.page.on("requestfinished", self._ended)
        self.page.on("requestfailed", self._ended)

    def _started(self, request) -> None:
        if request.resource_type in self.KINDS and "worker" not in request.url:
            self.pending.add(request)

    def _ended(self, request) -> None:
        self.pending.discard(request)

    def open(self, route: str) -> None:
        """Load ``#/route`` as a new document (the UI reads its route and artifact path on load)."""
        self.page.goto("about:blank")
        self.page.goto(f"{self.ui.url}/#/{route}")

    def settle(self, quiet_s: float = 0.8, timeout_s: float = 60) -> None:
        """Network idle: no document, script, style, API or image request for ``quiet_s``."""
        deadline, last_busy = time.time() + timeout_s, time.time()
        while time.time() < deadline:
            self.page.wait_for_timeout(100)
            if self.pending:
                last_busy = time.time()
            elif time.time() - last_busy >= quiet_s:
                return
        raise AssertionError(f"the page's network never went quiet: {[r.url for r in self.pending][:5]}")

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("VIDLAB_SCREENSHOTS")
        if folder:
            target = ROOT / folder if not Path(folder).is_absolute() else Path(folder)
            target.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(target / name))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser, ui: UI):
    opened = Page(browser, ui)
    yield opened
    opened.close()


def test_sweep_parent_and_children_finished(ui: UI, runs: dict):
    parent = ui.api("runs/get", run_id=runs["parent"]["run_id"])["run"]["info"]
    assert parent["status"] == "FINISHED", parent
    for child in runs["children"]:
        assert ui.api("runs/get", run_id=child["run_id"])["run"]["info"]["status"] == "FINISHED", child


def test_run_page_and_compare_view_render(page: Page, runs: dict):
    child, other = runs["children"]
    page.open(f"experiments/{runs['experiment']}/runs/{child['run_id']}")
    page.page.get_by_text(child["run_name"]).first.wait_for()
    page.page.get_by_text(child["run_id"]).first.wait_for()  # the overview's details, not only the title
    page.settle()
    page.screenshot("mlflow_run.png")

    ids = json.dumps([child["run_id"], other["run_id"]])
    experiments = json.dumps([runs["experiment"]])
    page.open(f"compare-runs?runs={urllib.parse.quote(ids)}&experiments={urllib.parse.quote(experiments)}")
    for run in (child, other):
        page.page.get_by_text(run["run_name"]).first.wait_for()
    page.settle()
    page.screenshot("mlflow_compare.png")
    # further down, the figures both runs logged at the top level, side by side
    figure = page.page.get_by_text("per_frame.png").last
    figure.scroll_into_view_if_needed()
    figure.click()
    page.page.wait_for_function("() => [...document.images].filter(i => i.naturalWidth > 0 && i.width > 200)"
                                ".length >= 2", timeout=20_000)
    page.settle()
    page.screenshot("mlflow_compare_figures.png")


def test_png_artifact_renders(page: Page, runs: dict):
    child = runs["children"][0]
    pngs = [path for path in page.ui.artifacts(child["run_id"]) if path.endswith(".png")]
    assert set(IMAGES) <= set(pngs), f"run {child['run_name']} lacks top-level {IMAGES}: {pngs}"
    image = IMAGES[0]
    page.open(f"experiments/{runs['experiment']}/runs/{child['run_id']}/artifacts/{image}")
    try:
        page.page.wait_for_function(IMAGE_WIDTH, arg=image, timeout=20_000)
    except Exception:  # the viewer showed no image: load the artifact into an <img> on the same origin
        page.page.evaluate("(src) => { const i = document.createElement('img'); i.src = src; "
                           "document.body.appendChild(i); }", page.ui.artifact_url(child["run_id"], image))
        page.page.wait_for_function(IMAGE_WIDTH, arg=image, timeout=20_000)
    assert page.page.evaluate(IMAGE_WIDTH, image) > 0, image


def _codec(url: str, folder: Path) -> str:
    """The video codec of the artifact as served (PyAV), for the failure message."""
    import av

    path = folder / "served.mp4"
    with urllib.request.urlopen(url, timeout=30) as response:
        path.write_bytes(response.read())
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def test_preview_video_plays_in_the_artifact_viewer(page: Page, runs: dict, tmp_path: Path):
    child = runs["children"][0]
    videos = [path for path in page.ui.artifacts(child["run_id"]) if path.endswith(".mp4")]
    assert VIDEO in videos, f"run {child['run_name']} has no {VIDEO}; its mp4 artifacts: {videos}"
    page.open(f"experiments/{runs['experiment']}/runs/{child['run_id']}/artifacts/{VIDEO}")
    page.page.get_by_text(VIDEO).first.wait_for()  # the viewer's header names the open artifact
    state = page.page.evaluate(PROBE_VIDEO, 30_000)
    where = "the artifact viewer's <video>"
    if state is None:  # this UI version shows no <video> for mp4: play the artifact in one of ours
        page.page.evaluate(ADD_VIDEO, page.ui.artifact_url(child["run_id"], VIDEO))
        state = page.page.evaluate(PROBE_VIDEO, 30_000)
        where = "a <video> playing get-artifact"
    assert state is not None, "no <video> element appeared"
    if state["error"] or state["readyState"] < 1 or state["duration"] <= 0:
        codec = _codec(page.ui.artifact_url(child["run_id"], VIDEO), tmp_path)
        pytest.fail(f"{VIDEO} is not decodable in chromium ({where}): its stream is {codec!r} "
                    f"(browsers play h264), {state['error'] or 'no error'}, readyState {state['readyState']}, "
                    f"duration {state['duration']}", pytrace=False)
    assert state["width"] > 0 and state["height"] > 0, state
    page.screenshot("mlflow_preview.png")
