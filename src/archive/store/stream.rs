//! The bridges between berth's synchronous pipeline and an async store's transfers: a
//! [`PartWriter`] fills parts and hands them to an upload thread through a bounded channel
//! (the writer waits while the thread is behind), and a [`ChunkReader`] reads the chunks a
//! download thread hands it. Memory stays bounded by the part size and the channel's.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The writer of a data object: fills parts and hands them on (waiting while the upload
/// is behind). The `n`th part (from 0) holds `size(n)` bytes. Its last part goes when it
/// is dropped.
pub struct PartWriter {
    size: fn(u64) -> usize,
    /// Parts handed on so far.
    sent: u64,
    buf: Vec<u8>,
    tx: Option<SyncSender<Bytes>>,
    /// Why the upload stopped, as its thread said it.
    failed: Arc<Mutex<Option<String>>>,
}

impl PartWriter {
    pub fn new(
        size: fn(u64) -> usize,
        tx: SyncSender<Bytes>,
        failed: Arc<Mutex<Option<String>>>,
    ) -> Self {
        PartWriter {
            size,
            sent: 0,
            buf: Vec::with_capacity(size(0)),
            tx: Some(tx),
            failed,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = Bytes::from(std::mem::take(&mut self.buf));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(part).is_ok());
        if sent {
            // The next part's buffer only once this one is handed over.
            self.sent += 1;
            self.buf = Vec::with_capacity((self.size)(self.sent));
            return Ok(());
        }
        let why = self
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "the upload stopped".into());
        Err(std::io::Error::other(why))
    }
}

impl Write for PartWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let size = (self.size)(self.sent);
        let n = b.len().min(size - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == size {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.send();
        }
        // The channel closed: the upload thread sends what is left and ends.
        self.tx.take();
    }
}

/// The reader of a data object, fed by a download thread (chunks, or why it stopped).
pub struct ChunkReader {
    rx: Receiver<Result<Bytes, String>>,
    chunk: Bytes,
}

impl ChunkReader {
    pub fn new(rx: Receiver<Result<Bytes, String>>) -> Self {
        ChunkReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.chunk = chunk,
                Ok(Err(why)) => return Err(std::io::Error::other(why)),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// A runtime of a store's own (two workers): its transfers go on whatever thread calls it.
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Runs a future to its end on a store's runtime, from a thread of its own (so that it
/// may be called from inside another runtime as well as from a plain thread).
pub fn run_on<T: Send, F: std::future::Future<Output = T> + Send>(
    runtime: &tokio::runtime::Runtime,
    f: F,
) -> T {
    std::thread::scope(|s| match s.spawn(|| runtime.block_on(f)).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The chunks of `stream` (a download) handed to a [`ChunkReader`] by a thread of its
/// own running on `runtime`, at most `ahead` chunks ahead; it stops at the first error
/// (which the reader returns) or when the reader goes.
pub fn download(
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
    thread: &str,
    stream: futures_util::stream::BoxStream<'static, Result<Bytes, String>>,
    ahead: usize,
) -> std::io::Result<ChunkReader> {
    use futures_util::StreamExt;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bytes, String>>(ahead);
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut stream = stream;
                while let Some(chunk) = stream.next().await {
                    let stop = chunk.is_err();
                    if tx.send(chunk).is_err() || stop {
                        return;
                    }
                }
            })
        })?;
    Ok(ChunkReader::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_take_the_size_their_number_gives_and_the_last_what_is_left() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
        let mut w = PartWriter::new(
            |n| if n < 2 { 3 } else { 5 },
            tx,
            Arc::new(Mutex::new(None)),
        );
        w.write_all(&(0..20u8).collect::<Vec<_>>()).unwrap();
        drop(w);
        let parts: Vec<Bytes> = rx.iter().collect();
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [3, 3, 5, 5, 4]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, (0..20u8).collect::<Vec<_>>());
    }
}
