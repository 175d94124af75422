"""Screenshots of `mlflow ui` on fresh `micro` stores, each checked for content (`nox -s ui`).

Two stores in a temporary folder (nothing lands in the repository: tracking DB, artifacts, data
file and checkpoints all go there):

- `landing/`: what the README's main job leaves, `mlflow run . -e final --env-manager local
  --experiment-name lv-forecast` (here with `-P preset=micro`). Shots: the UI's root page
  (`landing-root.png`: MLflow 3.17.2's Home, which lists the experiment), the address the README
  gives (`landing-runs.png`: the experiment's training runs in the "Model training" view, flat,
  best first: `lvtrack.tracking.ui_url`) and, for comparison, the bare experiment link a fresh
  browser follows from Home (`landing-experiment.png`: MLflow 3.17.2 opens it on the GenAI
  overview whatever the experiment's tags say; docs/ui.md), and the same link once the sidebar's
  switch "Model training" was clicked, as the README says (`landing-after-switch.png`: the runs;
  the click goes through Chromium's DevTools protocol).
- `pipeline/`: the `micro` pipeline (`mlflow run . -e pipeline -P preset=micro`). Shots: the run
  list as it opens (`runs-nested.png`: one row, `pipeline`, the steps nested in it) and flat
  (`runs.png`, the README's address), the final run's page with its metrics (`final-run.png`),
  the report run's `report.html` as the UI's artifact view shows it (`report-in-ui.png`) and on
  its own (`report.png`, from the copy fetched through the server's artifact route,
  `report.html`).

Each page is loaded by headless Chromium (`--screenshot` and `--dump-dom` in one load, after
`--virtual-time-budget` ms of page time) and must show content, not a blank page or a skeleton:
the run list names the final run, the run page names a metric the final run logged, the report
holds a `<table>` and the untrained row. A failed check exits 1 after every page was tried.

- `--store URI`: instead of the micro stores, a store that already holds a report (say the
  tiny pipeline's, `sqlite:////path/mlflow.db`): its newest `report.html` in the UI's artifact
  view (`report-in-ui.png`) and on its own (`report.png`), with the same checks.

Usage:
  python benchmarks/ui_screenshots.py [OUT_DIR] [--work DIR] [--only landing|pipeline]
  python benchmarks/ui_screenshots.py [OUT_DIR] --store URI [--experiment NAME]

OUT_DIR defaults to /tmp/lv-ui-screenshots. `--work DIR` keeps the stores there (default: a new
temporary folder, removed at the end) and reuses them on the next call: a finished `final` run is
not rerun and the pipeline reuses its finished steps. Needs Debian's `chromium`
(`apt-get install -y chromium`) and the project installed (`pip install -r requirements.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lvtrack.tracking import DEFAULT_EXPERIMENT, EXPERIMENT_KIND_TAG, TRAINING_KIND, ui_url

REPO = Path(__file__).resolve().parents[1]
PRESET = "micro"
FINAL_METRIC = "test_mse_h5"  # the final run scores the test split; no other run does
HEALTH_DEADLINE_S = 180
PAGE_TIME_MS = 20000
#: report.html (~300 KB with its plots) renders inside the UI's iframe after the page: more time.
REPORT_PAGE_TIME_MS = 60000
REPORT_PANE = (440, 240, 1000, 1000)
FAILURES: list[str] = []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", nargs="?", default="/tmp/lv-ui-screenshots", help="where the PNGs go")
    p.add_argument("--work", help="keep (and reuse) the stores in this folder")
    p.add_argument("--only", choices=("landing", "pipeline"), help="one store only")
    p.add_argument("--store", help="an existing tracking store: shoot its newest report only")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="with --store (lv-forecast)")
    args = p.parse_args(argv)
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("chromium not found: apt-get update && apt-get install -y chromium (Debian)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _work_dir(args.work) as work:
        if args.store:
            stored_report(
                Chromium(browser, work / "store-profile"), args.store, args.experiment, out
            )
        elif args.only != "pipeline":
            landing(Chromium(browser, work / "landing-profile"), work / "landing", out)
        if not args.store and args.only != "landing":
            pipeline(Chromium(browser, work / "pipeline-profile"), work / "pipeline", out)
    print(f"\nscreenshots in {out}:")
    for png in sorted(out.glob("*.png")):
        print(f"  {png}")
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed:", *FAILURES, sep="\n  ", file=sys.stderr)
        return 1
    print("every page showed its content")
    return 0


def landing(browser: Chromium, root: Path, out: Path) -> None:
    """The README's main job (`final`) into a new store, and what `mlflow ui` shows of it."""
    uri, exp_id = new_store(root)
    client = MlflowClient(uri)
    if not finished_runs(client, exp_id, "final"):
        mlflow_run(root, uri, "final")
    check(
        client.get_experiment(exp_id).tags.get(EXPERIMENT_KIND_TAG) == TRAINING_KIND,
        f"the experiment is tagged {EXPERIMENT_KIND_TAG}={TRAINING_KIND}",
    )
    with ui_server(root, uri) as server:
        page = browser.load(f"{server}/", out / "landing-root.png")
        check(DEFAULT_EXPERIMENT in page.text, f"the root page lists `{DEFAULT_EXPERIMENT}`")
        page = browser.load(ui_url(exp_id, server), out / "landing-runs.png")
        check(page.title.startswith("Runs"), f"the README's address opens on Runs ({page.title!r})")
        check(" final " in page.text, "the README's address lists the run `final`")
        page = browser.load(f"{server}/#/experiments/{exp_id}", out / "landing-experiment.png")
        print(f"  (the bare experiment link opens on {page.title!r}; see docs/ui.md)")
        asyncio.run(after_the_switch(browser, server, exp_id, out / "landing-after-switch.png"))


