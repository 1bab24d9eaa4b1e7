//! [`SftpStore`]: a store in a directory of another machine, reached over SFTP through the
//! system's `ssh` (its config, agent, keys and `known_hosts`, with `BatchMode=yes`: berth
//! never prompts), as `ssh://` engines are: `ssh -s HOST sftp`, and the SFTP protocol over
//! its stdin and stdout (`openssh-sftp-client`). Laid out as a directory store is
//! (`PATH/NAME/ID.tar.zst.age`, `…/ID.manifest.json`).
//!
//! The data is written to `.ID.tar.zst.age.part` while the pipeline makes it, renamed to its
//! name by [`Store::commit`] just before the manifest is written (to a temporary name, then
//! renamed over: atomic with the `posix-rename` extension OpenSSH's server has). A backup
//! killed midway leaves only a `.part` file, which `prune` removes once it is old.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use openssh_sftp_client::file::TokioCompatFile;
use openssh_sftp_client::metadata::Permissions;
use openssh_sftp_client::{Sftp, SftpOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::{PartWriter, download, run_on};
use super::{DATA, Incomplete, MANIFEST, Store, unfinished};
use crate::archive::{BackupError, Manifest};

/// The size of a chunk handed to the upload (and of a read).
const CHUNK: usize = 1024 * 1024;
/// How long a `.part` file (or data without its manifest) counts as one being written.
const JUST_MADE: u64 = 600;
const PART: &str = ".part";
/// The mode of the files berth writes there (its directories are 0700).
const FILE_MODE: u16 = 0o600;

/// `sftp://[USER@]HOST[:PORT]/PATH` split into the ssh address (`ssh://…`) and the path.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let (host, path) = crate::spec::parse_sftp_url(url)?;
    let ssh = format!("ssh://{host}");
    crate::engine::docker::transport::ssh_parts(&ssh)?;
    Some((ssh, path))
}

/// A store in a directory reached over SFTP.
pub struct SftpStore {
    shown: String,
    root: String,
    runtime: Arc<tokio::runtime::Runtime>,
    sftp: Arc<Sftp>,
    /// The ssh process: killed when the store goes.
    _ssh: tokio::process::Child,
    /// Uploads this process wrote, whose `.part` file becomes the data at commit.
    pending: Mutex<HashMap<String, std::thread::JoinHandle<Result<(), String>>>>,
}

