"""render_report(): pages built from the committed sample results, checked as files and in Chromium."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from edgert.errors import UsageError
from edgert.report import render_report
from edgert.report.calibration import non_dominated, pareto_front

RESULTS = Path(__file__).parent / "fixtures" / "results"
ALL = sorted(RESULTS.glob("*.json"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_report(ALL, tmp_path_factory.mktemp("report") / "report.html")


def as_measured(data: dict) -> dict:
    """A sample whose power is a fixture's reading, reshaped as a run with a real sensor records it."""
    out = json.loads(json.dumps(data))
    out["fixture"] = False
    out["power"] = {"source": out["power"]["source"], "measured": True, "status": "measured"}
    out["warnings"] = [w for w in out["warnings"] if "is a fixture" not in w]
    if "points" in out:
        for point in out["points"]:
            reading = point.pop("power_reading", None)
            if reading:
                point.update(reading, power_status="measured")
    else:
        out.update(out.pop("power_reading"), power_source=out["power"]["source"])
    return out


@pytest.fixture(scope="module")
def measured_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the sample files with the sweep's and calibration's power as measured."""
    folder = tmp_path_factory.mktemp("measured")
    for path in ALL:
        data = json.loads(path.read_text())
        (folder / path.name).write_text(json.dumps(as_measured(data) if "power" in data else data))
    return render_report(sorted(folder.glob("*.json")), folder / "report.html")


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_one_file_with_every_plot_embedded(page: Path) -> None:
    text = page.read_text()
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # nothing written beside it
    images = re.findall(r'<img src="data:(image/(?:png|svg\+xml));base64,([A-Za-z0-9+/=]+)"', text)
    assert text.count("<img ") == len(images) == 8  # 3 models' summaries, bench, 2 sweep domains, calibration
    for mime, data in images:
        raw = base64.b64decode(data)
        if mime == "image/png":
            assert png_size(raw)[0] > 300
        else:
            assert raw.lstrip().startswith(b"<?xml") and b"<svg" in raw
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing to fetch from a network
    assert "<script" not in text


def test_the_ranked_summary_comes_first(page: Path) -> None:
    text = page.read_text()
    assert text.index('id="summary"') < text.index('id="warnings"') < text.index("<h2>Bench details</h2>")
    summary = section(text, 'id="summary"', 'id="warnings"')
    models = re.findall(r"<h3>([^<]+) <span", summary)
    assert models == ["mobilenet_v2", "detector", "resnet"]
    mnv2 = section(summary, "<h3>mobilenet_v2", "</table>")
    rows = re.findall(r'<tr class="(\w*)"><td class="num">(\d+)</td><td>([^<]+)</td><td>([\d.]+) (ms|µs|s)</td>',
                      mnv2)
    p50 = [float(r[3]) * {"s": 1e3, "ms": 1.0, "µs": 1e-3}[r[4]] for r in rows]
    assert p50 == sorted(p50) and len(rows) == 2 + 5 + 4 * 3  # 2 bench files, 5 sweep points, 4 levels x 3 clocks
    assert rows[0][0] == "best" and "★ fastest" in mnv2.split("</tr>")[1]
    cal = json.loads((RESULTS / "calibration.json").read_text())
    assert rows[0][2] == "ort (All-in-One) · vm · 75% pruned · 1800 MHz (fixture clock)"
    assert p50[0] == float(f"{cal['latency_ms'][3][2]:.4g}") and rows[0][4] == "ms"
    assert "baseline" in mnv2 and "EMULATED" in mnv2
    assert "least energy" not in mnv2 and "fixture, not measured" in mnv2  # the samples' power is a fixture's
    answer = re.sub(r"<[^>]+>", "", section(summary, '<p class="answer">', "</p>"))
    ort = json.loads((RESULTS / "mobilenet_v2.ort.json").read_text())["latency_ms"]["p50"]
    assert answer.startswith("Fastest: ort (All-in-One) · vm · 75% pruned · 1800 MHz (fixture clock), p50 1.934 ms, "
                             f"{ort / cal['latency_ms'][3][2]:.2f}× faster than the baseline ort 1 thread · vm")
    # names come from the contents: no file name outside the provenance cards
    for path in ALL:
        assert path.name not in text[:text.index("<h2>Provenance</h2>")]


def test_one_plot_per_model_with_a_log_axis_past_10x(tmp_path: Path) -> None:
    from edgert.report.summary import Config, plot, rank

    def config(p50: float) -> Config:
        return Config("m", "ort", "vm", "—", "—", p50, p50 * 1.2, None, None, "", None, False, "bench")

    wide, narrow = rank([config(1.0), config(30.0)]), rank([config(1.0), config(3.0)])
    assert "log axis" in plot("m", wide, 0).caption and "log axis" not in plot("m", narrow, 0).caption
    assert b"log scale" in plot("m", wide, 0).image and wide.unit == "ms"
    assert rank([config(0.0004)]).unit == "ns" and rank([config(2500.0)]).unit == "s"


def test_warnings_are_grouped_by_kind_and_severity_and_collapsed(page: Path) -> None:
    text = page.read_text()
    box = section(text, 'id="warnings"', "</section>")
    groups = re.findall(r'<details class="sev(\d)"><summary><span class="sev">([^<]+)</span> ([^<]+) '
                        r'<span class="count">\((\d+)\)</span>', box)
    assert [int(g[0]) for g in groups] == sorted(int(g[0]) for g in groups)  # most severe first
    assert ("0", "numbers not measured", "emulated: not hardware numbers", "1") in groups
    assert any(kind == "noisy or drifting runs" for _, _, kind, _ in groups)
    assert "<details open" not in box  # collapsed below the summary
    every = [w for path in ALL for w in json.loads(path.read_text()).get("warnings", [])]
    assert sum(int(g[3]) for g in groups) == len(every) + 1  # + the sweep's emulated points
    for warning in every:
        assert warning.replace("'", "&#x27;") in box


def test_provenance_lists_every_file(page: Path) -> None:
    text = page.read_text()
    prov = text[text.index("<h2>Provenance</h2>"):]
    for path in ALL:
        data = json.loads(path.read_text())
        assert f"<tr><th>file</th><td>{path.name}</td></tr>" in prov
        assert data["model"]["sha256"] in prov
        if "backend" in data:
            assert f"{data['backend']['name']} {data['backend']['version']}" in prov
        if "start_time" in data:
            assert data["start_time"] in prov and data["end_time"] in prov


def test_bench_table_holds_the_file_numbers(page: Path) -> None:
    text = page.read_text()
    for name in ("mobilenet_v2.ort.json", "resnet.ort.json"):
        lat = json.loads((RESULTS / name).read_text())["latency_ms"]
        assert f'<td class="num">{lat["p50"]:.4g}</td>' in text
        assert f'<td class="num">{lat["p99"]:.4g}</td>' in text


def test_clean_results_say_no_warnings(tmp_path: Path) -> None:
    data = json.loads((RESULTS / "resnet.ort.json").read_text())
    data["warnings"] = []
    (tmp_path / "clean.json").write_text(json.dumps(data))
    text = render_report([tmp_path / "clean.json"], tmp_path / "out.html").read_text()
    assert '<section class="warnings ok" id="warnings"><h2>No warnings</h2>' in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.json", "out.html"]


@pytest.mark.parametrize("flags", [("emulated", "device"), ("device",), ("emulated",)])
def test_emulated_bench_result_is_marked_in_the_summary_and_leads_the_warnings(
        tmp_path: Path, flags: tuple[str, ...]) -> None:
    """Marked whichever flag says so: a file may carry only its device's (before, such a file
    was shown as measured)."""
    data = json.loads((RESULTS / "resnet.ort.json").read_text())
    data["emulated"] = "emulated" in flags
    data["device"]["emulated"] = "device" in flags
    data["warnings"] = ["the max is 9% above the median"]  # no emulation warning in the file
    (tmp_path / "emu.json").write_text(json.dumps(data))
    text = render_report([RESULTS / "mobilenet_v2.ort.json", tmp_path / "emu.json"],
                         tmp_path / "out.html").read_text()
    box = section(text, 'id="warnings"', "</section>")
    assert '<details class="sev0"><summary><span class="sev">numbers not measured</span> emulated' in box
    assert "resnet · ort · vm (emulated)</span>: measured on an emulated device" in box
    assert '<tr class="emulated">' in text or "EMULATED" in section(text, 'id="summary"', 'id="warnings"')
    assert "<tr><th>emulated</th><td>YES</td></tr>" in text


def test_bad_inputs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read result file"):
        render_report([tmp_path / "missing.json"], tmp_path / "r.html")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not JSON"):
        render_report([tmp_path / "bad.json"], tmp_path / "r.html")
    (tmp_path / "future.json").write_text(json.dumps({"schema": "edgert.result/9"}))
    with pytest.raises(UsageError, match="the report reads edgert.result/1, edgert.result/2, edgert.sweep/1"):
        render_report([tmp_path / "future.json"], tmp_path / "r.html")
    cal = json.loads((RESULTS / "calibration.json").read_text())
    cal["latency_ms"] = cal["latency_ms"][:-1]
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    with pytest.raises(UsageError, match="levels x frequencies"):
        render_report([tmp_path / "cal.json"], tmp_path / "r.html")
    with pytest.raises(UsageError, match="at least one"):
        render_report([], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_pareto_front() -> None:
    points = [(10.0, 0.90), (5.0, 0.85), (6.0, 0.80), (12.0, 0.89), (5.0, 0.70), (20.0, 0.95)]
    assert pareto_front(points) == [(5.0, 0.85), (10.0, 0.90), (20.0, 0.95)]


def test_non_dominated_levels_over_latency_energy_and_accuracy() -> None:
    costs = [(10.0, 5.0), (9.0, 6.0), (11.0, 6.0), (10.0, 5.0), (3.0, 1.0)]
    accuracy = [0.9, 0.9, 0.9, 0.8, 0.7]
    # (11, 6) is beaten by (10, 5) at the same accuracy; (10, 5) at 0.8 by the same costs at 0.9;
    # (9, 6) is faster but costlier in energy than (10, 5): both stay.
    assert non_dominated(costs, accuracy) == [True, True, False, False, True]


def test_measured_energy_is_ranked(measured_page: Path) -> None:
    summary = section(measured_page.read_text(), 'id="summary"', 'id="warnings"')
    mnv2 = section(summary, "<h3>mobilenet_v2", "</table>")
    assert "★ least energy" in mnv2 and "fixture" not in mnv2


def test_calibration_shows_energy_and_the_three_way_front(measured_page: Path) -> None:
    """The sample's 25% level is no faster than the full model at 600 MHz (and costs as much
    energy): off the front there, on it at the other clocks."""
    text = measured_page.read_text()
    section = text[text.index("All-in-One calibration"):text.index("<h2>Provenance</h2>")]
    cal = json.loads((RESULTS / "calibration.json").read_text())
    assert "and on both energy and accuracy (right)" in section and "power from VDD_IN (watts)" in section
    assert "<th>mJ at 600 MHz</th>" in section and "<th>ms at 1800 MHz</th>" in section
    assert f'<td class="num">{cal["power_reading"]["energy_mj"][1][0]:.4g}</td>' in section
    rows = re.findall(r"<tr><td>(\d+%)</td>.*?<td>([^<]*)</td></tr>", section)
    assert rows == [("0%", "600 MHz, 1200 MHz, 1800 MHz"), ("25%", "1200 MHz, 1800 MHz"),
                    ("50%", "600 MHz, 1200 MHz, 1800 MHz"), ("75%", "600 MHz, 1200 MHz, 1800 MHz")]


def test_calibration_energy_table_must_match_the_levels(tmp_path: Path) -> None:
    cal = as_measured(json.loads((RESULTS / "calibration.json").read_text()))
    cal["energy_mj"][0] = cal["energy_mj"][0][:-1]
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    with pytest.raises(UsageError, match="'energy_mj' must be a levels x frequencies table"):
        render_report([tmp_path / "cal.json"], tmp_path / "r.html")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, NUL-framed)."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", "--window-size=1200,2000")

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: move the ends clear of 3/4 first, they may be 3/4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target, inheritable=True)

        self.proc = subprocess.Popen([CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=wire, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30,
             **params: Any) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.time() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (EOFError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def load_in_chromium(page: Path, profile: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open ``page``; return each <img>'s decoded size and every event Chromium sent."""
    browser = Chromium(profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_event("Page.loadEventFired")
        images = browser.call(
            "Runtime.evaluate", session, returnByValue=True, awaitPromise=True,
            expression="Promise.all(Array.from(document.images).map(i => i.decode().then("
                       "() => ({w: i.naturalWidth, h: i.naturalHeight}), "
                       "e => ({w: 0, h: 0, error: String(e)}))))")["result"]["value"]
        return images, list(browser.events)
    finally:
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_loads_in_chromium(page: Path, tmp_path: Path) -> None:
    page = Path(shutil.copy(page, tmp_path / "moved.html"))  # the one HTML file is all there is
    images, events = load_in_chromium(page, tmp_path / "profile")
    assert len(images) == 8 and all(i["w"] > 300 and i["h"] > 50 for i in images), images
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "warning", "assert"))
              or (e.get("method") == "Log.entryAdded"
                  and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == []
    urls = [e["params"]["request"]["url"] for e in events
            if e.get("method") == "Network.requestWillBeSent"]
    assert urls and all(u.split(":", 1)[0] in ("file", "data") for u in urls), urls


def test_all_in_one_file_with_calibration_renders(tmp_path):
    """`edgert calibrate` stores its table inside the .aio file; the report reads it from there."""
    from edgert.errors import UsageError
    from edgert.report import render_report
    from edgert.settings import BenchSettings
    from edgert.variants.calibrate import FrequencySetting, calibrate
    from edgert.variants.prune import prune
    from edgert.zoo import resolve

    aio = tmp_path / "r.aio"
    prune(resolve("zoo:resnet"), [0.0, 0.5], aio)
    with pytest.raises(UsageError, match="without a calibration table"):
        render_report([aio], tmp_path / "none.html")
    calibrate(aio, [FrequencySetting(1.0), FrequencySetting(2.0)],
              BenchSettings(warmup_runs=1, runs=5))
    page = render_report([aio], tmp_path / "report.html").read_text()
    assert "All-in-One calibration" in page and page.count("<img") == 2  # the summary and the detail
    assert "no accuracy recorded" in page and "No power was measured, so no energy." in page
    assert "<th>mJ at" not in page and "Pareto-optimal" not in page


@pytest.mark.parametrize("edit", [
    lambda d: d.update(model="x"), lambda d: d.update(throughput_ips="fast"), lambda d: d.update(compile_ms=[1]),
    lambda d: d.update(scenario="x"), lambda d: d.update(warnings="oops"), lambda d: d.update(emulated="false"),
    lambda d: d.update(paths={"p": "x"}), lambda d: d.update(samples_ms=[1e308] * 5),
])
def test_a_hand_edited_result_is_one_error_naming_it(tmp_path: Path, edit: Callable[[dict], None]) -> None:
    """Each was a traceback (AttributeError, TypeError, ValueError from matplotlib) or, for
    warnings as text, its letters listed as warnings."""
    data = json.loads((RESULTS / "resnet.ort.json").read_text())
    data = {**data, "schema": "edgert.result/2", "scenario": {"name": "single-stream", "concurrency": 1},
            "throughput_ips": 100.0, "compile_ms": None}  # as bench writes today (/1 files are upgraded)
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="bad.json"):
        render_report([RESULTS / "mobilenet_v2.ort.json", tmp_path / "bad.json"], tmp_path / "out.html")
    assert not (tmp_path / "out.html").exists()