async def after_the_switch(browser: Chromium, server: str, exp_id: str, png: Path) -> None:
    """What the README tells a researcher to do once: click "Model training" in the sidebar.
    Then the experiment's own link (the one Home lists) opens on its runs, in this browser for
    good (the switch is kept in the browser's localStorage)."""
    link = f"{server}/#/experiments/{exp_id}"
    async with DevTools(browser.path, browser.profile.with_name("switch-profile")) as tab:
        await tab.open(link, until="document.title.includes('Experiment')")
        clicked = await tab.js(
            "(() => { const b = [...document.querySelectorAll('[role=button]')]"
            ".find(e => e.textContent.trim() === 'Model training'); b && b.click(); return !!b })()"
        )
        check(bool(clicked), "the sidebar has the switch `Model training`")
        kept = "localStorage.getItem('mlflow.workflowType_v1') === '\"machine_learning\"'"
        check(await tab.wait(kept), "the browser keeps the switch (localStorage)")
        await tab.open(f"{server}/", until="document.title.startsWith('Home')")
        ready = "document.title.startsWith('Runs') && document.body.innerText.includes('final')"
        shown = await tab.open(link, until=ready)
        await tab.screenshot(png)
        check(shown, f"after the switch the experiment's link opens on its runs ({png.name})")


def pipeline(browser: Chromium, root: Path, out: Path) -> None:
    """The micro pipeline into a new store: run list, final run, report."""
    uri, exp_id = new_store(root)
    mlflow_run(root, uri, "pipeline")
    client = MlflowClient(uri)
    # The training run of `final` (the `mlflow run` run around it logs no metrics).
    final = next(
        (r for r in finished_runs(client, exp_id, "final") if FINAL_METRIC in r.data.metrics), None
    )
    check(final is not None, f"a FINISHED run tagged phase=final logged {FINAL_METRIC}")
    report = newest_report(client, exp_id)
    check(
        report is not None,
        f"a FINISHED run tagged phase=report with the artifact report.html (experiment {exp_id})",
    )
    with ui_server(root, uri) as server:
        page = browser.load(
            f"{server}/#/experiments/{exp_id}/runs?workflowType=machine_learning",
            out / "runs-nested.png",
        )
        check(
            " pipeline " in page.text,
            "the default run list shows the run `pipeline` (the others are nested in it)",
        )
        page = browser.load(ui_url(exp_id, server), out / "runs.png", height=1100)
        for name in ("final", "initial", "search", "report"):
            check(f" {name} " in page.text, f"the flat run list shows the run `{name}`")
        if final:
            page = browser.load(
                f"{server}/#/experiments/{exp_id}/runs/{final.info.run_id}",
                out / "final-run.png",
                height=1400,
            )
            check(page.title.startswith("Run"), f"the final run's page opens ({page.title!r})")
            for metric in (FINAL_METRIC, "val_mse_h5"):
                check(metric in page.text, f"the final run's page shows the metric {metric}")
        if report:
            report_shots(browser, server, exp_id, report.info.run_id, out)