impl SftpStore {
    /// Connects (one ssh process for the store's life) and checks that the directory can
    /// be made.
    pub fn open(url: &str) -> Result<SftpStore, BackupError> {
        let fail = |why: String| BackupError::Store(format!("`{url}`: {why}"));
        let (ssh, root) = parse_url(url)
            .ok_or_else(|| fail("not an sftp://[USER@]HOST[:PORT]/PATH address".into()))?;
        let Some((user, host, port)) = crate::engine::docker::transport::ssh_parts(&ssh) else {
            return Err(fail("not an sftp://[USER@]HOST[:PORT]/PATH address".into()));
        };
        let runtime =
            Arc::new(super::stream::runtime("berth-sftp").map_err(|e| fail(e.to_string()))?);
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30"]);
        if let Some(user) = &user {
            cmd.arg("-l").arg(user);
        }
        if let Some(port) = port {
            cmd.arg("-p").arg(port.to_string());
        }
        cmd.args(["-s", "--", &host, "sftp"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let (child, sftp) = run_on(&runtime, async move {
            let mut child = cmd.spawn().map_err(|e| format!("cannot run `ssh`: {e}"))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("ssh started without its pipes".to_owned());
            };
            match Sftp::new(stdin, stdout, SftpOptions::new()).await {
                Ok(sftp) => Ok((child, sftp)),
                Err(e) => {
                    // What ssh said is the reason (a host key, a refused key).
                    let _ = child.kill().await;
                    let mut said = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut said).await;
                    }
                    let said = said.trim();
                    Err(if said.is_empty() {
                        format!("the SFTP session did not start: {e}")
                    } else {
                        format!("ssh: {said}")
                    })
                }
            }
        })
        .map_err(fail)?;
        Ok(SftpStore {
            shown: url.trim_end_matches('/').to_owned(),
            root,
            runtime,
            sftp: Arc::new(sftp),
            _ssh: child,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn run<T: Send, F: std::future::Future<Output = T> + Send>(&self, f: F) -> T {
        run_on(&self.runtime, f)
    }

    fn dir(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    fn data(&self, name: &str, id: &str) -> String {
        format!("{}/{id}{DATA}", self.dir(name))
    }

    fn part(&self, name: &str, id: &str) -> String {
        format!("{}/.{id}{DATA}{PART}", self.dir(name))
    }

    fn manifest(&self, name: &str, id: &str) -> String {
        format!("{}/{id}{MANIFEST}", self.dir(name))
    }

    fn err(&self, path: &str, e: impl std::fmt::Display) -> BackupError {
        let at = path.strip_prefix(&self.root).unwrap_or(path);
        BackupError::Store(format!("{}{at}: {e}", self.shown))
    }

    /// Makes the store's directory and `name`'s in it (each that is missing, 0700).
    fn make_dirs(&self, name: &str) -> Result<(), BackupError> {
        let target = self.dir(name);
        let sftp = self.sftp.clone();
        let made = self.run(async move {
            let mut fs = sftp.fs();
            let mut at = String::new();
            for part in target.split('/').filter(|p| !p.is_empty()) {
                at.push('/');
                at.push_str(part);
                if fs.metadata(&at).await.is_err() {
                    let mut b = fs.dir_builder();
                    b.permissions(Permissions::from(0o700u16));
                    if let Err(e) = b.create(&at).await
                        && fs.metadata(&at).await.is_err()
                    {
                        return Err((at, e.to_string()));
                    }
                }
            }
            Ok(())
        });
        made.map_err(|(at, why)| self.err(&at, why))
    }

    /// The entries of `name`'s directory: (file name, size, modified seconds).
    fn entries(&self, name: &str) -> Result<Vec<(String, u64, u64)>, BackupError> {
        let dir = self.dir(name);
        let sftp = self.sftp.clone();
        let listed = self.run(async move {
            let mut fs = sftp.fs();
            let opened = match fs.open_dir(&dir).await {
                Ok(d) => d,
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e.to_string()),
            };
            let mut out = Vec::new();
            let mut read = std::pin::pin!(opened.read_dir());
            while let Some(entry) = read.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                let meta = entry.metadata();
                out.push((
                    entry.filename().to_string_lossy().into_owned(),
                    meta.len().unwrap_or(0),
                    meta.modified().map_or(0, |t| t.as_duration().as_secs()),
                ));
            }
            Ok(out)
        });
        listed.map_err(|why| self.err(&self.dir(name), why))
    }

    fn read_small(&self, path: &str) -> Result<Vec<u8>, String> {
        let sftp = self.sftp.clone();
        let path = path.to_owned();
        self.run(async move {
            sftp.fs()
                .read(&path)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    }

    fn remove(&self, path: &str) -> Result<(), BackupError> {
        let sftp = self.sftp.clone();
        let p = path.to_owned();
        match self.run(async move { sftp.fs().remove_file(&p).await }) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), BackupError> {
        let sftp = self.sftp.clone();
        let (f, t) = (from.to_owned(), to.to_owned());
        self.run(async move { sftp.fs().rename(&f, &t).await })
            .map_err(|e| self.err(to, e))
    }

    fn take_pending(&self, name: &str, id: &str) -> Option<Result<(), String>> {
        let handle = self.pending.lock().ok()?.remove(&format!("{name}/{id}"))?;
        Some(
            handle
                .join()
                .unwrap_or_else(|_| Err("the upload thread failed".into())),
        )
    }
}

/// The id of a data file: `ID.tar.zst.age`, or `.ID.tar.zst.age.part` (one cut short while
/// it was written).
fn data_id(f: &str) -> Option<&str> {
    f.strip_prefix('.')
        .and_then(|f| f.strip_suffix(PART))
        .unwrap_or(f)
        .strip_suffix(DATA)
}

fn is_not_found(e: &openssh_sftp_client::Error) -> bool {
    use openssh_sftp_client::error::SftpErrorKind;
    matches!(
        e,
        openssh_sftp_client::Error::SftpError(SftpErrorKind::NoSuchFile, _)
    )
}

impl Store for SftpStore {
    fn create(&self, name: &str, id: &str) -> Result<Box<dyn Write + Send>, BackupError> {
        self.make_dirs(name)?;
        let path = self.part(name, id);
        let sftp = self.sftp.clone();
        let p = path.clone();
        let file = self
            .run(async move {
                let mut o = sftp.options();
                o.write(true).create(true).truncate(true);
                let mut file = o.open(&p).await?;
                // The owner's only, whatever the server's umask (as on the host's store). A
                // server that refuses to set modes (some managed SFTP services do) keeps its
                // own: the data is encrypted either way, and the backup goes on.
                let _ = file.set_permissions(Permissions::from(FILE_MODE)).await;
                Ok::<_, openssh_sftp_client::Error>(file)
            })
            .map_err(|e| self.err(&path, e))?;
        let (tx, rx) = sync_channel::<Bytes>(2);
        let failed = Arc::new(Mutex::new(None));
        let why = failed.clone();
        let runtime = self.runtime.clone();
        let handle = std::thread::Builder::new()
            .name("berth-sftp-upload".into())
            .spawn(move || {
                let done: Result<(), String> = runtime.block_on(async move {
                    // Flushed: every write answered by the server (the handle closes when
                    // it goes).
                    let mut out = Box::pin(TokioCompatFile::new(file));
                    while let Ok(chunk) = rx.recv() {
                        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
                    }
                    out.flush().await.map_err(|e| e.to_string())
                });
                if let Err(e) = &done
                    && let Ok(mut f) = why.lock()
                {
                    *f = Some(e.clone());
                }
                done
            })
            .map_err(|e| BackupError::Store(format!("an upload thread: {e}")))?;
        if let Ok(mut p) = self.pending.lock() {
            p.insert(format!("{name}/{id}"), handle);
        }
        Ok(Box::new(PartWriter::new(|_| CHUNK, tx, failed)))
    }

    fn commit(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let (name, id) = (&manifest.name, &manifest.id);
        if let Some(done) = self.take_pending(name, id) {
            done.map_err(|why| self.err(&self.part(name, id), why))?;
            self.rename(&self.part(name, id), &self.data(name, id))?;
        }
        let mut text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        text.push(b'\n');
        let tmp = format!("{}/.{id}{MANIFEST}.tmp", self.dir(name));
        let sftp = self.sftp.clone();
        let t = tmp.clone();
        self.run(async move {
            let mut fs = sftp.fs();
            fs.write(&t, &text).await?;
            // As for the data: a refusal leaves the server's mode.
            let _ = fs.set_permissions(&t, Permissions::from(FILE_MODE)).await;
            Ok::<_, openssh_sftp_client::Error>(())
        })
        .map_err(|e| self.err(&tmp, e))?;
        self.rename(&tmp, &self.manifest(name, id))
    }

    fn discard(&self, name: &str, id: &str) {
        let _ = self.take_pending(name, id);
        let _ = self.remove(&self.part(name, id));
        let _ = self.delete(name, id);
    }

    fn manifest_files(&self, name: &str) -> Result<Vec<String>, BackupError> {
        Ok(self
            .entries(name)?
            .into_iter()
            .map(|(file, _, _)| file)
            .filter(|f| !f.starts_with('.') && f.ends_with(MANIFEST))
            .collect())
    }

    fn read_manifest(&self, name: &str, file: &str) -> Result<Manifest, String> {
        let bytes = self
            .read_small(&format!("{}/{file}", self.dir(name)))
            .map_err(|e| format!("it cannot be read ({e})"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the manifest does not parse ({e})"))
    }

    fn manifest_place(&self, name: &str, file: &str) -> String {
        format!("{}/{name}/{file}", self.shown)
    }

    fn open(&self, name: &str, id: &str) -> Result<Box<dyn Read + Send>, BackupError> {
        let path = self.data(name, id);
        let sftp = self.sftp.clone();
        let p = path.clone();
        let file = self
            .run(async move { sftp.open(&p).await })
            .map_err(|e| self.err(&path, e))?;
        // The file read in chunks until its end (an empty read).
        let input = Box::pin(TokioCompatFile::new(file));
        let stream = futures_util::stream::unfold(Some(input), |input| async move {
            let mut input = input?;
            let mut buf = BytesMut::zeroed(CHUNK);
            match input.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf.freeze()), Some(input)))
                }
                Err(e) => Some((Err(e.to_string()), None)),
            }
        })
        .boxed();
        let reader = download(self.runtime.clone(), "berth-sftp-download", stream, 4)
            .map_err(|e| BackupError::Store(format!("a download thread: {e}")))?;
        Ok(Box::new(reader))
    }

