//! Jobs between the caller, the store and the worker: stored as the
//! queue's [`JobFormat`], sent to the worker in drover's own encoding.

use drover_proto::{decode_value, encode_value};

use crate::builder::JobFormat;
use crate::error::QueueError;
use crate::runner::JobValue;
use crate::store::Payload;

/// `job` as the store keeps it, in `format`.
pub(crate) fn store<J: JobValue>(job: &J, format: JobFormat) -> Result<Payload, QueueError> {
    match format {
        JobFormat::Json => serde_json::to_string(job)
            .map(Payload::Json)
            .map_err(|source| QueueError::Json {
                type_name: std::any::type_name::<J>(),
                source,
            }),
        JobFormat::Bincode => Ok(Payload::Bincode(encode_value(job)?)),
    }
}

/// A job a worker posted (drover's encoding) as the store keeps it: in
/// `format` if it decodes as `J`, else as the bytes it came in (it runs
/// as it would have before the queue kept JSON; nothing is dropped).
pub(crate) fn posted<J: JobValue>(bytes: Vec<u8>, format: JobFormat) -> Payload {
    if format == JobFormat::Bincode {
        return Payload::Bincode(bytes);
    }
    match decode_value::<J>(&bytes) {
        Ok(job) => store(&job, format).unwrap_or(Payload::Bincode(bytes)),
        Err(e) => {
            tracing::debug!("a posted job is kept as it came: {e}");
            Payload::Bincode(bytes)
        }
    }
}

/// A stored job as the worker receives it; an error names what would not
/// decode (such a job never will: it is buried at once).
pub(crate) fn wire<J: JobValue>(payload: Payload) -> Result<Vec<u8>, String> {
    match payload {
        Payload::Bincode(bytes) => Ok(bytes),
        Payload::Json(json) => {
            let job: J = serde_json::from_str(&json).map_err(|e| {
                format!(
                    "the stored job does not decode as {}: {e}",
                    std::any::type_name::<J>()
                )
            })?;
            encode_value(&job).map_err(|e| e.to_string())
        }
    }
}
