//! The backup pipeline, streaming with bounded memory whatever the size:
//! source bytes (a tar stream, or a command's output) -> zstd -> age -> the store's file.
//! The source is read (or the tar written) and hashed on a thread of its own; zstd
//! compresses on its own worker threads ([`Compression::threads`]); age encrypts and the
//! file is written on the calling thread. The way back (decrypt -> decompress -> the
//! consumer) runs on three threads. Stages are joined by [`pipe`]s: bounded channels of
//! 1 MiB buffers that go back to the writer once read, so that no buffer is allocated (nor
//! zeroed) per chunk and no more than a few MiB are in flight.

use std::io::{BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use crate::secrets::age::{self as agefile, Identity};

/// The size of the buffers the stages hand each other.
pub const CHUNK: usize = 1024 * 1024;
/// Full buffers a pipe holds at most (the writer blocks beyond).
const IN_FLIGHT: usize = 4;

/// How a backup is compressed (defined with the spec that sets it).
pub use crate::spec::Compression;

/// The input each of zstd's worker threads compresses at once, for levels up to 7 (whose
/// window is at most 2 MiB). zstd's own default is four windows (8 MiB at level 3), and
/// it keeps several jobs' input and output at once: about 60 MiB at level 3 with two
/// threads, against about 20 MiB with 2 MiB jobs, for output 0.4% larger (measured on a
/// tar of `/usr/lib/x86_64-linux-gnu`, docs/PERFORMANCE.md). Higher levels keep zstd's
/// default: their windows are larger than such a job.
const JOB_SIZE: u32 = 2 * 1024 * 1024;

fn job_size(level: i32) -> Option<u32> {
    (level <= 7).then_some(JOB_SIZE)
}

/// Makes the C library give large buffers back to the system when they are freed, for a
/// process that moves backups: their stages allocate buffers of 1 to 8 MiB on several
/// threads (zstd's jobs, an upload's parts, a download's ranges). glibc serves a buffer
/// that large from a map of its own only until one is freed; then it raises that
/// threshold (up to 32 MiB) and keeps later ones in its per-thread heaps, whose memory it
/// keeps after they are freed. Measured on a 4.5 GiB backup with a copy to a bucket
/// (docs/PERFORMANCE.md): peak RSS 99 MiB with glibc's default, 61 MiB with the
/// threshold fixed at 1 MiB, in the same time. Called once, as a backup command starts.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator (under its own lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// What a pass through the pipeline measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the source (the tar stream, or the command's output).
    pub plain_bytes: u64,
    /// SHA-256 of those bytes, hex.
    pub plain_sha256: String,
    /// Bytes of the file written (or read).
    pub stored_bytes: u64,
    /// SHA-256 of the file, hex.
    pub stored_sha256: String,
}

/// A buffer handed from one stage to the next: `CHUNK` bytes, the first `len` of them
/// filled.
struct Chunk {
    data: Vec<u8>,
    len: usize,
}

/// A bounded pipe between two threads, of reused 1 MiB buffers.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (full_tx, full_rx) = sync_channel::<Chunk>(IN_FLIGHT);
    // Room for every buffer there can be: the reader never blocks giving one back.
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 3);
    (
        PipeWriter {
            tx: full_tx,
            back: empty_rx,
            chunk: None,
            made: 0,
        },
        PipeReader {
            rx: full_rx,
            back: empty_tx,
            chunk: None,
            pos: 0,
        },
    )
}

/// The writing end of a [`pipe`]. Dropped without [`PipeWriter::finish`], what it has not
/// sent yet is lost (a stage that fails reports its error; the reader only sees the end).
pub struct PipeWriter {
    tx: SyncSender<Chunk>,
    back: Receiver<Vec<u8>>,
    chunk: Option<Chunk>,
    /// Buffers allocated (the others were given back by the reader).
    made: usize,
}

fn broken() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipeline stage stopped")
}

impl PipeWriter {
    /// The buffer being filled: one given back by the reader, or a new one.
    fn current(&mut self) -> &mut Chunk {
        if self.chunk.is_none() {
            let data = self.back.try_recv().unwrap_or_else(|_| {
                self.made += 1;
                vec![0u8; CHUNK]
            });
            self.chunk = Some(Chunk { data, len: 0 });
        }
        self.chunk.get_or_insert_with(|| Chunk {
            data: Vec::new(),
            len: 0,
        })
    }

