"""The QR platform's two routes on jobd: the PDF is made by a job, not in
the request.

    JOBD_URL=http://127.0.0.1:7878 JOBD_TOKEN=<producer token> flask --app flask_app run

    curl -d '{"tenant": "tenant-001", "template_id": 3, "copies": 12}' \\
         -H 'Content-Type: application/json' localhost:5000/api/generate-qr-pdf
    # 202 {"job_id": 42, "status_url": "/api/job-status/42"}
    curl localhost:5000/api/job-status/42
    # {"status": "running", "progress": {"percent": 40.0, ...}, "result": null, "error": null}
"""

import os

from flask import Flask, jsonify, request

from jobd import BadRequest, Client, NotFound

app = Flask(__name__)
jobs = Client(os.environ.get("JOBD_URL", "http://127.0.0.1:7878"), os.environ.get("JOBD_TOKEN"))


@app.post("/api/generate-qr-pdf")
def generate_qr_pdf():
    body = request.get_json(force=True, silent=True) or {}
    payload = {k: body[k] for k in ("template_id", "copies", "columns", "rows", "page_size") if k in body}
    try:
        job_id = jobs.enqueue("pdf", "generate_qr_pdf", payload, tenant=body.get("tenant"))
    except BadRequest as e:
        # jobd says what was wrong: an unknown tenant or template, a bad field.
        return jsonify({"error": e.message}), 400
    return jsonify({"job_id": job_id, "status_url": f"/api/job-status/{job_id}"}), 202


@app.get("/api/job-status/<int:job_id>")
def job_status(job_id):
    # ?wait=10 answers as soon as the job finishes (at most 10 s): no polling.
    wait = request.args.get("wait", type=float)
    try:
        job = jobs.wait(job_id, timeout=min(wait, 30.0)) if wait else jobs.get(job_id)
    except NotFound:
        return jsonify({"error": f"no job {job_id}"}), 404
    return jsonify({
        "status": job["state"],
        "progress": job["progress"],
        "result": job["result"],
        "error": job["last_error"],
    })
