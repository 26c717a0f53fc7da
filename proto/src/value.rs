//! Encoding of user values (requests, answers, events, configuration).
//!
//! Every use of bincode in drover goes through this module and [`wire`],
//! so the serialisation format can change without touching either side's
//! API.
//!
//! [`wire`]: crate::wire

use serde::{de::DeserializeOwned, Serialize};

/// A user value that would not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value could not be encoded.
    #[error("cannot encode a value of type {type_name}: {reason}")]
    Encode {
        /// The Rust type that was being encoded.
        type_name: &'static str,
        /// What the encoder found wrong.
        reason: String,
    },
    /// The bytes do not hold a value of the asked type.
    #[error("payload of {len} bytes does not decode as {type_name}: {reason}")]
    Decode {
        /// The Rust type that was asked for.
        type_name: &'static str,
        /// Length of the payload.
        len: usize,
        /// What the decoder found wrong.
        reason: String,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into payload bytes.
///
/// # Errors
///
/// [`ValueError::Encode`] when serde refuses the value (a map with
/// non-string keys is fine; a custom `Serialize` that fails is not).
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ValueError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| ValueError::Encode {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

/// Decodes payload bytes into a `T`; every byte must be used.
///
/// # Errors
///
/// [`ValueError::Decode`], naming `T`, when the bytes are not a `T` or hold
/// bytes after it.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    let err = |reason: String| ValueError::Decode {
        type_name: std::any::type_name::<T>(),
        len: bytes.len(),
        reason,
    };
    // Bounded: a length the bytes claim is checked against them before
    // anything is allocated for it (a worker's answer is untrusted input).
    let (value, used) =
        crate::bounded::decode_from_slice::<T>(bytes).map_err(|e| err(e.to_string()))?;
    if used != bytes.len() {
        return Err(err(format!(
            "{} bytes left over after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = (String::from("hi"), 7u32, vec![1u8, 2, 3]);
        let bytes = encode_value(&v).unwrap();
        let back: (String, u32, Vec<u8>) = decode_value(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn wrong_type_names_the_type() {
        let bytes = encode_value("a string that is long").unwrap();
        let err = decode_value::<u8>(&bytes).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("u8"), "{text}");
    }

    /// A string claiming 2^40 bytes in a 14-byte payload is a decode
    /// error naming the type, not an allocation.
    #[test]
    fn a_lying_length_is_a_decode_error() {
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        bytes.extend_from_slice(b"abcde");
        let err = decode_value::<String>(&bytes).unwrap_err();
        assert!(err.to_string().contains("String"), "{err}");
    }
}
