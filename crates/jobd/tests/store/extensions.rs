//! A library's own tables in the queue file, with its own migrations.

use jobd::Error;

use crate::support::*;

#[test]
fn a_librarys_migrations_apply_once_in_order_and_a_newer_file_is_refused() {
    let f = fixture();
    let v1 = ["CREATE TABLE lib_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"];
    f.store
        .sqlite()
        .unwrap()
        .migrate_extension("lib", &v1)
        .unwrap();
    // Up to date: one read, nothing committed.
    let ((), wrote) = committed_during(&f.store, || {
        f.store
            .sqlite()
            .unwrap()
            .migrate_extension("lib", &v1)
            .unwrap()
    });
    assert!(!wrote);
    let v2 = [v1[0], "ALTER TABLE lib_notes ADD COLUMN at INTEGER"];
    f.store
        .sqlite()
        .unwrap()
        .migrate_extension("lib", &v2)
        .unwrap();
    assert_eq!(
        count(
            &f.store,
            "SELECT count(*) FROM pragma_table_info('lib_notes')"
        ),
        3
    );
    // An older build of the library meets the newer file.
    let err = f
        .store
        .sqlite()
        .unwrap()
        .migrate_extension("lib", &v1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooNew {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    // A failing migration leaves nothing of itself behind.
    let bad = [
        v2[0],
        v2[1],
        "CREATE TABLE lib_more (x); SELECT * FROM no_such_table",
    ];
    assert!(f
        .store
        .sqlite()
        .unwrap()
        .migrate_extension("lib", &bad)
        .is_err());
    assert_eq!(
        count(
            &f.store,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'lib_more'"
        ),
        0
    );
    assert_eq!(
        count(
            &f.store,
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema:lib'"
        ),
        2
    );
    // Another library's versions are its own.
    f.store
        .sqlite()
        .unwrap()
        .migrate_extension("other", &["CREATE TABLE other_t (x)"])
        .unwrap();
    assert!(f
        .store
        .sqlite()
        .unwrap()
        .migrate_extension("", &v1)
        .is_err());
}
