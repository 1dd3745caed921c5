"""The Gravity view in a real browser: headless Debian Chromium logs in to Airflow, opens the view, sees the
charts drawn and the numbers of the history table, and finds the view in the Airflow UI's navigation.

Set ``GRAVITY_VIEW_SCREENSHOT`` to a path to keep the screenshot (docs/img/gravity-view.png comes from here).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.gravity_view_server import DAG_ID, PASSWORD, USERNAME, GravityView, gravity_view  # noqa: F401

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOTALS = ("runs", "rows_read", "delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")
BUCKETS = ("delivered", "duplicate", "rejected", "invalid", "skipped_delivered", "undelivered")


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        message = "chromium and chromium-driver are not installed (make browser-packages installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no download: Debian's driver
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_until_ready(driver, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body && document.body.dataset.state") in ("ready", "error")
    )
    state = driver.execute_script("return document.body.dataset.state")
    assert state == "ready", driver.execute_script("return document.getElementById('message').textContent")


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def expected_days(view: GravityView) -> dict[str, dict[str, int]]:
    """Per day, from the history table itself: the last try of each task of the DAG."""
    latest: dict[tuple, dict] = {}
    for row in sorted(view.history_rows(), key=lambda row: row["id"]):
        if row["dag_id"] == DAG_ID and view.first_day <= row["day"] <= view.last_day:
            latest[(row["task_id"], row["run_id"], row["map_index"])] = row
    days: dict[str, dict[str, int]] = {}
    for row in latest.values():
        day = days.setdefault(row["day"].isoformat(), dict.fromkeys(("runs", *TOTALS[1:]), 0))
        day["runs"] += 1
        for name in TOTALS[1:]:
            day[name] += row[name]
    return days


def test_a_person_logs_in_and_sees_the_charts_and_the_numbers_of_the_history(
    gravity_view: GravityView,  # noqa: F811
    browser,
    tmp_path: Path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dates = f"start_date={gravity_view.first_day}&end_date={gravity_view.last_day}"
    browser.get(f"{gravity_view.url}/?dag_id={DAG_ID}&{dates}")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.NAME, "username"))
    assert "/auth/login" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(USERNAME)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda d: "/gravity/" in d.current_url)
    wait_until_ready(browser)

    # The charts are drawn: two canvases, each a Chart.js chart whose pixels are not blank.
    for canvas_id, datasets in (("chart-buckets", len(BUCKETS)), ("chart-coverage", 5)):
        canvas = browser.find_element(By.ID, canvas_id)
        assert canvas.tag_name == "canvas" and canvas.size["width"] > 300 and canvas.size["height"] > 150
        drawn = browser.execute_script(
            """
            const canvas = document.getElementById(arguments[0]);
            const chart = Chart.getChart(canvas);
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
            return {datasets: chart.data.datasets.length, labels: chart.data.labels, painted};
            """,
            canvas_id,
        )
        assert drawn["datasets"] == datasets
        assert drawn["painted"] > 5000, canvas_id
    days = expected_days(gravity_view)
    chart = browser.execute_script(
        "const c = Chart.getChart('chart-buckets'); return {labels: c.data.labels, "
        "sets: Object.fromEntries(c.data.datasets.map(d => [d.label, d.data]))};"
    )
    assert chart["labels"] == sorted(days)
    for name in BUCKETS:
        assert chart["sets"][name] == [days[day][name] for day in sorted(days)], name

    # The numbers shown are the table's: the totals and each day's row.
    for name in TOTALS:
        shown = browser.find_element(By.CSS_SELECTOR, f"[data-total={name}]").text
        assert number(shown) == sum(day[name] for day in days.values()), name
    for day, expected in days.items():
        row = browser.find_element(By.CSS_SELECTOR, f"#days tr[data-day='{day}']")
        for name in ("runs", *BUCKETS):
            assert number(row.find_element(By.CSS_SELECTOR, f"[data-field={name}]").text) == expected[name]
    reasons = browser.find_elements(By.CSS_SELECTOR, "#reasons tbody tr")
    assert reasons and all(number(row.find_element(By.CSS_SELECTOR, "[data-field=rows]").text) > 0 for row in reasons)
    dead_letter = browser.find_elements(By.CSS_SELECTOR, "#dead-letter tbody tr")
    assert 0 < len(dead_letter) <= 25
    assert "events" in browser.find_element(By.ID, "dead-letter-count").text

    screenshot = tmp_path / "gravity-view.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 20_000
    if os.environ.get("GRAVITY_VIEW_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["GRAVITY_VIEW_SCREENSHOT"])


def test_the_view_is_in_the_airflow_ui_navigation(gravity_view: GravityView, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{gravity_view.airflow.url}/plugin/gravity")  # Browse > Gravity, as the UI links it
    frame = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='/gravity/']"))
    browser.switch_to.frame(frame[0])
    try:
        wait_until_ready(browser)
        assert browser.find_element(By.ID, "chart-buckets").tag_name == "canvas"
        totals = json.loads(
            browser.execute_script("return JSON.stringify(document.querySelector('[data-total=runs]').dataset)")
        )
        assert int(totals["value"]) > 0
    finally:
        browser.switch_to.default_content()
