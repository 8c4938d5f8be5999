//! The versioned record codec: one format version byte, then bincode 2 (serde, standard config).
//!
//! Owns the framing of every record the store writes to disk (snapshot bytes also travel to peers).
//! It must not know about sled, openraft or any particular record type: callers pick the type.
//! [`FORMAT_VERSION`] names this framing and encoding; an unknown version is rejected with
//! [`CodecError::UnknownVersion`], never guessed at. bincode has no schema evolution, so a record
//! type that changes shape is versioned by its owner: the store format (`STORE_FORMAT`, with an
//! upgrade step in `store::migrate`) on disk, the peer protocol version on the wire.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format version written as the first byte of every record.
pub const FORMAT_VERSION: u8 = 1;

/// Largest record [`decode`] accepts (64 MiB): a corrupt or hostile length prefix cannot make us
/// allocate without bound. Use [`decode_limited`] for a tighter cap.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record has no bytes, so not even a version byte.
    #[error("decode record: empty record has no format version byte")]
    Empty,
    /// The record was written by a format this build does not read.
    #[error("decode record: unknown format version {found} (this build reads version {expected})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        expected: u8,
    },
    /// bincode could not encode the value.
    #[error("encode record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// bincode could not decode the bytes (corrupt, truncated or over the size limit).
    #[error("decode record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value decoded but bytes were left over, so the record is not what we think it is.
    #[error("decode record: {trailing} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        trailing: usize,
    },
}

/// Encodes `value` as `[FORMAT_VERSION] ++ bincode(value)`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())?;
    Ok(out)
}

/// Decodes a record written by [`encode`], accepting at most [`MAX_RECORD_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited::<T, MAX_RECORD_BYTES>(bytes)
}

/// Decodes a record written by [`encode`] whose decoded allocations may total at most `LIMIT`
/// bytes; use it for anything a peer sent.
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version, expected: FORMAT_VERSION });
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, n_read) = bincode::serde::decode_from_slice(body, config)?;
    if n_read != body.len() {
        return Err(CodecError::TrailingBytes { trailing: body.len() - n_read });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_value() {
        let value = (7u64, "leader".to_string(), Some(vec![1u8, 2, 3]));
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<(u64, String, Option<Vec<u8>>)>(&bytes).unwrap(), value);
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = encode(&42u64).unwrap();
        bytes[0] = FORMAT_VERSION + 1;
        let err = decode::<u64>(&bytes).unwrap_err();
        assert!(
            matches!(err, CodecError::UnknownVersion { found, expected: FORMAT_VERSION } if found == FORMAT_VERSION + 1)
        );
        assert!(err.to_string().contains("unknown format version 2"), "{err}");
    }

    #[test]
    fn empty_record_is_rejected() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&1u8).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u8>(&bytes), Err(CodecError::TrailingBytes { trailing: 1 })));
    }

    #[test]
    fn limit_caps_allocation() {
        let bytes = encode(&vec![0u8; 4096]).unwrap();
        assert!(matches!(decode_limited::<Vec<u8>, 1024>(&bytes), Err(CodecError::Decode(_))));
        assert_eq!(decode_limited::<Vec<u8>, 8192>(&bytes).unwrap().len(), 4096);
    }
}