def stored_report(browser: Chromium, uri: str, experiment: str, out: Path) -> None:
    """The newest report of `experiment` in the store `uri`, through `mlflow ui` on it."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"{uri}: no experiment {experiment!r} (--experiment names another)")
    report = newest_report(client, found.experiment_id)
    if report is None:
        sys.exit(f"{uri}: experiment {experiment!r} has no FINISHED report run with report.html")
    print(f"report run {report.info.run_id} of {experiment!r} in {uri}", flush=True)
    with ui_server(out, uri) as server:
        report_shots(browser, server, found.experiment_id, report.info.run_id, out)


def newest_report(client: MlflowClient, exp_id: str) -> Run | None:
    """The `report` run that logged report.html (the `budget` run and the report's fills are
    tagged phase=report too), newest first."""
    runs = finished_runs(client, exp_id, "report")
    return next((r for r in runs if _has_artifact(client, r, "report.html")), None)


def _has_artifact(client: MlflowClient, run: Run, path: str) -> bool:
    return any(a.path == path for a in client.list_artifacts(run.info.run_id))


def report_shots(browser: Chromium, server: str, exp_id: str, run_id: str, out: Path) -> None:
    """report.html through the server's artifact route (content checked), in the UI's artifact
    view, and on its own."""
    url = f"{server}/get-artifact?path=report.html&run_uuid={run_id}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.URLError as err:
        check(False, f"report.html of run {run_id} through {url}: {err}")
        return
    (out / "report.html").write_text(body)
    check("<table" in body, "report.html holds a <table>")
    check("untrained" in body, "report.html holds the row `untrained`")
    png = out / "report-in-ui.png"
    page = browser.load(
        f"{server}/#/experiments/{exp_id}/runs/{run_id}/artifacts/report.html",
        png,
        height=1100,
        page_ms=REPORT_PAGE_TIME_MS,
    )
    check("mlflow-html-iframe" in page.dom, "the UI shows report.html as a page (its HTML view)")
    # The iframe's document is a blob the DOM dump does not include: look at its pixels (the
    # artifact pane of a 1400-pixel-wide window, below the file's name and path).
    check(
        png.is_file() and not_blank(png, box=REPORT_PANE),
        f"{png.name}: the report's pane shows the report (not blank; a loaded machine may "
        f"need more than {REPORT_PAGE_TIME_MS} ms of page time)",
    )
    browser.load((out / "report.html").as_uri(), out / "report.png", height=1400)


# -- stores and runs -------------------------------------------------------------------------------


def new_store(root: Path) -> tuple[str, str]:
    """A SQLite store in `root` with the experiment `lv-forecast`, its artifacts in `root`; returns
    the tracking URI and the experiment id (an existing store is reused)."""
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # The store's `Default` experiment takes ./mlruns of the process that creates the DB: here.
    with contextlib.chdir(root):
        client = MlflowClient(uri)
        if found := client.get_experiment_by_name(DEFAULT_EXPERIMENT):
            return uri, found.experiment_id
        artifacts = (root / "artifacts").as_uri()
        return uri, client.create_experiment(DEFAULT_EXPERIMENT, artifact_location=artifacts)


def mlflow_run(root: Path, uri: str, entry: str) -> None:
    """`mlflow run REPO -e ENTRY --env-manager local --experiment-name lv-forecast -P
    preset=micro`, with the data file and checkpoints in `root`; exits on failure."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    cmd += ["--experiment-name", DEFAULT_EXPERIMENT, "-P", f"preset={PRESET}"]
    cmd += ["-P", f"data_file={root / 'data' / 'lv.h5'}"]
    env = {
        **os.environ,
        # The entry points run `python -m projects.NAME`: this interpreter's.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": uri,
        "LV_CHECKPOINT_DIR": str(root / "checkpoints"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = root / f"{entry}.log"
    print(f"running {entry} ({PRESET}) into {root} (log: {log})", flush=True)
    start = time.monotonic()
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text().splitlines()[-30:]
        sys.exit(f"`{' '.join(cmd)}` failed ({done.returncode}); end of {log}:\n" + "\n".join(tail))
    print(f"  {entry} finished in {time.monotonic() - start:.0f} s", flush=True)


def finished_runs(client: MlflowClient, exp_id: str, phase: str) -> list[Run]:
    """The experiment's FINISHED runs tagged `phase`, newest first."""
    return client.search_runs(
        [exp_id],
        filter_string=f"tags.phase = '{phase}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )


@contextlib.contextmanager
def ui_server(root: Path, uri: str) -> Iterator[str]:
    """`mlflow ui` on the store, on 127.0.0.1 at a free port, once /health answers; yields its
    address and stops it (its whole process group) afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = root / "ui.log"
    with log.open("w") as f:
        # Without its job runner (seven huey processes, for GenAI judges; no page here uses it).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        server = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    address = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(address, server, log)
        print(f"mlflow ui at {address} (store {uri})", flush=True)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        # Its job runner's huey consumers can outlive it: end the rest of its group too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_healthy(address: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"mlflow ui exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)  # polling interval, not a wait for readiness
    sys.exit(f"mlflow ui at {address} did not answer /health in {HEALTH_DEADLINE_S} s; see {log}")


# -- the browser ------------------------------------------------------------------------------------


class Page:
    def __init__(self, dom: str) -> None:
        self.dom = dom
        found = re.search(r"<title>(.*?)</title>", dom, flags=re.S)
        self.title = html.unescape(found.group(1)).strip() if found else ""
        body = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
        self.text = " " + re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))) + " "


class Chromium:
    """Headless Chromium with its own fresh profile (a first-time visitor of the UI)."""

    def __init__(self, path: str, profile: Path) -> None:
        self.path, self.profile = path, profile

    def load(
        self, url: str, png: Path, width: int = 1400, height: int = 900, page_ms: int = PAGE_TIME_MS
    ) -> Page:
        """Load `url` (`page_ms` of page time), save a screenshot to `png` and return the
        rendered DOM."""
        cmd = [self.path, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        cmd += [f"--user-data-dir={self.profile}", "--no-first-run", "--dump-dom"]
        cmd += [f"--screenshot={png}", f"--window-size={width},{height}"]
        cmd += [f"--virtual-time-budget={page_ms}", url]
        png.unlink(missing_ok=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode or not png.is_file():
            check(False, f"chromium on {url} ({done.returncode}): {done.stderr[-2000:]}")
            return Page("")
        page = Page(done.stdout)
        print(f"  {png.name}: {page.title!r}, {len(page.text)} characters of text", flush=True)
        check(not_blank(png), f"{png.name} is not blank")
        return page


class DevTools:
    """One headless Chromium tab driven through the DevTools protocol (aiohttp, an MLflow
    requirement, speaks its websocket): for what a page load alone cannot do, a click."""

    def __init__(self, path: str, profile: Path, deadline_s: float = 60) -> None:
        self.path, self.profile, self.deadline_s = path, profile, deadline_s
        self._next = 0

    async def __aenter__(self) -> DevTools:
        import aiohttp

        shutil.rmtree(self.profile, ignore_errors=True)
        cmd = [self.path, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        cmd += [f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--no-first-run"]
        cmd += ["--window-size=1400,900", "about:blank"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes its port there
        if not await self._poll(lambda: port_file.is_file() and port_file.read_text().strip()):
            raise RuntimeError("chromium did not open its DevTools port")
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as resp:
            tabs = json.load(resp)
        url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)

    async def call(self, method: str, **params: object) -> dict:
        self._next += 1
        await self.ws.send_json({"id": self._next, "method": method, "params": params})
        while (message := await self.ws.receive_json()).get("id") != self._next:
            pass  # an event
        return message.get("result", {})

    async def js(self, expression: str) -> object:
        done = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return done.get("result", {}).get("value")

    async def wait(self, condition: str) -> bool:
        """Poll a JavaScript condition until it holds or the deadline passes."""
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            if await self.js(f"!!({condition})"):
                return True
            await asyncio.sleep(0.25)  # polling interval
        return False

    async def open(self, url: str, until: str) -> bool:
        await self.call("Page.navigate", url=url)
        return await self.wait(until)

    async def screenshot(self, png: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        png.write_bytes(base64.b64decode(shot["data"]))
        check(not_blank(png), f"{png.name} is not blank")

    @staticmethod
    async def _poll(ready: Callable[[], object], deadline_s: float = 30) -> bool:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if ready():
                return True
            await asyncio.sleep(0.1)
        return False


def not_blank(png: Path, box: tuple[int, int, int, int] | None = None) -> bool:
    """More than a near-uniform image (or part of it, `box` = left, top, right, bottom pixels):
    at least 1% of the pixels away from the most common colour (a blank page is below; the DOM
    checks catch a loading skeleton)."""
    from PIL import Image  # matplotlib's dependency

    with Image.open(png) as img:
        part = img.crop(box) if box else img
        colours = part.convert("RGB").getcolors(maxcolors=1 << 24) or []
    total = sum(n for n, _ in colours)
    return total > 0 and 1 - max(n for n, _ in colours) / total > 0.01


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)


@contextlib.contextmanager
def _work_dir(given: str | None) -> Iterator[Path]:
    if given:
        path = Path(given).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="lv-ui-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
