//! Awaitable helpers over `wasi:io/streams` (backpressure through the streams' pollables).
//!
//! They take the crate's stream types, which are the app's own when its bindings come
//! from [`generate!`](crate::generate) with `streams` (every `wasi:http` world).

pub use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::io::wait_pollable;

/// The largest chunk [`read`] asks for by default (the same as the Python guest library).
pub const CHUNK: u64 = 64 * 1024;

/// The next chunk of at most `max_bytes`, waiting for data; `Ok(None)` at the end.
///
/// Dropping the future stops the wait and loses nothing (no byte was read yet).
pub async fn read(stream: &InputStream, max_bytes: u64) -> Result<Option<Vec<u8>>, StreamError> {
    loop {
        match stream.read(max_bytes) {
            Ok(data) if !data.is_empty() => return Ok(Some(data)),
            Ok(_) => wait_pollable(&stream.subscribe()).await,
            Err(StreamError::Closed) => return Ok(None),
            Err(err) => return Err(err),
        }
    }
}

/// Everything until the end of the stream.
pub async fn read_all(stream: &InputStream) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    while let Some(chunk) = read(stream, CHUNK).await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Write all of `data`, waiting for room; `Err(StreamError::Closed)` if the reader left.
///
/// Dropping the future part-way leaves a prefix of `data` written.
pub async fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), StreamError> {
    while !data.is_empty() {
        let room = stream.check_write()?;
        if room == 0 {
            wait_pollable(&stream.subscribe()).await;
            continue;
        }
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        stream.write(&data[..n])?;
        data = &data[n..];
    }
    Ok(())
}
