//! [`S3Store`]: a store in a bucket of any S3-compatible object store, through
//! `object_store`. Each backup name is a prefix of backups laid out as in a directory
//! store, but for the data: `PREFIX/NAME/ID.manifest.json`, and the data's bytes in
//! objects of [`SEGMENT`] bytes each (the last one smaller), in order:
//! `PREFIX/NAME/ID.tar.zst.age.d/00000000`, `…/00000001`, … Concatenated they are the
//! `ID.tar.zst.age` of a directory store, byte for byte.
//!
//! Why segments, not one object: each segment is uploaded with one PUT while the pipeline
//! writes the next ones, and read back (its SHA-256 taken, in order, into the hash of the
//! whole) as soon as its PUT is done. The copy is thus read back whole while the backup is
//! still being made, and nothing is left to read back but its last segments when the
//! pipeline ends; a multipart upload can only be read once it is completed, and a
//! completion may make the server copy every part again. Memory stays bounded: one
//! segment being filled and at most [`IN_FLIGHT`] on the wire (24 MiB), whatever the size;
//! there is no limit on a backup's size (a multipart upload ends at 10,000 parts).
//!
//! The manifest is written only once every segment is in and read back, and a listing
//! shows the bucket still holds them as written ([`Store::commit`]). A backup killed
//! midway leaves segments without a manifest: [`Store::incomplete`] lists them once they
//! are a day old ([`JUST_MADE`]), and the next verified run or `prune` removes them. A
//! delete takes the manifest first. Data written as one object (`PREFIX/NAME/ID.tar.zst.age`,
//! by berth before segments) is still read and deleted.
//!
//! `object_store` is async; berth's stores are read and written from plain threads and
//! from inside the project's runtime alike. Every call therefore runs on a thread of its
//! own against the store's own runtime ([`S3Store::run`]), and the data flows to and from
//! it through bounded channels.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use super::stream::{PartWriter, download, run_on};
use segments::{Piece, ReadBack, fetch, segment_name, segment_path, upload_segments};

mod segments;
use super::{DATA, Incomplete, MANIFEST, Store, unfinished};
use crate::archive::{BackupError, Manifest};

