//! [`S3Store`]: a store in a bucket of any S3-compatible object store, through
//! `object_store`. Each backup name is a prefix of data objects and their manifests, laid
//! out as a directory store is (`PREFIX/NAME/ID.tar.zst.age`, `…/ID.manifest.json`).
//!
//! Data is uploaded as a multipart upload while the pipeline writes it, in parts of
//! [`part_size`] bytes with at most [`IN_FLIGHT`] of them on the wire: memory stays bounded
//! (three parts: 15 MiB up to 4.9 GiB stored, twice that for each further thousand parts)
//! and an object can reach S3's largest (5 TiB) within its 10,000 parts, at an upload rate
//! that sends a part within a request's ten minutes (a 2.5 GiB part, beyond 2.5 TiB
//! stored, wants about 4 MB/s per part). Stores that want every part but the last of one
//! size take backups of up to 4.9 GiB stored. The upload is completed only by [`Store::commit`], just
//! before the manifest is written, so that a backup killed midway leaves no data object,
//! only parts the bucket drops by its lifecycle rule (`AbortIncompleteMultipartUpload`).
//!
//! `object_store` is async; berth's stores are read and written from plain threads and
//! from inside the project's runtime alike. Every call therefore runs on a thread of its
//! own against the store's own runtime ([`S3Store::run`]), and the data flows to and from
//! it through bounded channels.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

use super::stream::{PartWriter, download, run_on};
use super::{DATA, Incomplete, MANIFEST, Store, unfinished};
use crate::archive::{BackupError, Manifest};

/// The size of the first thousand uploaded parts: S3's least (but for the last).
pub const PART: usize = 5 * 1024 * 1024;
/// How many parts of one size are sent before the size doubles.
const PARTS_PER_SIZE: u64 = 1000;

/// The size of the `n`th part of an upload (from 0): [`PART`] for the first thousand,
/// doubled for each further thousand. A backup's size is not known while it is written, and
/// S3 takes at most 10,000 parts of at most 5 GiB: parts of 5 MiB alone would end an object
/// at 48.8 GiB; these reach about 5 TiB (S3's largest object), and a backup of a few GiB
/// needs no more than three 5 MiB parts in memory.
pub fn part_size(n: u64) -> usize {
    PART << (n / PARTS_PER_SIZE).min(9)
}
/// How many parts are uploaded at once.
const IN_FLIGHT: usize = 2;
/// The size of the ranges a data object is read in, and how many are requested at once:
/// at most 4 ranges being received, one waiting for the reader and one it reads (48 MiB).
const RANGE: usize = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 4;
/// How long a data object without its manifest counts as one being committed.
const JUST_MADE: u64 = 600;

/// Where and how to reach a bucket: what a spec's `stores:` entry says.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    /// `s3://bucket/prefix`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// The secret access key's value (decrypted from the spec's secret); never shown.
    pub secret_access_key: Option<String>,
}

/// A store in an S3 bucket.
pub struct S3Store {
    bucket: Arc<AmazonS3>,
    bucket_name: String,
    prefix: String,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Uploads whose data is written and whose completion waits for [`Store::commit`].
    pending: Mutex<HashMap<String, std::thread::JoinHandle<Result<Upload, String>>>>,
}

type Upload = Box<dyn MultipartUpload>;

pub use crate::spec::parse_s3_url as parse_url;