def test_a_hand_edited_sweep_point_is_one_error_naming_it(tmp_path: Path) -> None:
    data = json.loads((RESULTS / "sweep.json").read_text())
    del data["points"][0]["setting"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="bad.json has a field the report cannot read"):
        render_report([tmp_path / "bad.json"], tmp_path / "out.html")


def test_energy_the_file_says_was_not_measured_is_not_ranked(tmp_path: Path) -> None:
    """A sweep point whose power_status is 'fixture' but which carries an energy was shown as
    'least energy'; a calibration whose power block is missing, as measured energy."""
    data = json.loads((RESULTS / "sweep.json").read_text())
    data["fixture"] = True
    for p in data["points"]:
        p["power_status"] = "fixture"
        p.setdefault("energy_per_inference_mj", 5.0)
    (tmp_path / "fx.json").write_text(json.dumps(data))
    cal = json.loads((RESULTS / "calibration.json").read_text())
    cal.pop("power", None)
    cal["fixture"] = True
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    text = render_report([tmp_path / "fx.json", tmp_path / "cal.json"], tmp_path / "out.html").read_text()
    assert "least energy" not in text.lower() and "fixture, not measured" in text
    assert "(fixture clock)" in section(text, 'id="summary"', 'id="warnings"')
    assert "600000 kHz (fixture)" in text  # the sweep table's read-back clock: no unit, no label


