//! The e-mail templates: every built-in one renders with HTML escaping in
//! the HTML part only, a missing variable or an unknown template is an
//! error, a data directory's templates override the built-in ones, and a
//! broken or incomplete one is refused when loaded.

use jobd_handlers::email::templates::{write_builtin, Templates, BUILTIN};
use serde_json::json;

#[test]
fn every_builtin_template_renders_and_a_missing_variable_is_an_error() {
    let t = Templates::load(None).unwrap();
    assert_eq!(t.names().len(), BUILTIN.len());
    let r = t
        .render(
            "welcome",
            &json!({"name": "<Ana>", "product": "QR & Co", "login_url": "https://x/?a=1&b=2"}),
        )
        .unwrap();
    assert_eq!(r.subject, "Welcome to QR & Co, <Ana>");
    assert!(r.text.contains("Hello <Ana>,"));
    assert!(r.html.contains("Hello &lt;Ana&gt;,"), "{}", r.html);
    assert!(r.html.contains("QR &amp; Co"));
    let e = t.render("welcome", &json!({"name": "Ana"})).unwrap_err();
    assert!(e.contains("welcome") && e.contains("product"), "{e}");
    let e = t.render("nope", &json!({})).unwrap_err();
    assert!(e.contains("unknown e-mail template \"nope\""), "{e}");
    let batch = json!({"batch": "b1", "completed": 3, "failed": 0, "total": 3, "failures": []});
    assert!(t
        .render("batch-complete", &batch)
        .unwrap()
        .subject
        .contains("3 done"));
}

#[test]
fn templates_of_the_data_dir_override_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_builtin(dir.path()).unwrap();
    assert_eq!(written.len(), 3 * BUILTIN.len());
    assert!(
        write_builtin(dir.path()).unwrap().is_empty(),
        "kept as they are"
    );
    std::fs::write(dir.path().join("welcome.subject.hbs"), "Hi {{name}}").unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    let data = json!({"name": "Ana", "product": "P", "login_url": "u"});
    assert_eq!(t.render("welcome", &data).unwrap().subject, "Hi Ana");
    std::fs::write(dir.path().join("broken.subject.hbs"), "{{#if}}").unwrap();
    std::fs::write(dir.path().join("broken.txt.hbs"), "x").unwrap();
    std::fs::write(dir.path().join("broken.html.hbs"), "x").unwrap();
    let e = Templates::load(Some(dir.path())).unwrap_err();
    assert!(e.contains("broken.subject.hbs"), "{e}");
    std::fs::remove_file(dir.path().join("broken.subject.hbs")).unwrap();
    let e = Templates::load(Some(dir.path())).unwrap_err();
    assert!(e.contains("lacks broken.subject.hbs"), "{e}");
}

#[test]
fn the_notification_templates_render_a_jobs_end_and_a_summary() {
    let t = Templates::load(None).unwrap();
    let end = json!({"job_id": 7, "queue": "pdf", "kind": "generate_qr_pdf", "state": "dead",
                     "attempts": 3, "error": "font <missing>"});
    let r = t.render("job-finished", &end).unwrap();
    assert_eq!(r.subject, "Job 7 (generate_qr_pdf) dead");
    assert!(r.text.contains("font <missing>") && r.html.contains("font &lt;missing&gt;"));
    let ok = json!({"job_id": 8, "queue": "pdf", "kind": "k", "state": "succeeded",
                    "attempts": 1, "error": null});
    assert!(!t
        .render("job-finished", &ok)
        .unwrap()
        .text
        .contains("Last error"));
    let summary = json!({"count": 2, "since": "2026-12-02 10:00:00 UTC",
        "queues": [{"queue": "pdf", "count": 2}],
        "jobs": [{"id": 1, "queue": "pdf", "kind": "k", "attempts": 3, "error": "<e>",
                  "finished": "2026-12-02 10:00:00 UTC"}],
        "more": 1});
    let r = t.render("jobs-dead", &summary).unwrap();
    assert_eq!(r.subject, "2 jobs ended dead");
    assert!(
        r.text.contains("and 1 more") && r.html.contains("&lt;e&gt;"),
        "{}",
        r.html
    );
}
