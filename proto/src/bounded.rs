//! Decoding that allocates no more than the input holds.
//!
//! bincode's serde decoder, asked for an owned `String` or byte buffer,
//! reads the claimed length and allocates that much *before* it checks
//! that the input has as many bytes: a 14-byte frame that claims a
//! terabyte string aborts the process ("memory allocation failed"), and a
//! claim near `u64::MAX` panics ("capacity overflow"). Its own byte limit
//! (`with_limit`) is a compile-time constant, so it cannot follow the
//! frame at hand.
//!
//! [`decode_from_slice`] puts a thin adapter between the type being
//! decoded and bincode's *borrowing* decoder, which checks every length
//! against the bytes left before it hands out a slice:
//!
//! - a request for an owned string or byte buffer (`deserialize_string`,
//!   `deserialize_byte_buf`) is answered with a borrowed one
//!   (`deserialize_str`, `deserialize_bytes`): the visitor copies exactly
//!   the bytes that are there, or the decoder fails with "unexpected end";
//! - the element count a sequence or map announces (its `size_hint`, from
//!   which serde preallocates, at most 1 MiB) is capped at the input's
//!   length: an element takes at least one byte on the wire. A sequence
//!   of elements of zero size (`()`, unit structs: the only ones that take
//!   no input) may hold 64 per input byte, at least 4096; a claim past
//!   that is an error, not a count to 2^64.
//!
//! Everything else passes straight through. Every decode in drover, of
//! messages and of user values, goes through here; the fuzz test
//! (`proto/tests/fuzz.rs`) holds it to no allocation larger than the
//! input's bounds.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// Decodes a `T` from the start of `input` with bincode's standard
/// configuration; returns it and the bytes it used.
///
/// # Errors
///
/// bincode's error: a length past the end of `input`, an unknown variant,
/// invalid UTF-8, and so on. Nothing larger than `input` (or, for a
/// sequence, `input.len()` elements) is allocated first.
pub fn decode_from_slice<'de, T: de::Deserialize<'de>>(
    input: &'de [u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let seed = Root {
        max_elements: input.len(),
        marker: PhantomData,
    };
    bincode::serde::seed_decode_from_slice(seed, input, bincode::config::standard())
}

/// Elements a sequence may yield per byte of input (only elements of zero
/// size ever come close).
const ZERO_SIZED_PER_BYTE: usize = 64;

/// Elements a sequence may yield whatever the input's length.
const ZERO_SIZED_FLOOR: usize = 4096;

/// Starts decoding a `T` through the adapter.
struct Root<T> {
    max_elements: usize,
    marker: PhantomData<T>,
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Root<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(Bounded {
            inner: deserializer,
            max_elements: self.max_elements,
        })
    }
}

/// A deserializer that asks its inner one for borrowed data only.
struct Bounded<D> {
    inner: D,
    /// The most elements any sequence or map can hold.
    max_elements: usize,
}

/// A visitor (or seed, or access) wrapped so that whatever it is handed
/// next is wrapped in turn.
struct Wrap<V> {
    inner: V,
    max_elements: usize,
    /// Elements (or entries) a sequence (or map) has yielded so far.
    seen: usize,
}

impl<D> Bounded<D> {
    fn wrap<V>(&self, inner: V) -> Wrap<V> {
        Wrap {
            inner,
            max_elements: self.max_elements,
            seen: 0,
        }
    }
}

impl<V> Wrap<V> {
    fn wrap<W>(&self, inner: W) -> Wrap<W> {
        Wrap {
            inner,
            max_elements: self.max_elements,
            seen: 0,
        }
    }

    fn bounded<D>(&self, inner: D) -> Bounded<D> {
        Bounded {
            inner,
            max_elements: self.max_elements,
        }
    }
}

