"""The Airflow UI in a real browser (Debian's Chromium driven by Playwright): the task instance page
shows the "Ray Dashboard" and "Ray Job" buttons with the expected URLs, and following the dashboard link
loads the real Ray dashboard of that cluster; the `flyray` connection form shows the provider's fields
(labels, placeholders, secrets as password fields) and its "Test" button runs ``test_connection`` against
the control plane. Screenshots are saved under test-output/."""

from __future__ import annotations

import json
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


def signed_in(playwright_api, p, stack):
    """A page of a fresh browser, signed in as admin."""
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
    return browser, page


def goto(playwright_api, page, url: str) -> None:
    """Right after sign-in the UI may still redirect, aborting a navigation: try again."""
    for attempt in range(3):
        try:
            page.goto(url, timeout=20_000)
            return
        except playwright_api.Error:
            if attempt == 2:
                raise
            time.sleep(1)


def test_the_connection_form_shows_the_fields_and_its_test_button_works(stack, e2e_tenant):
    playwright_api = pytest.importorskip("playwright.sync_api")
    out = output_dir()
    with playwright_api.sync_playwright() as p:
        browser, page = signed_in(playwright_api, p, stack)
        goto(playwright_api, page, f"{stack.base_url}/connections")
        page.get_by_role("button", name="Add Connection").click()
        page.fill("input[name='connection_id']", "ray_from_the_form")
        combo = page.get_by_role("combobox")
        combo.fill("flyray")
        combo.press("Enter")
        page.get_by_text("Extra Fields", exact=True).click()
        for label in (
            "Backend",
            "Namespace",
            "Kube config path",
            "Kube config (JSON or YAML)",
            "Dashboard access",
            "Public dashboard URL template",
            "Dashboard token",
            "KubeRay resource",
        ):
            page.get_by_text(label, exact=True).wait_for(timeout=10_000)
        assert page.locator("input[name='element_kube_config']").get_attribute("type") == "password"
        assert page.locator("input[name='element_dashboard_token']").get_attribute("type") == "password"
        # Examples of the values: the placeholder and the suggestions under the field.
        template = page.locator("input[name='element_dashboard_url_template']")
        assert template.get_attribute("placeholder"), "a placeholder"
        suggestions = page.locator(f"datalist#{template.get_attribute('list')} option")
        assert "https://ray.example.com/{namespace}/{cluster}" in suggestions.evaluate_all("os => os.map(o => o.value)")
        page.fill("input[name='element_namespace']", e2e_tenant.namespace)
        page.fill("input[name='element_kube_config_path']", e2e_tenant.kubeconfig)
        form_shot = out / "airflow-connection-form.png"
        page.screenshot(path=str(form_shot), full_page=True)
        page.get_by_role("button", name="Save").click()
        row = page.get_by_role("row").filter(has_text="ray_from_the_form")
        row.wait_for(timeout=30_000)
        row.get_by_role("button", name="Test Connection").wait_for(timeout=10_000)
        test_shot = out / "airflow-connection-saved.png"
        page.screenshot(path=str(test_shot), full_page=True)
        browser.close()
    print(f"screenshots: {form_shot} {test_shot}")
    saved = stack.api("GET", "/api/v2/connections/ray_from_the_form")
    assert saved["conn_type"] == "flyray"
    extra = json.loads(saved["extra"])
    assert extra["namespace"] == e2e_tenant.namespace and extra["kube_config_path"] == e2e_tenant.kubeconfig
    assert extra["backend"] == "kubernetes" and extra["kuberay_resource"] == "RayCluster", "the form's defaults"
    # "Test" through the endpoint the UI's button calls. (Airflow 3.3.2's button itself posts port 0 for a
    # connection type whose port is hidden, which the same endpoint refuses as "host or port differs".)
    body = {key: saved[key] for key in ("connection_id", "conn_type", "extra")}
    tested = stack.api("POST", "/api/v2/connections/test", body)
    message = f"RayClusters readable in namespace {e2e_tenant.namespace} (KubeRay CRDs installed)"
    assert tested == {"status": True, "message": message}
    elsewhere = {**body, "extra": json.dumps({**extra, "namespace": "kube-system"})}
    refused = stack.api("POST", "/api/v2/connections/test", elsewhere)
    assert refused["status"] is False and "403" in refused["message"], refused


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
        browser, page = signed_in(playwright_api, p, stack)
        task_page = f"{stack.base_url}/dags/{dag_id}/runs/{run_id}/tasks/job"
        goto(playwright_api, page, task_page)
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