@pytest.mark.parametrize("field,value", [("energy_per_inference_mj", -5.0), ("power_w", float("nan")),
                                         ("runs", -1), ("duration_s", "3 s")])
def test_a_sweep_point_with_an_impossible_amount_is_refused(tmp_path: Path, field: str, value) -> None:
    """A hand-edited -5 mJ point was shown, and ranked least energy, as given."""
    data = as_measured(json.loads((RESULTS / "sweep.json").read_text()))
    data["points"][1][field] = value
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match=f"point 2's {field} is .*not a finite number >= 0"):
        render_report([tmp_path / "s.json"], tmp_path / "r.html")


@pytest.mark.parametrize("name,value,bound", [("latency_ms", float("nan"), "above 0"), ("latency_ms", -1.0, "above 0"),
                                              ("latency_ms", 0, "above 0"),  # ZeroDivisionError
                                              ("energy_mj", float("inf"), ">= 0"), ("energy_mj", True, ">= 0")])
def test_a_calibration_grid_of_impossible_numbers_is_refused(tmp_path: Path, name: str, value, bound: str) -> None:
    cal = as_measured(json.loads((RESULTS / "calibration.json").read_text()))
    cal[name][1][1] = value
    (tmp_path / "c.json").write_text(json.dumps(cal))
    with pytest.raises(UsageError, match=f"'{name}' must be a levels x frequencies table of finite numbers {bound}"):
        render_report([tmp_path / "c.json"], tmp_path / "r.html")