    fn delete(&self, name: &str, id: &str) -> Result<(), BackupError> {
        self.remove(&self.data(name, id))?;
        self.remove(&self.manifest(name, id))
    }

    fn locate(&self, name: &str, id: &str) -> String {
        format!("{}/{name}/{id}{DATA}", self.shown)
    }

    fn modified(&self, name: &str, id: &str) -> Option<u64> {
        let sftp = self.sftp.clone();
        let path = self.data(name, id);
        let meta = self
            .run(async move { sftp.fs().metadata(&path).await })
            .ok()?;
        Some(meta.modified()?.as_duration().as_secs())
    }

    fn incomplete(&self, name: &str) -> Result<Vec<Incomplete>, BackupError> {
        let entries = self.entries(name)?;
        Ok(unfinished(
            &entries,
            data_id,
            crate::clock::now(),
            JUST_MADE,
        ))
    }

    fn remove_incomplete(&self, name: &str, id: &str) -> Result<bool, BackupError> {
        if !self.incomplete(name)?.iter().any(|i| i.id == id) {
            return Ok(false);
        }
        self.remove(&self.part(name, id))?;
        self.remove(&self.data(name, id))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_an_ssh_address_and_a_path() {
        assert_eq!(
            parse_url("sftp://backup@vault:2222/srv/shop/"),
            Some(("ssh://backup@vault:2222".into(), "/srv/shop".into()))
        );
        assert_eq!(
            parse_url("sftp://vault/b"),
            Some(("ssh://vault".into(), "/b".into()))
        );
        assert_eq!(parse_url("sftp://vault/"), None);
        assert_eq!(parse_url("sftp://vault"), None);
        assert_eq!(parse_url("sftp://-oProxyCommand=x/b"), None);
    }
}