/// The size of a data segment (the last one of a backup holds what is left).
pub const SEGMENT: usize = 8 * 1024 * 1024;
/// The name of the folder of a backup's data segments, after its id.
const SEGMENTS: &str = ".tar.zst.age.d";
/// How many segments are uploaded at once.
const IN_FLIGHT: usize = 2;
/// The size of the ranges a data object written whole is read in, and how many ranges (or
/// segments) are requested at once: at most 4 being received, one waiting for the reader
/// and one it reads (48 MiB).
const RANGE: usize = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 4;
/// How long data without its manifest counts as being written: a day. A backup's
/// segments are visible while it is made (and another host, or a clock that is ahead, may
/// look at them): a source that stalls for hours (a dump waiting on a lock) must not have
/// its first segments taken for what a killed run left.
const JUST_MADE: u64 = 24 * 3600;

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
    /// Data being written by this process: the thread that uploads its segments and
    /// reads them back, joined by [`Store::commit`].
    pending: Mutex<HashMap<String, std::thread::JoinHandle<Result<ReadBack, String>>>>,
    /// Data this process wrote and committed: what was read back of it, for
    /// [`Store::read_back_while_written`].
    committed: Mutex<HashMap<String, ReadBack>>,
}

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
        // A request may take up to ten minutes (object_store's default is 30 s): a slow
        // link still sends a segment, two at once.
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
            committed: Mutex::new(HashMap::new()),
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

    /// Where data written as one object is (by berth before segments).
    fn data(&self, name: &str, id: &str) -> ObjectPath {
        self.key(name, &format!("{id}{DATA}"))
    }

    /// The folder of a backup's data segments.
    fn segments_dir(&self, name: &str, id: &str) -> ObjectPath {
        self.key(name, &format!("{id}{SEGMENTS}"))
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

    /// The objects right under a backup name's prefix (file name, size, modified
    /// seconds), and the ids whose data is in segments.
    fn listing(&self, name: &str) -> Result<Listing, BackupError> {
        let dir = self.key(name, "");
        let bucket = self.bucket.clone();
        let at = dir.clone();
        let listed = self
            .run(async move { bucket.list_with_delimiter(Some(&at)).await })
            .map_err(|e| self.err(&dir, e))?;
        let objects = listed
            .objects
            .into_iter()
            .map(|m| {
                let file = m.location.filename().unwrap_or_default().to_owned();
                (file, m.size, m.last_modified.timestamp().max(0) as u64)
            })
            .collect();
        let segmented = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_suffix(SEGMENTS).map(str::to_owned))
            .collect();
        Ok((objects, segmented))
    }

    /// The objects in a backup's segments folder, in their numbers' order, whatever they
    /// are (none: its data is one object, or not there).
    fn segment_objects(&self, name: &str, id: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        let dir = self.segments_dir(name, id);
        let bucket = self.bucket.clone();
        let at = dir.clone();
        let listed: object_store::Result<Vec<ObjectMeta>> = self.run(async move {
            use futures_util::TryStreamExt;
            bucket.list(Some(&at)).try_collect().await
        });
        let mut listed = listed.map_err(|e| self.err(&dir, e))?;
        // Eight digits sort as numbers do; past 10^8 segments (800 TB) the longer last.
        listed.sort_by(|a, b| {
            let key = |m: &ObjectMeta| (m.location.as_ref().len(), m.location.clone());
            key(a).cmp(&key(b))
        });
        Ok(listed)
    }

    /// A backup's data segments, in order (none: its data is one object, or not there).
    /// A gap in their numbers is damage.
    fn segments(&self, name: &str, id: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        let listed = self.segment_objects(name, id)?;
        let dir = self.segments_dir(name, id);
        for (n, m) in listed.iter().enumerate() {
            if m.location.filename() != Some(segment_name(n as u64).as_str()) {
                return Err(BackupError::Damaged {
                    what: format!("s3://{}/{dir}/", self.bucket_name),
                    why: format!(
                        "its segment {} is missing (found `{}` in its place)",
                        segment_name(n as u64),
                        m.location.filename().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(listed)
    }

    /// Deletes every object of a backup's data, segments or one object.
    fn delete_data(&self, name: &str, id: &str) -> Result<(), BackupError> {
        let dir = self.segments_dir(name, id);
        let bucket = self.bucket.clone();
        let at = dir.clone();
        let deleted: object_store::Result<()> = self.run(async move {
            use futures_util::TryStreamExt;
            let paths = bucket.list(Some(&at)).map_ok(|m| m.location).boxed();
            bucket
                .delete_stream(paths)
                .try_for_each(|_| async { Ok(()) })
                .await
        });
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err(&dir, e)),
        }
        let path = self.data(name, id);
        let bucket = self.bucket.clone();
        let del = path.clone();
        match self.run(async move { bucket.delete(&del).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    /// Before a manifest is written over data this process wrote: what was read back of
    /// it is the manifest's data (size and SHA-256), and the bucket still holds exactly the
    /// segments the PUTs left (names, ETags, sizes), none gone or changed since they were
    /// read back and none added.
    fn still_as_written(&self, manifest: &Manifest, read: &ReadBack) -> Result<(), BackupError> {
        let (name, id) = (&manifest.name, &manifest.id);
        let damaged = |why: String| BackupError::Damaged {
            what: self.locate(name, id),
            why,
        };
        if read.bytes != manifest.stored_bytes || read.sha256 != manifest.stored_sha256 {
            return Err(damaged(format!(
                "the bucket gave back {} bytes with SHA-256 {}, the backup is {} bytes with {}",
                read.bytes,
                read.sha256.get(..16).unwrap_or("?"),
                manifest.stored_bytes,
                manifest.stored_sha256.get(..16).unwrap_or("?")
            )));
        }
        let listed = self.segments(name, id)?;
        let same = listed.len() == read.segments.len()
            && listed
                .iter()
                .zip(&read.segments)
                .all(|(m, (path, e_tag, size))| {
                    m.location == *path
                        && m.size == *size
                        && (e_tag.is_none() || m.e_tag.is_none() || m.e_tag == *e_tag)
                });
        if !same {
            return Err(damaged(format!(
                "the bucket holds {} segment(s) of {} bytes, not the {} written and read back (changed or deleted meanwhile)",
                listed.len(),
                listed.iter().map(|m| m.size).sum::<u64>(),
                read.segments.len()
            )));
        }
        Ok(())
    }

    /// The data of `name`/`id` this process wrote, finished with: every segment sent and
    /// read back (or why not).
    fn take_pending(&self, name: &str, id: &str) -> Option<Result<ReadBack, String>> {
        let handle = self.pending.lock().ok()?.remove(&format!("{name}/{id}"))?;
        Some(
            handle
                .join()
                .unwrap_or_else(|_| Err("the upload thread failed".into())),
        )
    }
}

/// The objects right under a backup name's prefix (file name, size, modified seconds), and
/// the ids whose data is in segments.
type Listing = (Vec<(String, u64, u64)>, Vec<String>);

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
        // A segment is handed over only when the thread takes it: one being filled, at
        // most IN_FLIGHT on the wire.
        let (tx, rx) = sync_channel::<Bytes>(0);
        let failed = Arc::new(Mutex::new(None));
        let (runtime, bucket) = (self.runtime.clone(), self.bucket.clone());
        let dir = self.segments_dir(name, id);
        let why = failed.clone();
        let handle = std::thread::Builder::new()
            .name("berth-s3-upload".into())
            .spawn(move || upload_segments(&runtime, bucket, dir, rx, why))
            .map_err(|e| BackupError::Store(format!("an upload thread: {e}")))?;
        if let Ok(mut p) = self.pending.lock() {
            p.insert(format!("{name}/{id}"), handle);
        }
        Ok(Box::new(PartWriter::new(|_| SEGMENT, tx, failed)))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let (name, id) = (&manifest.name, &manifest.id);
        // The data first: every segment sent and read back (once, by the process that
        // wrote it).
        if let Some(done) = self.take_pending(name, id) {
            let read = done.map_err(|why| {
                BackupError::Store(format!(
                    "s3://{}/{}/: {why}",
                    self.bucket_name,
                    self.segments_dir(name, id)
                ))
            })?;
            self.still_as_written(manifest, &read)?;
            if let Ok(mut c) = self.committed.lock() {
                c.insert(format!("{name}/{id}"), read);
            }
            // Every segment in, no manifest yet: what a kill leaves here (tests).
            crate::archive::helpers::fault_point(
                crate::archive::helpers::ENV_FAULT_BACKUP_KILL,
                "copy-segments",
            );
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

    fn read_back_while_written(&self, name: &str, id: &str) -> Option<(u64, String)> {
        let read = self
            .committed
            .lock()
            .ok()?
            .remove(&format!("{name}/{id}"))?;
        Some((read.bytes, read.sha256))
    }

    fn discard(&self, name: &str, id: &str) {
        let _ = self.take_pending(name, id);
        if let Ok(mut c) = self.committed.lock() {
            c.remove(&format!("{name}/{id}"));
        }
        let _ = self.delete(name, id);
    }

    fn manifest_files(&self, name: &str) -> Result<Vec<String>, BackupError> {
        Ok(self
            .listing(name)?
            .0
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
        let segments = self.segments(name, id)?;
        let pieces: Vec<Piece> = if segments.is_empty() {
            // Written as one object: read in ranges.
            let path = self.data(name, id);
            let bucket = self.bucket.clone();
            let head = path.clone();
            let meta = self
                .run(async move { bucket.head(&head).await })
                .map_err(|e| self.err(&path, e))?;
            (0..meta.size)
                .step_by(RANGE)
                .map(|start| Piece {
                    path: path.clone(),
                    range: Some(start..(start + RANGE as u64).min(meta.size)),
                    e_tag: meta.e_tag.clone(),
                })
                .collect()
        } else {
            segments
                .into_iter()
                .map(|m| Piece {
                    path: m.location,
                    range: None,
                    e_tag: m.e_tag,
                })
                .collect()
        };
        let stream = fetch(self.bucket.clone(), pieces);
        let reader = download(self.runtime.clone(), "berth-s3-download", stream, 1)
            .map_err(|e| BackupError::Store(format!("a download thread: {e}")))?;
        Ok(Box::new(reader))
    }

    /// The manifest first, then the data: a delete cut short (many requests for many
    /// segments) leaves data without a manifest, which `prune` removes as incomplete; never
    /// a manifest over part of its data.
    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError> {
        let path = self.manifest(name, id);
        let bucket = self.bucket.clone();
        let del = path.clone();
        match self.run(async move { bucket.delete(&del).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err(&path, e)),
        }
        self.delete_data(name, id)
    }

    fn locate(&self, name: &str, id: &str) -> String {
        format!("s3://{}/{}/", self.bucket_name, self.segments_dir(name, id))
    }

    /// When the first segment was written (close to when the backup began), or the one
    /// object of data written whole.
    fn modified(&self, name: &str, id: &str) -> Option<u64> {
        let first = segment_path(&self.segments_dir(name, id), 0);
        let whole = self.data(name, id);
        let bucket = self.bucket.clone();
        let meta = self.run(async move {
            match bucket.head(&first).await {
                Err(object_store::Error::NotFound { .. }) => bucket.head(&whole).await,
                other => other,
            }
        });
        Some(meta.ok()?.last_modified.timestamp().max(0) as u64)
    }

    fn incomplete(&self, name: &str) -> Result<Vec<Incomplete>, BackupError> {
        let (mut objects, segmented) = self.listing(name)?;
        // Data in segments counts as one file: their sizes summed, the newest's time.
        for id in segmented {
            if objects
                .iter()
                .any(|(f, _, _)| *f == format!("{id}{MANIFEST}"))
            {
                continue;
            }
            // Whatever is there (a gap in the numbers too): what berth began.
            let segments = self.segment_objects(name, &id)?;
            let bytes = segments.iter().map(|m| m.size).sum();
            let newest = segments.iter().map(|m| m.last_modified).max();
            let modified = newest.map_or(0, |t| t.timestamp().max(0) as u64);
            objects.push((format!("{id}{DATA}"), bytes, modified));
        }
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
        self.delete_data(name, id)?;
        Ok(true)
    }
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
    fn a_segment_is_under_its_folder_whatever_the_prefix() {
        let store = S3Store::open(&S3Config {
            url: "s3://b/team~a [x]".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        })
        .expect("a store of any prefix opens");
        let dir = store.segments_dir("db", "20261207T000000.000Z-abcdef");
        assert!(dir.as_ref().contains("team%7Ea"), "{dir}");
        let path = segment_path(&dir, 1);
        assert_eq!(path.as_ref(), format!("{}/00000001", dir.as_ref()));
        assert_eq!(path.prefix_match(&dir).map(|p| p.count()), Some(1));
    }

    #[test]
    fn a_signed_url_in_an_error_loses_its_query() {
        let said = scrub("error sending request for url (http://h/b/k?X-Amz-Signature=abc)");
        assert!(!said.contains("abc"), "{said}");
        assert!(said.contains("http://h/b/k?…"), "{said}");
    }
}