    /// Sends the buffer being filled, if it holds anything.
    fn send(&mut self) -> std::io::Result<()> {
        match self.chunk.take() {
            Some(c) if c.len > 0 => self.tx.send(c).map_err(|_| broken()),
            other => {
                self.chunk = other;
                Ok(())
            }
        }
    }

    /// Reads `r` to its end straight into the pipe's buffers; returns how many bytes.
    pub fn fill_from(&mut self, r: &mut dyn Read) -> std::io::Result<u64> {
        let mut total = 0u64;
        loop {
            let c = self.current();
            let n = match r.read(&mut c.data[c.len..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(total);
            }
            c.len += n;
            total += n as u64;
            if c.len == CHUNK {
                self.send()?;
            }
        }
    }

    /// Sends what is left and closes the pipe: the reader sees the end of the stream.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Write for PipeWriter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let c = self.current();
            let n = data.len().min(CHUNK - c.len);
            c.data[c.len..c.len + n].copy_from_slice(&data[..n]);
            c.len += n;
            data = &data[n..];
            if c.len == CHUNK {
                self.send()?;
            }
        }
        Ok(total)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end of a [`pipe`]: the stream ends when the writer is finished (or gone).
pub struct PipeReader {
    rx: Receiver<Chunk>,
    back: SyncSender<Vec<u8>>,
    chunk: Option<Chunk>,
    pos: usize,
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.as_ref().is_none_or(|c| self.pos == c.len) {
            if let Some(done) = self.chunk.take() {
                let _ = self.back.try_send(done.data);
            }
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = Some(c);
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(self
            .chunk
            .as_ref()
            .map_or(&[][..], |c| &c.data[self.pos..c.len]))
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A blocking reader over the chunks an async task sends (an engine's download, read on a
/// thread of the pipeline): the stream ends when the sender is gone.
pub struct BytesReader {
    rx: tokio::sync::mpsc::Receiver<hyper::body::Bytes>,
    chunk: hyper::body::Bytes,
}

impl BytesReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<hyper::body::Bytes>) -> Self {
        BytesReader {
            rx,
            chunk: hyper::body::Bytes::new(),
        }
    }
}

impl Read for BytesReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    /// The writer, the bytes and their SHA-256 (hex).
    pub fn into_parts(self) -> (W, u64, String) {
        (
            self.inner,
            self.bytes,
            crate::encode::hex(&self.hash.finalize()),
        )
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
struct Tee<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hash.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tee<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if let Ok(b) = self.inner.fill_buf() {
            self.hash.update(&b[..n.min(b.len())]);
        }
        self.bytes += n as u64;
        self.inner.consume(n);
    }
}

/// A result as its value or its error.
fn split<T>(r: std::io::Result<T>) -> (Option<T>, Option<std::io::Error>) {
    match r {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(e)),
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, std::io::Result<T>>) -> std::io::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a pipeline thread panicked")))
}

/// Why a seal failed: reading the source, or compressing, encrypting and writing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Source(std::io::Error),
    #[error(transparent)]
    Sink(std::io::Error),
}

impl From<SealError> for std::io::Error {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Source(e) | SealError::Sink(e) => e,
        }
    }
}

/// Reads `source` to its end, compresses and encrypts it to `recipients` into `out`.
pub fn seal<R: Read + Send, W: Write + Send>(
    mut source: R,
    recipients: &[String],
    out: W,
    compression: Compression,
) -> std::io::Result<Stats> {
    Ok(seal_with(
        move |w| w.fill_from(&mut source).map(|_| ()),
        recipients,
        out,
        compression,
    )?)
}