def test_a_bench_file_with_a_0_ms_median_is_refused(tmp_path: Path) -> None:
    """The report divided every configuration by the fastest one's 0 ms: ZeroDivisionError."""
    data = json.loads((RESULTS / "resnet.ort.json").read_text())
    data["samples_ms"] = [0.0] * 30
    data["latency_ms"] = {**data["latency_ms"], "p50": 0.0, "ci95": [0.0, 0.0]}
    (tmp_path / "z.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="has no finite median .p50. above 0 ms"):
        render_report([tmp_path / "z.json"], tmp_path / "r.html")


@pytest.mark.parametrize("change, says", [
    ({"frequency_unit": "bananas"}, "frequency_unit 'bananas' is not one of"),
    ({"frequencies": [600000, 600000, 1800000]}, "'frequencies' must be distinct numbers above 0"),
    ({"frequencies": [-1, 1200000, 1800000]}, "'frequencies' must be distinct numbers above 0"),
    ({"levels": [{"ratio": 5}, {"ratio": 0.25}, {"ratio": 0.5}, {"ratio": 0.75}]}, "distinct pruning 'ratio' in"),
    ({"levels": [{"ratio": 0}, {"ratio": 0}, {"ratio": 0.5}, {"ratio": 0.75}]}, "distinct pruning 'ratio' in"),
])
def test_a_calibration_laid_out_impossibly_is_refused(tmp_path: Path, change: dict, says: str) -> None:
    """Each was shown as given: two '600 MHz' columns, a -0.001 MHz clock, a '500% pruned' level."""
    cal = {**json.loads((RESULTS / "calibration.json").read_text()), **change}
    (tmp_path / "c.json").write_text(json.dumps(cal))
    with pytest.raises(UsageError, match=says):
        render_report([tmp_path / "c.json"], tmp_path / "r.html")


@pytest.mark.parametrize("unit, freqs, shown", [("GHz", [0.6, 1.2, 1.8], "1800 MHz"), ("khz", [600000, 1200000, 1800000],
                                                                                       "1800 MHz"),
                                                ("emulated fraction", [0.25, 0.5, 1.0], "emulated 1x CPU")])
def test_calibration_units_are_read_in_any_spelling_and_shown_in_mhz(tmp_path: Path, unit: str, freqs: list,
                                                                      shown: str) -> None:
    """'GHz' was shown as '1.8 MHz', 'khz' (the spelling an .aio stores) as '1.8e+06 MHz', and
    'emulated fraction' as '1 MHz' without an EMULATED mark."""
    cal = as_measured(json.loads((RESULTS / "calibration.json").read_text()))
    cal.update(frequency_unit=unit, frequencies=freqs)
    (tmp_path / "c.json").write_text(json.dumps(cal))
    summary = section(render_report([tmp_path / "c.json"], tmp_path / "r.html").read_text(),
                      'id="summary"', 'id="warnings"')
    assert shown in summary and ("EMULATED" in summary) == (unit == "emulated fraction")


def test_fixture_power_and_clocks_are_labelled_in_every_section(tmp_path: Path) -> None:
    """A point edited to 'measured' in a file whose power block says fixture was ranked least
    energy; the detail sections' clock axes and columns had no fixture mark; an energy table
    without a power block was plotted in detail while the summary said 'not measured'."""
    sweep_data = json.loads((RESULTS / "sweep.json").read_text())
    point = sweep_data["points"][0]
    point.update(point.pop("power_reading"), power_status="measured")
    (tmp_path / "s.json").write_text(json.dumps(sweep_data))
    cal = json.loads((RESULTS / "calibration.json").read_text())
    cal.pop("power")
    cal.update(energy_mj=cal.pop("power_reading")["energy_mj"], fixture=True)
    (tmp_path / "c.json").write_text(json.dumps(cal))
    text = render_report([tmp_path / "s.json", tmp_path / "c.json"], tmp_path / "r.html").read_text()
    assert "least energy" not in text.lower()
    detail = section(text, "All-in-One calibration —", "</section>")
    assert "<th>ms at 600 MHz (fixture)</th>" in detail and "<th>mJ at" not in detail
    assert "no power block saying it was measured" in detail
    sweep_detail = section(text, "Clock sweep —", "</section>")
    assert "fixture, not measured" in sweep_detail and "1.432" not in sweep_detail  # the edited point's watts
