//! Span-carrying building blocks of the typed spec: [`Sp`] (a value and where it was written)
//! and [`NamedMap`] (a YAML mapping of names to items that keeps order, name spans and
//! duplicates, so that the checks can report every duplicate instead of the parser stopping
//! at the first).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::diag::Span;

/// A value with the byte span of the YAML node it was read from.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Self {
        Sp { value, span }
    }
}

impl<T> Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Sp<T> {
    /// Spans are where a value was written, not what it is: equality ignores them.
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let span = s.referenced.span();
        let span = Span::new(
            span.byte_offset().unwrap_or(0) as usize,
            span.byte_len().unwrap_or(0) as usize,
        );
        Ok(Sp {
            value: s.value,
            span,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A list read without the room the parser grew it with: a list read from YAML has room
/// for four items, so a pod's one-item `secrets:` and `depends_on` held 160 bytes each
/// until the whole spec was read (about 16 MB per 50,000 pods).
pub fn shrunk<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut list = Vec::<T>::deserialize(d)?;
    list.shrink_to_fit();
    Ok(list)
}

/// [`shrunk`], of a list that may be absent.
pub fn shrunk_some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let list = Option::<Vec<T>>::deserialize(d)?;
    Ok(list.map(|mut l| {
        l.shrink_to_fit();
        l
    }))
}

/// [`shrunk_some`], boxed: for a list few items have (8 bytes where it is absent).
#[allow(clippy::box_collection)]
pub fn shrunk_some_boxed<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Box<Vec<T>>>, D::Error> {
    Ok(shrunk_some(d)?.map(Box::new))
}

/// One entry of a [`NamedMap`].
#[derive(Clone, Debug)]
pub struct Named<T> {
    pub name: Sp<String>,
    pub item: T,
}

/// A mapping from names to items, in file order, duplicates kept for the checks to report,
/// with an index for lookups by name (the first definition wins).
///
/// The index is the entries' positions sorted by name (4 bytes an entry, no copy of the
/// names): a spec of 50,000 pods holds two such maps per revision.
#[derive(Clone, Debug)]
pub struct NamedMap<T> {
    entries: Vec<Named<T>>,
    /// Positions in `entries`, sorted by name, and among equal names in file order.
    index: Vec<u32>,
}

impl<T> Default for NamedMap<T> {
    fn default() -> Self {
        NamedMap {
            entries: Vec::new(),
            index: Vec::new(),
        }
    }
}

impl<T> FromIterator<Named<T>> for NamedMap<T> {
    fn from_iter<I: IntoIterator<Item = Named<T>>>(iter: I) -> Self {
        let mut entries: Vec<Named<T>> = iter.into_iter().collect();
        entries.shrink_to_fit();
        // A stable sort keeps equal names in file order: the first is the definition.
        let mut index: Vec<u32> = (0..entries.len()).map(|i| i as u32).collect();
        index.sort_by(|a, b| {
            entries[*a as usize]
                .name
                .value
                .cmp(&entries[*b as usize].name.value)
        });
        NamedMap { entries, index }
    }
}

impl<T> NamedMap<T> {
    pub fn iter(&self) -> impl Iterator<Item = &Named<T>> {
        self.entries.iter()
    }

    pub fn entries(&self) -> &[Named<T>] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first item with this name.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.position(name).map(|i| &self.entries[i].item)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Where the first entry with this name is.
    pub fn position(&self, name: &str) -> Option<usize> {
        let name_at = |i: &u32| self.entries[*i as usize].name.value.as_str();
        let first = self.index.partition_point(|i| name_at(i) < name);
        let i = *self.index.get(first)? as usize;
        (self.entries[i].name.value == name).then_some(i)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.entries.iter().map(|n| n.name.value.as_str())
    }

    /// Keeps the entries `keep` says yes to, in file order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Named<T>) -> bool) {
        let entries = std::mem::take(&mut self.entries);
        *self = entries.into_iter().filter(|n| keep(n)).collect();
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NamedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to definitions")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NamedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((name, item)) = m.next_entry()? {
                    v.push(Named { name, item });
                }
                Ok(v.into_iter().collect())
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for NamedMap<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let item = generator.subschema_for::<T>();
        json_schema!({
            "type": "object",
            "additionalProperties": item,
        })
    }
}