/// As [`seal`], for a source that writes its bytes (a tar builder): `produce` runs on a
/// thread of its own and writes the whole stream into the pipe it is given.
pub fn seal_with<F, W>(
    produce: F,
    recipients: &[String],
    out: W,
    compression: Compression,
) -> Result<Stats, SealError>
where
    F: FnOnce(&mut PipeWriter) -> std::io::Result<()> + Send,
    W: Write + Send,
{
    let mut writer = agefile::encrypting_writer(recipients, Hashing::new(out), false)
        .map_err(|e| SealError::Sink(std::io::Error::other(e)))?;
    let (mut tx, rx) = pipe();
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            produce(&mut tx)?;
            tx.finish()
        });
        let packed = (|| {
            let mut rx = Tee {
                inner: rx,
                hash: Sha256::new(),
                bytes: 0,
            };
            let mut enc = zstd::Encoder::new(&mut writer, compression.level)?;
            if compression.threads > 1 {
                enc.multithread(compression.threads)?;
                if let Some(size) = job_size(compression.level) {
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(size))?;
                }
            }
            pump(&mut rx, &mut enc)?;
            enc.finish()?;
            Ok::<_, std::io::Error>((rx.bytes, crate::encode::hex(&rx.hash.finalize())))
        })();
        // Whatever stopped first explains the rest: a sink that failed stops the producer
        // with a broken pipe; a producer that failed ends the stream early.
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the source's thread panicked")));
        let (plain_bytes, plain_sha256) = packed.map_err(SealError::Sink)?;
        produced.map_err(SealError::Source)?;
        let hashing = writer.finish().map_err(SealError::Sink)?;
        let (mut out, stored_bytes, stored_sha256) = hashing.into_parts();
        out.flush().map_err(SealError::Sink)?;
        Ok(Stats {
            plain_bytes,
            plain_sha256,
            stored_bytes,
            stored_sha256,
        })
    })
}

/// Decrypts and decompresses `stored` into `sink` (a volume's upload, a command's stdin),
/// hashing both sides.
pub fn open<R: Read + Send, W: Write + Send>(
    stored: R,
    identity: &Identity,
    mut sink: W,
) -> std::io::Result<Stats> {
    open_with(stored, identity, |r| {
        pump(r, &mut sink)?;
        sink.flush()
    })
    .map(|(stats, ())| stats)
}

/// Copies `r` to its end into `w`, whole buffers at a time (up to a chunk), not the small
/// pieces of `io::copy`.
fn pump(r: &mut (impl std::io::BufRead + ?Sized), w: &mut impl Write) -> std::io::Result<()> {
    loop {
        let b = r.fill_buf()?;
        if b.is_empty() {
            return Ok(());
        }
        let n = b.len();
        w.write_all(b)?;
        r.consume(n);
    }
}

