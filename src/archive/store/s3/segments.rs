//! The data of a backup in a bucket, as segments: their names, the upload that writes
//! them and reads each back as soon as it is in, and the fetch that reads them (or data
//! written as one object, in ranges) in order. See `super` for the layout and why.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, PutResult};

use super::{IN_FLIGHT, RANGES_IN_FLIGHT, scrub};

/// What the read-back of a backup's segments found, in order: their bytes and SHA-256;
/// and each segment as its PUT left it (where, its ETag, its size).
#[derive(Clone, Debug)]
pub(super) struct ReadBack {
    pub(super) bytes: u64,
    pub(super) sha256: String,
    pub(super) segments: Vec<(ObjectPath, Option<String>, u64)>,
}

/// Where segment `n` of the data in `dir` goes: under `dir` as it is (a path made from
/// text again would encode the `%` of a prefix that has one, `~` in `team~a` became
/// `team%7Ea`, a second time).
pub(super) fn segment_path(dir: &ObjectPath, n: u64) -> ObjectPath {
    dir.clone().join(segment_name(n))
}

/// The name of segment `n` (from 0): eight digits, so that names sort as numbers do.
pub(super) fn segment_name(n: u64) -> String {
    format!("{n:08}")
}

/// A part of a backup's data to fetch: an object, or a range of one, while it is still
/// the one `e_tag` names.
pub(super) struct Piece {
    pub(super) path: ObjectPath,
    pub(super) range: Option<std::ops::Range<u64>>,
    pub(super) e_tag: Option<String>,
}

/// The bytes of `pieces`, in order, with [`RANGES_IN_FLIGHT`] of them requested at once
/// (one GET of a large object is as fast as one connection: object stores serve several
/// at once far faster).
pub(super) fn fetch(
    bucket: Arc<AmazonS3>,
    pieces: Vec<Piece>,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, String>> {
    futures_util::stream::iter(pieces)
        .map(move |piece| {
            let bucket = bucket.clone();
            let options = object_store::GetOptions {
                range: piece.range.map(object_store::GetRange::Bounded),
                if_match: piece.e_tag,
                ..Default::default()
            };
            // Spawned: the runtime's workers receive the pieces while the reader hashes.
            tokio::spawn(async move { bucket.get_opts(&piece.path, options).await?.bytes().await })
        })
        .buffered(RANGES_IN_FLIGHT)
        .map(|got| match got {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(scrub(&e.to_string())),
            Err(e) => Err(e.to_string()),
        })
        .boxed()
}

/// Uploads the segments a [`PartWriter`] fills (one PUT each, at most [`IN_FLIGHT`] at
/// once) into `dir`, and reads each back, in order, as soon as its PUT is done (under
/// If-Match its ETag): the size and SHA-256 of all it read, once the writer is gone and
/// every segment is in; or why not (also left in `failed` for the writer to say).
pub(super) fn upload_segments(
    runtime: &tokio::runtime::Runtime,
    bucket: Arc<AmazonS3>,
    dir: ObjectPath,
    rx: Receiver<Bytes>,
    failed: Arc<Mutex<Option<String>>>,
) -> Result<ReadBack, String> {
    type Put = (
        ObjectPath,
        u64,
        tokio::task::JoinHandle<object_store::Result<PutResult>>,
    );
    let fail = |why: String| {
        if let Ok(mut f) = failed.lock() {
            *f = Some(why.clone());
        }
        why
    };
    let (done, to_read) = tokio::sync::mpsc::unbounded_channel();
    let reading = runtime.spawn(read_back(bucket.clone(), to_read));
    let mut sending: std::collections::VecDeque<Put> = std::collections::VecDeque::new();
    let wait = |(path, size, put): Put| -> Result<(), String> {
        match runtime.block_on(put) {
            Ok(Ok(put)) => {
                let _ = done.send((path, put.e_tag, size));
                Ok(())
            }
            Ok(Err(e)) => Err(scrub(&e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    };
    // A backup's data is never empty (age's header), but an empty stream is one segment.
    let mut segments = rx.iter().peekable();
    let empty = segments.peek().is_none();
    let mut sent = Ok(());
    for (n, segment) in segments.chain(empty.then(Bytes::new)).enumerate() {
        let path = segment_path(&dir, n as u64);
        let (b, at, size) = (bucket.clone(), path.clone(), segment.len() as u64);
        let put = runtime.spawn(async move { b.put(&at, PutPayload::from(segment)).await });
        sending.push_back((path, size, put));
        if sending.len() >= IN_FLIGHT
            && let Some(oldest) = sending.pop_front()
        {
            sent = wait(oldest);
        }
        // The read-back ends early only when it failed: no use sending the rest.
        if reading.is_finished() {
            sent = sent.and(Err("the read-back stopped".into()));
        }
        if sent.is_err() {
            break;
        }
    }
    // Every PUT begun has ended before this returns: a failed copy's segments are deleted
    // next, and none may land after that.
    while let Some(oldest) = sending.pop_front() {
        let put = wait(oldest);
        sent = sent.and(put);
    }
    drop(done);
    let read = match runtime.block_on(reading) {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(why)) => Err(format!("reading it back: {why}")),
        Err(e) => Err(e.to_string()),
    };
    // Why the upload stopped, else why the read-back did.
    sent.and(read).map_err(fail)
}

/// Reads back each segment `to_read` names, in order, as whole objects under If-Match
/// their ETag, hashing what arrives: the total size and SHA-256, and the segments as their
/// PUTs left them (where, ETag, size).
async fn read_back(
    bucket: Arc<AmazonS3>,
    mut to_read: tokio::sync::mpsc::UnboundedReceiver<(ObjectPath, Option<String>, u64)>,
) -> Result<ReadBack, String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut segments = Vec::new();
    while let Some((path, e_tag, size)) = to_read.recv().await {
        segments.push((path.clone(), e_tag.clone(), size));
        let options = object_store::GetOptions {
            if_match: e_tag,
            ..Default::default()
        };
        let got = bucket.get_opts(&path, options).await;
        let mut body = got.map_err(|e| scrub(&e.to_string()))?.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| scrub(&e.to_string()))?;
            bytes += chunk.len() as u64;
            hash.update(&chunk);
        }
    }
    Ok(ReadBack {
        bytes,
        sha256: crate::encode::hex(&hash.finalize()),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_as_their_numbers() {
        let names: Vec<String> = [0, 1, 9, 10, 99_999_999].map(segment_name).into();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(segment_name(0), "00000000");
    }
}
