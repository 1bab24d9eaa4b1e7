//! The backup pipeline, streaming with bounded memory whatever the size:
//! source bytes (a tar stream, or a command's output) -> zstd -> age -> the store's file.
//! Reading and hashing, compression, and encryption run on three threads joined by
//! bounded channels of 256 KiB chunks, so that two cores work at once and no more than a
//! few MiB are in flight. The way back (decrypt -> decompress) is the same, reversed.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use crate::secrets::age::{self as agefile, Identity};

const CHUNK: usize = 256 * 1024;
const IN_FLIGHT: usize = 4;

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

/// A writer that sends its bytes, in chunks, to a channel.
struct ChannelWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx.send(chunk).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipeline stage stopped")
            })?;
        }
        Ok(())
    }
}

/// A reader over the chunks a channel receives.
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
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

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, std::io::Result<T>>) -> std::io::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a pipeline thread panicked")))
}

/// Reads `source` to its end, compresses and encrypts it to `recipients` into `out`.
pub fn seal<R: Read + Send, W: Write + Send>(
    mut source: R,
    recipients: &[String],
    out: W,
) -> std::io::Result<Stats> {
    let (plain_tx, plain_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (packed_tx, packed_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let mut writer = agefile::encrypting_writer(
        recipients,
        Hashing {
            inner: out,
            hash: Sha256::new(),
            bytes: 0,
        },
        false,
    )
    .map_err(std::io::Error::other)?;
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut hash = Sha256::new();
            let mut bytes = 0u64;
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let n = source.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                hash.update(&chunk);
                bytes += n as u64;
                if plain_tx.send(chunk).is_err() {
                    break; // the next stage failed; its error is the one to report
                }
            }
            Ok((bytes, hex(hash.finalize())))
        });
        let packer = s.spawn(move || {
            let mut enc = zstd::Encoder::new(
                ChannelWriter {
                    tx: packed_tx,
                    buf: Vec::with_capacity(CHUNK),
                },
                3,
            )?;
            std::io::copy(&mut ChannelReader::new(plain_rx), &mut enc)?;
            let mut w = enc.finish()?;
            w.flush()
        });
        let sealed = std::io::copy(&mut ChannelReader::new(packed_rx), &mut writer);
        let packed = join(packer);
        let (plain_bytes, plain_sha256) = join(reader)?;
        packed?;
        sealed?;
        let hashing = writer.finish()?;
        Ok(Stats {
            plain_bytes,
            plain_sha256,
            stored_bytes: hashing.bytes,
            stored_sha256: hex(hashing.hash.finalize()),
        })
    })
}

/// Decrypts and decompresses `stored` into `sink` (a tar walker, a volume, a command's
/// stdin), hashing both sides.
pub fn open<R: Read + Send, W: Write + Send>(
    stored: R,
    identity: &Identity,
    sink: W,
) -> std::io::Result<Stats> {
    let mut stored_hash = Sha256::new();
    let mut stored_bytes = 0u64;
    let (packed_tx, packed_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (plain_tx, plain_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    struct Tee<'a, R> {
        inner: R,
        hash: &'a mut Sha256,
        bytes: &'a mut u64,
    }
    impl<R: Read> Read for Tee<'_, R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(out)?;
            self.hash.update(&out[..n]);
            *self.bytes += n as u64;
            Ok(n)
        }
    }
    let result = std::thread::scope(|s| {
        let tee = Tee {
            inner: stored,
            hash: &mut stored_hash,
            bytes: &mut stored_bytes,
        };
        let decrypter = s.spawn(move || {
            let mut reader = identity
                .decrypting_reader(tee)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let mut w = ChannelWriter {
                tx: packed_tx,
                buf: Vec::with_capacity(CHUNK),
            };
            std::io::copy(&mut reader, &mut w)?;
            w.flush()
        });
        let unpacker = s.spawn(move || {
            let mut dec = zstd::Decoder::new(ChannelReader::new(packed_rx))?;
            let mut w = ChannelWriter {
                tx: plain_tx,
                buf: Vec::with_capacity(CHUNK),
            };
            std::io::copy(&mut dec, &mut w)?;
            w.flush()
        });
        let mut sink = Hashing {
            inner: sink,
            hash: Sha256::new(),
            bytes: 0,
        };
        let copied = std::io::copy(&mut ChannelReader::new(plain_rx), &mut sink);
        let decrypted = join(decrypter);
        let unpacked = join(unpacker);
        // The first stage's error explains the others (a bad file breaks everything after).
        decrypted?;
        unpacked?;
        copied?;
        sink.flush()?;
        Ok::<_, std::io::Error>((sink.bytes, hex(sink.hash.finalize())))
    })?;
    Ok(Stats {
        plain_bytes: result.0,
        plain_sha256: result.1,
        stored_bytes,
        stored_sha256: hex(stored_hash.finalize()),
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
        let s = seal(data.as_slice(), &[public], &mut sealed).unwrap();
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
}