/// Decrypts and decompresses `stored`, handing the plain stream to `consume` on the
/// calling thread (a tar walker, an unpacker), and hashing both sides. What `consume`
/// leaves unread is read to the end too, so that the hashes cover the whole stream. The
/// first stage's error explains the others (a bad file breaks everything after it).
pub fn open_with<R, T>(
    stored: R,
    identity: &Identity,
    consume: impl FnOnce(&mut dyn BufRead) -> std::io::Result<T>,
) -> std::io::Result<(Stats, T)>
where
    R: Read + Send,
{
    let (mut packed_tx, packed_rx) = pipe();
    let (mut plain_tx, plain_rx) = pipe();
    std::thread::scope(|s| {
        let decrypter = s.spawn(move || {
            let mut tee = Tee {
                inner: stored,
                hash: Sha256::new(),
                bytes: 0,
            };
            let decrypted = (|| {
                let mut reader = identity.decrypting_reader(&mut tee).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                packed_tx.fill_from(&mut reader)?;
                // Read to the very end: the hash covers the whole file.
                std::io::copy(&mut reader, &mut std::io::sink())?;
                Ok::<_, std::io::Error>(())
            })();
            decrypted?;
            std::io::copy(&mut tee, &mut std::io::sink())?;
            packed_tx.finish()?;
            Ok((tee.bytes, crate::encode::hex(&tee.hash.finalize())))
        });
        let unpacker = s.spawn(move || {
            let mut dec = zstd::Decoder::with_buffer(packed_rx)?;
            plain_tx.fill_from(&mut dec)?;
            plain_tx.finish()
        });
        let mut plain = Tee {
            inner: plain_rx,
            hash: Sha256::new(),
            bytes: 0,
        };
        let consumed = consume(&mut plain)
            .and_then(|t| std::io::copy(&mut plain, &mut std::io::sink()).map(|_| t));
        // The consumer stopped (done or failed): the stages before it stop too.
        let Tee {
            inner: plain_rx,
            hash,
            bytes,
        } = plain;
        drop(plain_rx);
        let decrypted = join(decrypter);
        let unpacked = join(unpacker);
        // The first stage's error explains those after it, unless it only saw a later
        // stage stop (a broken pipe): then the later stage's own error says why.
        let (stored, decrypted) = split(decrypted);
        let (_, unpacked) = split(unpacked);
        let (t, consumed) = split(consumed);
        let mut errors: Vec<std::io::Error> = [decrypted, unpacked, consumed]
            .into_iter()
            .flatten()
            .collect();
        let real = errors
            .iter()
            .position(|e| e.kind() != std::io::ErrorKind::BrokenPipe)
            .unwrap_or(0);
        if !errors.is_empty() {
            return Err(errors.swap_remove(real));
        }
        let (Some((stored_bytes, stored_sha256)), Some(t)) = (stored, t) else {
            return Err(std::io::Error::other("a pipeline stage gave no result"));
        };
        Ok((
            Stats {
                plain_bytes: bytes,
                plain_sha256: crate::encode::hex(&hash.finalize()),
                stored_bytes,
                stored_sha256,
            },
            t,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_stream_round_trips_and_tampering_is_caught() {
        let (text, public) = Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, text.as_bytes()).unwrap();
        let id = Identity::load(&key).unwrap();
        // 3 MiB of mixed data: compressible runs and noise.
        let data: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| {
                if i % 4096 < 2048 {
                    7
                } else {
                    (i.wrapping_mul(2_654_435_761) >> 13) as u8
                }
            })
            .collect();
        let mut sealed = Vec::new();
        let s = seal(
            data.as_slice(),
            &[public],
            &mut sealed,
            Compression::default(),
        )
        .unwrap();
        assert_eq!(s.plain_bytes, data.len() as u64);
        assert_eq!(s.stored_bytes, sealed.len() as u64);
        assert!(sealed.len() < data.len());
        let mut back = Vec::new();
        let o = open(sealed.as_slice(), &id, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(o.plain_sha256, s.plain_sha256);
        assert_eq!(o.stored_sha256, s.stored_sha256);
        // One flipped byte in the middle: refused.
        let mut bad = sealed.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        assert!(open(bad.as_slice(), &id, std::io::sink()).is_err());
        // Truncated: refused.
        assert!(open(&sealed[..sealed.len() - 100], &id, std::io::sink()).is_err());
    }

    /// The level and the threads are those asked for: a higher level packs smaller, and
    /// every setting opens to the same bytes.
    #[test]
    fn the_compression_settings_are_used_and_every_setting_round_trips() {
        let (text, public) = Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, text.as_bytes()).unwrap();
        let id = Identity::load(&key).unwrap();
        // 12 MiB of text-like data: words from a small vocabulary, in a changing order.
        let words = [
            "alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta ", "eta ",
        ];
        let mut data = Vec::new();
        let mut x = 0x2545_f491_u32;
        while data.len() < 12 * 1024 * 1024 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.extend_from_slice(words[(x % 7) as usize].as_bytes());
        }
        let mut sizes = Vec::new();
        for (level, threads) in [(1, 1), (1, 4), (19, 1), (19, 2)] {
            let mut sealed = Vec::new();
            let c = Compression { level, threads };
            let s = seal(
                data.as_slice(),
                std::slice::from_ref(&public),
                &mut sealed,
                c,
            )
            .unwrap();
            let mut back = Vec::new();
            let o = open(sealed.as_slice(), &id, &mut back).unwrap();
            assert!(
                back == data,
                "level {level}, {threads} threads: the same bytes back"
            );
            assert_eq!(o.plain_sha256, s.plain_sha256);
            sizes.push(sealed.len());
        }
        assert!(
            sizes[2] < sizes[0] && sizes[3] < sizes[1],
            "level 19 packs smaller than level 1: {sizes:?}"
        );
    }

    /// The pipe's buffers go back to its writer once read: a long stream allocates a few.
    #[test]
    fn a_pipe_hands_its_buffers_back() {
        let (mut w, mut r) = pipe();
        let reader = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let b = r.fill_buf().unwrap();
                if b.is_empty() {
                    return n;
                }
                let len = b.len();
                n += len as u64;
                r.consume(len);
            }
        });
        let piece = vec![5u8; 100_000];
        for _ in 0..2000 {
            w.write_all(&piece).unwrap();
        }
        let made = w.made;
        w.finish().unwrap();
        assert_eq!(reader.join().unwrap(), 2000 * 100_000);
        // 190 buffers' worth went through; no more than the pipe holds were made.
        assert!(made <= IN_FLIGHT + 3, "{made} buffers made");
    }
}
