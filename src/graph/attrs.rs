//! [`Attrs`]: a resource's attributes, text keys to text values in key order, packed.
//!
//! A spec of 50,000 pods has 100,000 resources per revision, each with a handful of short
//! attributes. As a `BTreeMap<String, String>` every resource held a 544-byte tree leaf and
//! two heap strings per attribute; packed, it holds one string of its keys and values side
//! by side and one list of where each ends: two allocations whatever the number of
//! attributes. It reads, compares, prints and serialises as the map did (a JSON object with
//! its keys in sorted order, so the labels' hash of it is unchanged).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Attributes in key order (byte order, as `BTreeMap<String, String>` had them), one value
/// per key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Each key followed by its value, in key order.
    text: Box<str>,
    /// Per attribute, where its key ends and where its value ends in `text`. 32-bit: one
    /// resource's attributes are names, short values and fingerprints from a spec file
    /// (hundreds of bytes), never near 4 GiB.
    ends: Box<[(u32, u32)]>,
}

impl Attrs {
    pub fn new() -> Self {
        Attrs::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key and value of the `i`th attribute.
    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1].1 as usize
        };
        let (key_end, end) = self.ends[i];
        (
            &self.text[start..key_end as usize],
            &self.text[key_end as usize..end as usize],
        )
    }

    /// Where `key` is, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid).0.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.entry(i).1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, replacing the value it had.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        let (at, replaced) = match self.find(key) {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        };
        let start = if at == 0 { 0 } else { self.ends[at - 1].1 };
        let old_end = if replaced { self.ends[at].1 } else { start };
        let mut text = String::with_capacity(
            self.text.len() - (old_end - start) as usize + key.len() + value.len(),
        );
        text.push_str(&self.text[..start as usize]);
        text.push_str(key);
        text.push_str(value);
        text.push_str(&self.text[old_end as usize..]);
        let key_end = start + key.len() as u32;
        let end = key_end + value.len() as u32;
        let shift = |e: u32| e - old_end + end;
        let mut ends = Vec::with_capacity(self.len() + usize::from(!replaced));
        ends.extend_from_slice(&self.ends[..at]);
        ends.push((key_end, end));
        let after = if replaced { at + 1 } else { at };
        ends.extend(
            self.ends[after..]
                .iter()
                .map(|&(k, v)| (shift(k), shift(v))),
        );
        self.text = text.into_boxed_str();
        self.ends = ends.into_boxed_slice();
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.find(key).ok()?;
        let value = self.entry(at).1.to_owned();
        let rest: Vec<(&str, &str)> = self
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, e)| e)
            .collect();
        *self = Attrs::from_sorted(&rest);
        Some(value)
    }

    /// The attributes in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            attrs: self,
            next: 0,
            end: self.len(),
        }
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.iter().map(|(_, v)| v)
    }

    /// Replaces each value for which `f` returns a new one.
    pub fn replace_values(&mut self, mut f: impl FnMut(&str, &str) -> Option<String>) {
        let changed: Vec<(usize, String)> = self
            .iter()
            .enumerate()
            .filter_map(|(i, (k, v))| f(k, v).map(|n| (i, n)))
            .collect();
        if changed.is_empty() {
            return;
        }
        let mut new_values = changed.into_iter().peekable();
        let entries: Vec<(String, String)> = self
            .iter()
            .enumerate()
            .map(|(i, (k, v))| match new_values.next_if(|(at, _)| *at == i) {
                Some((_, n)) => (k.to_owned(), n),
                None => (k.to_owned(), v.to_owned()),
            })
            .collect();
        *self = Attrs::from_sorted(&entries);
    }

    /// Packs entries already in key order, without repeated keys.
    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(entries: &[(K, V)]) -> Self {
        let size = entries
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(size);
        let mut ends = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            text.push_str(k.as_ref());
            let key_end = text.len() as u32;
            text.push_str(v.as_ref());
            ends.push((key_end, text.len() as u32));
        }
        Attrs {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

/// The attributes of an [`Attrs`] in key order.
pub struct Iter<'a> {
    attrs: &'a Attrs,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.attrs.entry(self.next - 1)
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.end - self.next, Some(self.end - self.next))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.end -= 1;
            self.attrs.entry(self.end)
        })
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Collects in any order; of a key given twice the last value stays (as with a map).
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: among equal keys the last given ends up last, and is the one kept.
        entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut kept: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if last.0.as_ref() == e.0.as_ref() => *last = e,
                _ => kept.push(e),
            }
        }
        Attrs::from_sorted(&kept)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for Attrs {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Attrs {
    type Output = str;
    /// The value of `key`; panics when there is none, as a map's index does.
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no attribute `{key}`"),
        }
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of attribute names to text values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Attrs, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                while let Some(e) = m.next_entry()? {
                    entries.push(e);
                }
                Ok(entries.into_iter().collect())
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample() -> Vec<(&'static str, &'static str)> {
        vec![
            ("image", "api:1"),
            ("env.B", ""),
            ("", "empty key"),
            ("env.A", "ä ö"),
            ("secret.db", "file /run/secrets/db mode 0400"),
            ("env.B", "second wins"),
            ("check[:80/]", "http :80/"),
        ]
    }

    #[test]
    fn reads_prints_and_serialises_as_the_map_did() {
        let map: BTreeMap<String, String> = sample()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let attrs: Attrs = sample().into_iter().collect();
        assert_eq!(attrs.len(), map.len());
        let pairs: Vec<(&str, &str)> = attrs.iter().collect();
        let expected: Vec<(&str, &str)> =
            map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, expected);
        let reversed: Vec<(&str, &str)> = attrs.iter().rev().collect();
        assert_eq!(reversed, expected.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(format!("{attrs:?}"), format!("{map:?}"));
        let json = serde_json::to_string(&attrs).unwrap();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        assert_eq!(serde_json::from_str::<Attrs>(&json).unwrap(), attrs);
        // A key given twice in JSON: the last value, as the map read it.
        let twice = r#"{"b":"1","a":"x","b":"2"}"#;
        let as_map: BTreeMap<String, String> = serde_json::from_str(twice).unwrap();
        let as_attrs: Attrs = serde_json::from_str(twice).unwrap();
        assert_eq!(
            serde_json::to_string(&as_attrs).unwrap(),
            serde_json::to_string(&as_map).unwrap()
        );
        for (k, v) in &map {
            assert_eq!(attrs.get(k), Some(v.as_str()));
            assert_eq!(&attrs[k.as_str()], v.as_str());
        }
        assert_eq!(attrs.get("env"), None);
        assert!(!attrs.contains_key("zzz"));
    }

    #[test]
    fn inserts_replaces_and_removes_as_the_map_does() {
        let mut map = BTreeMap::new();
        let mut attrs = Attrs::new();
        let steps = [
            ("m", "1"),
            ("a", "22"),
            ("z", "333"),
            ("m", "replaced, longer"),
            ("a", ""),
            ("b", "4"),
            ("z", "5"),
        ];
        for (k, v) in steps {
            map.insert(k.to_owned(), v.to_owned());
            attrs.insert(k, v);
            assert_eq!(
                serde_json::to_string(&attrs).unwrap(),
                serde_json::to_string(&map).unwrap()
            );
        }
        assert_eq!(attrs.remove("m").as_deref(), Some("replaced, longer"));
        map.remove("m");
        assert_eq!(attrs.remove("m"), None);
        attrs.replace_values(|k, v| (k == "b").then(|| format!("{v}!")));
        map.insert("b".into(), "4!".into());
        assert_eq!(
            serde_json::to_string(&attrs).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let keys: Vec<&str> = attrs.keys().collect();
        assert_eq!(keys, ["a", "b", "z"]);
    }
}
