"""End to end in a real browser: an operator creates a key, a client uses it over HTTP, the operator sees the spend.

Headless Chromium from the distribution (apt `chromium chromium-driver`), driven
by Selenium through the system chromedriver; Selenium never downloads a driver.
Skipped when either is missing. Saves the screenshots used in docs/backend-guide.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from screening.models import ScreeningJob

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
# The docs' screenshots are refreshed only on request (CRYSTALLISE_SCREENSHOTS=1);
# other runs write them to a temporary folder so a test run never edits docs/.
IMG = (Path(__file__).resolve().parent.parent / "docs" / "img" if os.environ.get("CRYSTALLISE_SCREENSHOTS")
       else Path(tempfile.mkdtemp(prefix="crystallise-screens-")))
PASSWORD = "pw-browser-operator-123"
CRITERIA = {"research_question": "Do triptans relieve migraine?",
            "inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["pediatric children"]}
PAPERS = [
    {"id": "p1", "title": "Sumatriptan for migraine treatment", "abstract": "A randomized trial of migraine treatment in adults."},
    {"id": "p2", "title": "Hip fracture surgery outcomes", "abstract": "A cohort of elderly patients after hip surgery."},
    {"id": "p3", "title": "Migraine in children", "abstract": "A randomized trial of migraine treatment in pediatric children."},
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are not installed"),
]


@pytest.fixture
def browser(monkeypatch, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    # Never let Selenium Manager reach the network for a driver or browser.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_operator_creates_a_key_and_sees_the_job_and_its_cost(browser, live_server, fake_openai, run_queue):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(element_id: str):
        # A click starts a navigation; wait for the next page rather than reading the old one.
        return WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, element_id)))

    get_user_model().objects.create_superuser("operator", "op@example.org", PASSWORD)
    base = live_server.url

    browser.get(f"{base}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for("content-reports")
    assert "Jobs, API keys and costs" in browser.page_source
    assert browser.find_element(By.ID, "costs-link").get_attribute("href").endswith("/admin/costs/")

    browser.get(f"{base}/admin/crystallise/apikey/add/")
    browser.find_element(By.NAME, "name").send_keys("systematic-review-lab")
    browser.find_element(By.NAME, "monthly_budget_usd").send_keys("25")
    browser.find_element(By.NAME, "_save").click()
    secret = wait_for("api-key-secret").get_attribute("value")
    assert secret.startswith("cry_")

    # The client side: plain HTTP to the live server with the new key.
    request = urllib.request.Request(
        f"{base}/v1/screening/jobs", method="POST",
        data=json.dumps({"criteria": CRITERIA, "papers": PAPERS, "project_id": "migraine-review",
                         "model": "gpt-5-mini"}).encode(),
        headers={"X-API-Key": secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        job_id = json.load(response)["id"]
    run_queue()
    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "completed" and job.cost_usd > 0 and job.api_key.name == "systematic-review-lab"

    browser.get(f"{base}/admin/screening/screeningjob/")
    # Fold the navigation sidebar (the admin remembers it) so the screenshots show every column.
    browser.find_element(By.ID, "toggle-nav-sidebar").click()
    page = browser.page_source
    assert job_id[:8] in page and f"${job.cost_usd:.6f}" in page and "systematic-review-lab (cry_" in page
    assert "3/3" in page and "migraine-review" in page and secret not in page
    IMG.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(IMG / "admin-jobs.png"))

    browser.find_element(By.LINK_TEXT, job_id[:8]).click()
    wait_for("job-results-link")
    assert "Research question: Do triptans relieve migraine?" in browser.page_source
    browser.find_element(By.ID, "job-results-link").click()
    wait_for("result_list")
    assert "Sumatriptan for migraine treatment" in browser.page_source

    browser.get(f"{base}/admin/costs/")
    total = wait_for("costs-total").text
    assert f"${job.cost_usd:.4f}" in total and "1 job" in total
    assert "systematic-review-lab" in browser.find_element(By.ID, "costs-by-key").text
    assert "gpt-5-mini" in browser.find_element(By.ID, "costs-by-model").text
    assert browser.find_elements(By.CSS_SELECTOR, "#costs-chart rect.act")
    browser.save_screenshot(str(IMG / "admin-costs.png"))

    browser.get(f"{base}/admin/crystallise/apikey/")
    assert f"${job.cost_usd:.4f} of $25.00" in browser.page_source and secret not in browser.page_source
