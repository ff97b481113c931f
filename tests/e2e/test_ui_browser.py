"""The Airflow UI in a real browser (Debian's Chromium driven by Playwright): the task instance page
shows the "Ray Dashboard" and "Ray Job" buttons with the expected URLs, and following the dashboard link
loads the real Ray dashboard of that cluster. Screenshots are saved under test-output/."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.support import output_dir
from tests.support.airflow_runs import wait_for_state
from tests.support.leftovers import managed_clusters, wait_until_empty

pytestmark = [pytest.mark.kube, pytest.mark.airflow, pytest.mark.ray]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_links_in_the_ui_open_the_ray_dashboard(stack, custom, core, e2e_namespace, kube_proxy):
    playwright_api = pytest.importorskip("playwright.sync_api")
    dag_id = "e2e_kube_ui"
    run_id = stack.trigger(dag_id)
    assert wait_for_state(stack, dag_id, run_id, {"deferred"})["state"] == "deferred"
    (cluster,) = managed_clusters(custom, e2e_namespace, f"dag_id={dag_id}")
    name = cluster["metadata"]["name"]
    dashboard = f"{kube_proxy.url}/api/v1/namespaces/{e2e_namespace}/services/{name}-head-svc:dashboard/proxy"
    deadline = time.monotonic() + 240
    while "tick 2" not in stack.task_log(dag_id, run_id, "job"):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(1)
    links = stack.links(dag_id, run_id, "job")["extra_links"]
    submission_id = links["Ray Job"].rsplit("/", 1)[1]
    out = output_dir()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack.base_url}/auth/login")
        page.fill("input[name='username']", "admin")
        page.fill("input[name='password']", "admin")
        page.get_by_role("button", name="Sign in").click()
        # Signing in sets the `_token` cookie, then the UI redirects: wait for both to settle before
        # navigating, or the redirect aborts our navigation.
        deadline = time.monotonic() + 30
        while not any(c["name"] == "_token" for c in page.context.cookies()):
            assert time.monotonic() < deadline, "sign-in did not set the session cookie"
            time.sleep(0.2)
        page.wait_for_load_state("networkidle")
        task_page = f"{stack.base_url}/dags/{dag_id}/runs/{run_id}/tasks/job"
        for attempt in range(3):
            try:
                page.goto(task_page)
                break
            except playwright_api.Error:
                if attempt == 2:
                    raise
                time.sleep(1)
        page.get_by_text("Details", exact=True).click()
        ray_dashboard = page.get_by_role("link", name="Ray Dashboard")
        ray_job = page.get_by_role("link", name="Ray Job")
        ray_dashboard.wait_for(timeout=60_000)
        assert ray_dashboard.get_attribute("href") == dashboard
        assert ray_job.get_attribute("href") == f"{dashboard}/#/jobs/{submission_id}"
        task_shot = out / "airflow-task-instance.png"
        page.screenshot(path=str(task_shot), full_page=True)
        page.goto(ray_job.get_attribute("href"))
        page.wait_for_function(f"document.body.innerText.includes('{submission_id}')", timeout=60_000)
        assert "Ray Dashboard" in page.title(), page.title()
        ray_shot = out / "ray-dashboard-job.png"
        page.screenshot(path=str(ray_shot), full_page=True)
        browser.close()
    print(f"screenshots: {task_shot} {ray_shot}")
    assert stack.wait_for_run(dag_id, run_id, timeout=300) == "success"
    wait_until_empty(core, custom, e2e_namespace, f"dag_id={dag_id}", timeout=30)
