"""The supervision page in a real headless Chromium (Debian's chromium + chromium-driver).

What it proves: the page served by a running modeler shows the hosts and agents where
they are (and a move as it happens), plots activity live, draws the current model (checked
on a screenshot, not only in the DOM), runs/stops/starts modeling from its buttons and
shows versions and the difference between two of them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from modeler import interface
from modeler.web.auth import page_url
from tests.cluster import Cluster
from tests.e2e.scenario import fill, recording

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
Image = pytest.importorskip("PIL.Image", reason="pillow not installed (pip install -e '.[test]')")
if not (CHROMIUM.exists() and Path(DRIVER).exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def modeler(tmp_path_factory):
    home = tmp_path_factory.mktemp("page")
    sc = recording(n_services=6, seed=11)
    with Cluster(home, {"m1": {"domain": "A"}, "n1": {"domain": "A"}, "n2": {"domain": "A"}},
                 call_timeout=30.0) as c:
        c.create("m1", "recorder", "rec", store=fill(home / "r.db", sc.series))
        c.create("n1", "neural", "nn1")
        c.create("m1", "collector", "col", interval=0.5, per_process="none")  # live activity
        c.create("m1", "modeler", "mod", sources=["rec", {"agent": "col", "objects": ["m1/cpu"]}],
                 pool=["nn1"], window=900.0, every=3600.0)
        mod = c.ref("mod", timeout=30)
        mod.configure("run")
        c.wait(lambda: (s := mod.query("status"))["latest"] == 1 and s["http"], timeout=60)
        yield c, mod


def wait_for(driver, predicate, timeout=30):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d))


def texts(driver, css: str) -> list[str]:
    """Read in one script call: the page redraws its tables every 1.5 s, so element
    handles kept between calls go stale."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.textContent)", css)


def row(driver, agent: str) -> list[str]:
    """The node table's row of ``agent``: [name, kind, host, status]."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#nodes tbody tr'))"
        ".map((r) => Array.from(r.cells).map((c) => c.textContent))")
    return next((r for r in rows if r[0] == agent), [])


def test_supervision_page_end_to_end(modeler, browser, tmp_path):
    c, mod = modeler
    st = mod.query("status")
    g = interface.from_json(mod.query("model")["model"])
    browser.get(page_url(st["http"], c.settings.secret, "mod"))  # the address `masa model page` prints

    # the current model as a graph with its confidences
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#graph circle.node")) == g.number_of_nodes())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph line.edge")) == g.number_of_edges() > 0
    labels = set(texts(browser, "#graph text"))
    assert set(g.nodes) <= labels
    assert {f"{d:.2f}" for _, _, d in g.edges(data="confidence")} <= labels
    assert "v1" in browser.find_element(By.ID, "version").text
    # node-list strings go into the tables as text: markup in a host's domain stays text
    assert browser.execute_script("return esc(arguments[0])", '<img src=x onerror="y">') == \
        "&lt;img src=x onerror=&quot;y&quot;&gt;"

    # screenshot check: the graph area really has drawn pixels (nodes orange, edges blue)
    png = browser.find_element(By.ID, "graph").screenshot_as_png
    img = Image.open(io.BytesIO(png)).convert("RGB")
    px = np.asarray(img).reshape(-1, 3).astype(int)
    r, gr, b = px[:, 0], px[:, 1], px[:, 2]
    drawn = int(((r < 250) | (gr < 250) | (b < 250)).sum())
    orange = int(((r > 200) & (gr > 100) & (gr < 150) & (b < 90)).sum())  # nodes #e07b39
    blue = int(((b > r + 20) & (b > 60) & (r < 150)).sum())  # edges #1f3a5f
    assert drawn > 0.01 * len(px), f"graph area looks blank: {drawn} of {len(px)} pixels drawn"
    assert orange > 50 * g.number_of_nodes() and blue > 100, (orange, blue)

    # hosts and agents and where they are; activity plots per object
    wait_for(browser, lambda d: row(d, "mod")[:3] == ["mod", "modeler", "m1"])
    assert row(browser, "nn1") == ["nn1", "neural", "n1", "up"]
    assert row(browser, "n2") == ["n2", "host", "domain A", "up"]
    # one plot per object the modeler holds; an object whose first samples reach the
    # modeler while the page draws gets its plot on the page's next refresh
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#plots polyline"))
             == len(mod.query("activity")) > 0)

    # the plots are live: the collector's host CPU plot grows while the page is open
    def cpu_plot(d) -> str:
        return d.execute_script(
            "const box = Array.from(document.querySelectorAll('#plots > div'))"
            ".find((b) => b.firstChild.textContent.startsWith('m1/cpu '));"
            "return box ? box.querySelector('polyline').getAttribute('points') : '';")
    def newest() -> float:
        return mod.query("activity", objects=["m1/cpu"])["m1/cpu"]["t"][-1]

    first = wait_for(browser, cpu_plot)
    t_first = newest()
    c.wait(lambda: newest() > t_first + 1.0, timeout=20)
    wait_for(browser, lambda d: cpu_plot(d) != first)

    # a move shows up
    c.move("nn1", "n2")
    wait_for(browser, lambda d: row(d, "nn1")[:3] == ["nn1", "neural", "n2"])

    # control: stop / start scheduling, re-run now -> a second version appears
    browser.find_element(By.ID, "stop").click()
    c.wait(lambda: mod.query("status")["running"] is False, timeout=30)
    wait_for(browser, lambda d: texts(d, "#state")[0].startswith("stopped"))
    browser.find_element(By.ID, "start").click()
    c.wait(lambda: mod.query("status")["running"] is True, timeout=30)
    browser.find_element(By.ID, "run").click()
    wait_for(browser, lambda d: texts(d, "#versions tbody tr td:first-child")[:1] == ["v2"], timeout=60)
    wait_for(browser, lambda d: "v2" in texts(d, "#version")[0])
    assert mod.query("status")["latest"] == 2

    # versions and their difference
    wait_for(browser, lambda d: len(Select(d.find_element(By.ID, "old")).options) == 2)
    Select(browser.find_element(By.ID, "old")).select_by_visible_text("1")
    Select(browser.find_element(By.ID, "new")).select_by_visible_text("2")
    browser.find_element(By.ID, "diff").click()
    wait_for(browser, lambda d: '"from": 1' in texts(d, "#diffout")[0])
    shown = texts(browser, "#diffout")[0]
    browser.save_screenshot(str(tmp_path / "page.png"))  # kept for a look when it fails
    assert '"to": 2' in shown and '"added_edges"' in shown
    mod.configure("stop")