/// Forwards `deserialize_*` methods that take only a visitor.
macro_rules! forward {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor);
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16
        deserialize_i32 deserialize_i64 deserialize_i128 deserialize_u8
        deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_bytes deserialize_option deserialize_unit deserialize_seq
        deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // Borrowed, so the length is checked against the input first; a
        // `String`'s visitor copies what it is shown.
        let visitor = self.wrap(visitor);
        self.inner.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_bytes(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards `visit_*` methods that take a plain value.
macro_rules! visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32)
        visit_i64(i64) visit_i128(i128) visit_u8(u8) visit_u16(u16)
        visit_u32(u32) visit_u64(u64) visit_u128(u128) visit_f32(f32)
        visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let deserializer = self.bounded(deserializer);
        self.inner.visit_some(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let deserializer = self.bounded(deserializer);
        self.inner.visit_newtype_struct(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.wrap(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.wrap(data);
        self.inner.visit_enum(data)
    }
}

impl<A> Wrap<A> {
    /// Counts one more element of a sequence or map. Every element that
    /// holds data takes a byte of input at least, so only elements of
    /// zero size (`()`, unit structs) can pass the input's length: a
    /// claim of 2^64 of them would take forever to count out, so past
    /// [`ZERO_SIZED_PER_BYTE`] elements per input byte (and at least
    /// [`ZERO_SIZED_FLOOR`]) it is an error instead.
    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.seen += 1;
        let most = self
            .max_elements
            .saturating_mul(ZERO_SIZED_PER_BYTE)
            .max(ZERO_SIZED_FLOOR);
        if self.seen > most {
            return Err(E::custom(format_args!(
                "a sequence of more than {most} elements in {} bytes of input",
                self.max_elements
            )));
        }
        Ok(())
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.bounded(deserializer);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.count()?;
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.max_elements))
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.count()?;
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.max_elements))
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let max_elements = self.max_elements;
        let seed = self.wrap(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Wrap {
                inner: variant,
                max_elements,
                seen: 0,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    /// Values of many shapes decode as bincode's own decoder reads them.
    #[test]
    fn decodes_what_bincode_writes() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        enum Shape {
            Unit,
            New(String),
            Tuple(u8, Vec<u64>),
            Struct {
                a: Option<String>,
                b: HashMap<String, Vec<u8>>,
            },
        }
        let values = vec![
            Shape::Unit,
            Shape::New("héllo".into()),
            Shape::Tuple(7, vec![1, 300, u64::MAX]),
            Shape::Struct {
                a: Some("x".repeat(300)),
                b: HashMap::from([("k".into(), vec![1, 2, 3])]),
            },
        ];
        for value in values {
            let bytes = encode(&value);
            let (decoded, used) = decode_from_slice::<Shape>(&bytes).unwrap();
            assert_eq!(decoded, value);
            assert_eq!(used, bytes.len());
        }
        let bytes = encode(&serde_bytes_like());
        let (decoded, _) = decode_from_slice::<bytes::Bytes>(&bytes).unwrap();
        assert_eq!(decoded, serde_bytes_like());
    }

    fn serde_bytes_like() -> bytes::Bytes {
        bytes::Bytes::from_static(b"\x00\x01binary\xff")
    }

    /// A length claim past the input is an error, not an allocation
    /// (2^40) nor a panic (u64::MAX), for strings, bytes and sequences.
    #[test]
    fn lying_lengths_are_errors() {
        for claim in [1u64 << 40, u64::MAX, u64::MAX - 1, 1 << 20] {
            // bincode's varint: 253 then 8 bytes little-endian.
            let mut bytes = vec![253];
            bytes.extend_from_slice(&claim.to_le_bytes());
            bytes.extend_from_slice(b"abc");
            assert!(decode_from_slice::<String>(&bytes).is_err());
            assert!(decode_from_slice::<Vec<u8>>(&bytes).is_err());
            assert!(decode_from_slice::<bytes::Bytes>(&bytes).is_err());
            assert!(decode_from_slice::<Vec<u64>>(&bytes).is_err());
            assert!(decode_from_slice::<HashMap<String, String>>(&bytes).is_err());
            // Elements of no size: an error, at once, not a long count.
            assert!(decode_from_slice::<Vec<()>>(&bytes).is_err());
            assert!(decode_from_slice::<std::collections::HashSet<()>>(&bytes).is_err());
        }
        // A short honest sequence of them still decodes.
        let bytes = encode(&vec![(); 4000]);
        assert_eq!(decode_from_slice::<Vec<()>>(&bytes).unwrap().0.len(), 4000);
    }
}
