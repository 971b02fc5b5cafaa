"""The Flask example's two routes against the real daemon and its built-in
PDF handler (Flask from PyPI, in the venv .ci/run makes)."""

import importlib.util
import os
from pathlib import Path

import flask  # noqa: F401  (the example's dependency: its absence fails here, plainly)
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flask_app.py"


@pytest.fixture(scope="module")
def app(daemon):
    daemon.jobd("tenants", "seed", "--count", "2", "--scans", "50", "--templates", "4")
    os.environ["JOBD_URL"] = daemon.url
    os.environ["JOBD_TOKEN"] = daemon.producer_token
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app.test_client()


def test_generate_qr_pdf_returns_a_job_and_the_status_route_follows_it(app):
    r = app.post("/api/generate-qr-pdf", json={"tenant": "tenant-001", "template_id": 1, "copies": 4,
                                               "columns": 2, "rows": 2})
    assert r.status_code == 202, r.get_data(as_text=True)
    job_id = r.get_json()["job_id"]
    assert r.get_json()["status_url"] == f"/api/job-status/{job_id}"
    r = app.get(f"/api/job-status/{job_id}?wait=20")
    body = r.get_json()
    assert r.status_code == 200
    assert body["status"] == "succeeded", body
    assert body["error"] is None
    assert Path(body["result"]["path"]).read_bytes()[:5] == b"%PDF-"
    assert body["progress"]["percent"] == 100.0


def test_bad_input_is_the_apis_message(app):
    r = app.post("/api/generate-qr-pdf", json={"tenant": "tenant-404", "template_id": 1})
    assert r.status_code == 400
    assert "tenant-404" in r.get_json()["error"]
    r = app.get("/api/job-status/987654321")
    assert r.status_code == 404