impl S3Store {
    /// A store for `config`: credentials from it, else from the environment (`AWS_*`, as
    /// the AWS tools read them). Checks nothing over the network.
    pub fn open(config: &S3Config) -> Result<S3Store, BackupError> {
        let (bucket_name, prefix) = parse_url(&config.url).ok_or_else(|| {
            BackupError::Store(format!(
                "`{}` is not an S3 store: write it `s3://BUCKET/PREFIX`",
                config.url
            ))
        })?;
        // reqwest's TLS (rustls without a provider of its own) uses the process's: ring,
        // as every other TLS client of berth's (see engine::docker::transport on why ring).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A request may take up to ten minutes (object_store's default is 30 s): a part
        // grows with a backup, up to 2.5 GiB (see `part_size`), and two go at once.
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket_name)
            .with_config(
                object_store::aws::AmazonS3ConfigKey::Client(
                    object_store::ClientConfigKey::Timeout,
                ),
                "10m",
            );
        if let Some(endpoint) = &config.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &config.region {
            b = b.with_region(region);
        }
        if let Some(id) = &config.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(key) = &config.secret_access_key {
            b = b.with_secret_access_key(key);
        }
        // A few retries with backoff (a store that is down fails the copy within seconds,
        // not after object_store's default three minutes).
        b = b.with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 4,
            retry_timeout: std::time::Duration::from_secs(60),
        });
        let bucket = b.build().map_err(|e| {
            BackupError::Store(format!("`{}`: {}", config.url, scrub(&e.to_string())))
        })?;
        let runtime = super::stream::runtime("berth-s3")
            .map_err(|e| BackupError::Store(format!("`{}`: {e}", config.url)))?;
        Ok(S3Store {
            bucket: Arc::new(bucket),
            bucket_name,
            prefix,
            runtime: Arc::new(runtime),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn run<T: Send, F: std::future::Future<Output = T> + Send>(&self, f: F) -> T {
        run_on(&self.runtime, f)
    }

    fn key(&self, name: &str, file: &str) -> ObjectPath {
        let path = if self.prefix.is_empty() {
            format!("{name}/{file}")
        } else {
            format!("{}/{name}/{file}", self.prefix)
        };
        ObjectPath::from(path)
    }

    fn data(&self, name: &str, id: &str) -> ObjectPath {
        self.key(name, &format!("{id}{DATA}"))
    }

    fn manifest(&self, name: &str, id: &str) -> ObjectPath {
        self.key(name, &format!("{id}{MANIFEST}"))
    }

    fn err(&self, what: &ObjectPath, e: object_store::Error) -> BackupError {
        BackupError::Store(format!(
            "s3://{}/{what}: {}",
            self.bucket_name,
            scrub(&e.to_string())
        ))
    }

    /// The objects under a backup name's prefix: (file name, size, modified seconds).
    fn objects(&self, name: &str) -> Result<Vec<(String, u64, u64)>, BackupError> {
        let dir = self.key(name, "");
        let bucket = self.bucket.clone();
        let listed: Vec<_> = self.run(async move {
            let mut out = Vec::new();
            let mut s = bucket.list(Some(&dir));
            while let Some(meta) = s.next().await {
                out.push(meta.map(|m| {
                    let file = m.location.filename().unwrap_or_default().to_owned();
                    (file, m.size, m.last_modified.timestamp().max(0) as u64)
                }));
            }
            out
        });
        listed
            .into_iter()
            .map(|r| r.map_err(|e| self.err(&self.key(name, ""), e)))
            .collect()
    }

    /// The upload of `name`/`id` this process wrote, finished with (its parts all sent).
    fn take_pending(&self, name: &str, id: &str) -> Option<Result<Upload, String>> {
        let handle = self.pending.lock().ok()?.remove(&format!("{name}/{id}"))?;
        Some(
            handle
                .join()
                .unwrap_or_else(|_| Err("the upload thread failed".into())),
        )
    }
}

/// An error of `object_store` as berth shows it: no credential ever (it names none, but a
/// URL with a signature in its query could appear: the query is cut).
fn scrub(text: &str) -> String {
    text.split_whitespace()
        .map(|w| match w.split_once('?') {
            Some((head, _)) if head.contains("://") => format!("{head}?…"),
            _ => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Store for S3Store {
    fn create(&self, name: &str, id: &str) -> Result<Box<dyn Write + Send>, BackupError> {
        let path = self.data(name, id);
        let bucket = self.bucket.clone();
        let upload = self
            .run(async move { bucket.put_multipart(&path).await })
            .map_err(|e| self.err(&self.data(name, id), e))?;
        // A part is handed over only when the thread takes it: one being filled, at most
        // IN_FLIGHT on the wire.
        let (tx, rx) = sync_channel::<Bytes>(0);
        let failed = Arc::new(Mutex::new(None));
        let runtime = self.runtime.clone();
        let why = failed.clone();
        let handle = std::thread::Builder::new()
            .name("berth-s3-upload".into())
            .spawn(move || upload_parts(runtime, upload, rx, why))
            .map_err(|e| BackupError::Store(format!("an upload thread: {e}")))?;
        if let Ok(mut p) = self.pending.lock() {
            p.insert(format!("{name}/{id}"), handle);
        }
        Ok(Box::new(PartWriter::new(part_size, tx, failed)))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let (name, id) = (&manifest.name, &manifest.id);
        // The data first: its upload completed (once, by the process that wrote it).
        if let Some(upload) = self.take_pending(name, id) {
            let mut upload = upload.map_err(|why| {
                BackupError::Store(format!(
                    "s3://{}/{}: {why}",
                    self.bucket_name,
                    self.data(name, id)
                ))
            })?;
            self.run(async move { upload.complete().await })
                .map_err(|e| self.err(&self.data(name, id), e))?;
        }
        let mut text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        text.push(b'\n');
        let path = self.manifest(name, id);
        let bucket = self.bucket.clone();
        let put = path.clone();
        self.run(async move { bucket.put(&put, PutPayload::from(text)).await })
            .map(|_| ())
            .map_err(|e| self.err(&path, e))
    }

    fn discard(&self, name: &str, id: &str) {
        if let Some(Ok(mut upload)) = self.take_pending(name, id) {
            let _ = self.run(async move { upload.abort().await });
        }
        let _ = self.delete(name, id);
    }

    fn manifest_files(&self, name: &str) -> Result<Vec<String>, BackupError> {
        Ok(self
            .objects(name)?
            .into_iter()
            .map(|(file, _, _)| file)
            .filter(|f| f.ends_with(MANIFEST))
            .collect())
    }

    fn read_manifest(&self, name: &str, file: &str) -> Result<Manifest, String> {
        let path = self.key(name, file);
        let bucket = self.bucket.clone();
        let got = self.run(async move { bucket.get(&path).await?.bytes().await });
        let bytes = got.map_err(|e| format!("it cannot be read ({})", scrub(&e.to_string())))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the manifest does not parse ({e})"))
    }

    fn manifest_place(&self, name: &str, file: &str) -> String {
        format!("s3://{}/{}", self.bucket_name, self.key(name, file))
    }

    fn open(&self, name: &str, id: &str) -> Result<Box<dyn Read + Send>, BackupError> {
        let path = self.data(name, id);
        let bucket = self.bucket.clone();
        let head = path.clone();
        let meta = self
            .run(async move { bucket.head(&head).await })
            .map_err(|e| self.err(&path, e))?;
        let stream = ranges(self.bucket.clone(), path, meta.size, meta.e_tag);
        let reader = download(self.runtime.clone(), "berth-s3-download", stream, 1)
            .map_err(|e| BackupError::Store(format!("a download thread: {e}")))?;
        Ok(Box::new(reader))
    }

    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError> {
        for path in [self.data(name, id), self.manifest(name, id)] {
            let bucket = self.bucket.clone();
            let del = path.clone();
            match self.run(async move { bucket.delete(&del).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&path, e)),
            }
        }
        Ok(())
    }

    fn locate(&self, name: &str, id: &str) -> String {
        format!("s3://{}/{}", self.bucket_name, self.data(name, id))
    }

    fn modified(&self, name: &str, id: &str) -> Option<u64> {
        let path = self.data(name, id);
        let bucket = self.bucket.clone();
        let meta = self.run(async move { bucket.head(&path).await }).ok()?;
        Some(meta.last_modified.timestamp().max(0) as u64)
    }

    fn incomplete(&self, name: &str) -> Result<Vec<Incomplete>, BackupError> {
        let objects = self.objects(name)?;
        Ok(unfinished(
            &objects,
            |f| f.strip_suffix(DATA),
            crate::clock::now(),
            JUST_MADE,
        ))
    }

    fn remove_incomplete(&self, name: &str, id: &str) -> Result<bool, BackupError> {
        if !self.incomplete(name)?.iter().any(|i| i.id == id) {
            return Ok(false);
        }
        let path = self.data(name, id);
        let bucket = self.bucket.clone();
        let del = path.clone();
        self.run(async move { bucket.delete(&del).await })
            .map_err(|e| self.err(&path, e))?;
        Ok(true)
    }
}

/// The bytes of an object of `size` bytes, in order, fetched in ranges of [`RANGE`] bytes
/// with [`RANGES_IN_FLIGHT`] of them requested at once (one GET of a large object is as
/// fast as one connection: object stores serve several at once far faster), each only
/// while the object is still the one `e_tag` names.
fn ranges(
    bucket: Arc<AmazonS3>,
    path: ObjectPath,
    size: u64,
    e_tag: Option<String>,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, String>> {
    let starts = (0..size).step_by(RANGE);
    futures_util::stream::iter(starts)
        .map(move |start| {
            let (bucket, path) = (bucket.clone(), path.clone());
            let options = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(
                    start..(start + RANGE as u64).min(size),
                )),
                if_match: e_tag.clone(),
                ..Default::default()
            };
            // Spawned: the runtime's workers receive the ranges while the reader hashes.
            tokio::spawn(async move { bucket.get_opts(&path, options).await?.bytes().await })
        })
        .buffered(RANGES_IN_FLIGHT)
        .map(|got| match got {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(scrub(&e.to_string())),
            Err(e) => Err(e.to_string()),
        })
        .boxed()
}

/// Sends the parts a [`PartWriter`] fills, at most [`IN_FLIGHT`] at once; hands back the
/// upload, every part sent, for [`Store::commit`] to complete (or the reason it failed,
/// also left in `failed` for the writer to say).
fn upload_parts(
    runtime: Arc<tokio::runtime::Runtime>,
    mut upload: Upload,
    rx: Receiver<Bytes>,
    failed: Arc<Mutex<Option<String>>>,
) -> Result<Upload, String> {
    let mut sending: std::collections::VecDeque<tokio::task::JoinHandle<object_store::Result<()>>> =
        std::collections::VecDeque::new();
    let mut parts = 0usize;
    let fail = |why: String| {
        if let Ok(mut f) = failed.lock() {
            *f = Some(why.clone());
        }
        why
    };
    let wait = |h: tokio::task::JoinHandle<object_store::Result<()>>| -> Result<(), String> {
        match runtime.block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(scrub(&e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    };
    let abort = |upload: &mut Upload, why: String| {
        let _ = runtime.block_on(upload.abort());
        fail(why)
    };
    while let Ok(part) = rx.recv() {
        parts += 1;
        sending.push_back(runtime.spawn(upload.put_part(PutPayload::from(part))));
        if sending.len() >= IN_FLIGHT
            && let Some(h) = sending.pop_front()
            && let Err(why) = wait(h)
        {
            return Err(abort(&mut upload, why));
        }
    }
    if parts == 0 {
        sending.push_back(runtime.spawn(upload.put_part(PutPayload::from(Bytes::new()))));
    }
    while let Some(h) = sending.pop_front() {
        if let Err(why) = wait(h) {
            return Err(abort(&mut upload, why));
        }
    }
    Ok(upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(parse_url("s3://b/p/q/"), Some(("b".into(), "p/q".into())));
        assert_eq!(parse_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_url("s3:///p"), None);
        assert_eq!(parse_url("/srv/b"), None);
    }

    #[test]
    fn parts_fit_s3s_limits_up_to_its_largest_object() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size(0), 5 * MIB as usize);
        assert_eq!(part_size(999), 5 * MIB as usize);
        assert_eq!(part_size(1000), 10 * MIB as usize);
        // S3: at most 10,000 parts, each at most 5 GiB; an object of at most 5 TiB.
        let sizes: Vec<u64> = (0..10_000).map(|n| part_size(n) as u64).collect();
        assert!(sizes.iter().all(|&s| s <= 5 * 1024 * MIB));
        let total: u64 = sizes.iter().sum();
        assert!(total >= 4_990 * 1024 * MIB, "{} GiB", total / 1024 / MIB);
        // A backup that stores 4 GiB needs only the smallest parts.
        let parts_for_4_gib = (4 * 1024 * MIB).div_ceil(5 * MIB);
        assert!(parts_for_4_gib < 1000);
    }

    #[test]
    fn a_signed_url_in_an_error_loses_its_query() {
        let said = scrub("error sending request for url (http://h/b/k?X-Amz-Signature=abc)");
        assert!(!said.contains("abc"), "{said}");
        assert!(said.contains("http://h/b/k?…"), "{said}");
    }
}
