//! JSON checked the way jobd reads it: one pass that refuses text that is
//! not JSON and objects that name a key twice.  serde_json keeps the last of
//! duplicate keys without a word, so `{"queue":"default","queue":"pdf"}`
//! would enqueue into whichever came last; jobd refuses it instead.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Check that `text` is one JSON value whose objects have no duplicate key.
/// The error is serde_json's, with the line and column.
pub fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Checked>(text).map(|_| ())
}

/// [`check`] for bytes (a request body).
pub fn check_slice(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(bytes).map(|_| ())
}

/// Any JSON value, walked and dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Walk)
    }
}

/// An object key: borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Keys an object may have before they go into a hash set instead of a list.
const LINEAR_KEYS: usize = 16;

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let seen = if many.is_empty() {
                few.contains(&key)
            } else {
                many.contains(&key)
            };
            if seen {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?} in an object"
                )));
            }
            if few.len() < LINEAR_KEYS {
                few.push(key);
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..));
                }
                many.insert(key);
            }
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        check(r#"{"a":1,"b":[{"c":null,"d":"x"}],"e":{"f":true}}"#).unwrap();
        check(r#"[1, "two", 3.5, null]"#).unwrap();
        for bad in [
            r#"{"queue":"default","queue":"pdf"}"#,
            r#"{"payload":{"n":1,"n":2}}"#,
            r#"[{"x":1},{"y":2,"y":3}]"#,
            r#"{"a\u0062":1,"ab":2}"#,
        ] {
            let err = check(bad).unwrap_err().to_string();
            assert!(err.contains("duplicate key"), "{bad}: {err}");
        }
        // Past the linear list, the hash set still finds them.
        let wide: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        check(&format!("{{{}}}", wide.join(","))).unwrap();
        let err = check(&format!("{{{},\"k3\":0}}", wide.join(","))).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"k3\""), "{err}");
        assert!(check("{not json").is_err());
        assert!(check("{} trailing").is_err());
    }
}
