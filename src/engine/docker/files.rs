//! One small file into or out of a container through the archive API (no shell, no exec):
//! the proxy's config goes in this way and is read back for observation. And the calls a
//! container run to completion needs: waiting for it to exit, and signalling one.

use futures_util::StreamExt;

use super::{Engine, EngineError};

/// Files larger than this are not read back (the proxy's config is far smaller).
const MAX_FILE: u64 = 16 << 20;

impl Engine {
    /// Writes `bytes` at the absolute `path` in a container (running or not), with `mode`,
    /// owned by root, making its parent directories. The engine unpacks the archive in one
    /// go: the file is replaced, never seen half-written by nginx's reload.
    pub async fn put_file(
        &self,
        id: &str,
        path: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), EngineError> {
        let archive = file_tar(path, bytes, mode).map_err(|e| EngineError::Call {
            region: self.region.clone(),
            call: "upload to container",
            reason: format!("cannot pack `{path}`: {e}"),
        })?;
        let body = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(hyper::body::Bytes::from(archive))
        });
        self.upload(id, "/", body).await
    }

    /// The file at `path` in a container, `None` when it has none there.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let _request = self.request("read_file");
        let mut stream = self.docker.download_from_container(
            id,
            Some(bollard::query_parameters::DownloadFromContainerOptions {
                path: path.to_owned(),
            }),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(e) => return Err(self.call_error("download from container", e)),
            }
            if archive.len() as u64 > MAX_FILE + 4096 {
                break;
            }
        }
        let bad = |reason: String| EngineError::Call {
            region: self.region.clone(),
            call: "download from container",
            reason,
        };
        let mut entries = tar::Archive::new(archive.as_slice());
        let entries = entries
            .entries()
            .map_err(|e| bad(format!("not an archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("not an archive: {e}")))?;
            if entry.header().entry_type().is_file() {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut entry, MAX_FILE),
                    &mut out,
                )
                .map_err(|e| bad(format!("reading `{path}`: {e}")))?;
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Sends `signal` (e.g. `HUP`) to a running container's main process.
    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let _request = self.request("signal");
        self.docker
            .kill_container(
                id,
                Some(bollard::query_parameters::KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
            .map_err(|e| self.call_error("signal container", e))
    }

    /// The host ids of a running container's processes (`docker top`).
    pub async fn pids(&self, id: &str) -> Result<Vec<String>, EngineError> {
        let _request = self.request("pids");
        let top = self
            .docker
            .top_processes(id, None::<bollard::query_parameters::TopOptions>)
            .await
            .map_err(|e| self.call_error("list processes", e))?;
        let column = top
            .titles
            .unwrap_or_default()
            .iter()
            .position(|t| t == "PID")
            .unwrap_or(1);
        Ok(top
            .processes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|row| row.get(column).cloned())
            .collect())
    }

    /// Sends SIGHUP to a running nginx and waits (at most `limit`) until it has reloaded:
    /// a new worker runs and the workers from before have finished what they were serving
    /// and exited (only the master is left of the processes there were). Says whether it
    /// saw that happen.
    pub async fn reload_nginx(
        &self,
        id: &str,
        limit: std::time::Duration,
    ) -> Result<bool, EngineError> {
        let before = self.pids(id).await?;
        self.signal(id, "HUP").await?;
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.pids(id).await?;
            let fresh = now.iter().any(|p| !before.contains(p));
            let left = now.iter().filter(|p| before.contains(p)).count();
            if fresh && left <= 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits (at most `limit`) for a started container to exit; its exit code, `None` when
    /// it still ran at the limit.
    pub async fn wait_exit(
        &self,
        id: &str,
        limit: std::time::Duration,
    ) -> Result<Option<i64>, EngineError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let state = self.state(id).await?;
            if !state.running && !state.restarting {
                return Ok(Some(state.exit_code));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A tar archive holding `path` (relative to `/`) with its parent directories.
fn file_tar(path: &str, bytes: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let relative = path.trim_start_matches('/');
    let mut b = tar::Builder::new(Vec::new());
    let mut parents: Vec<&str> = Vec::new();
    let mut at = 0;
    while let Some(i) = relative[at..].find('/') {
        parents.push(&relative[..at + i]);
        at += i + 1;
    }
    for dir in parents {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(bytes.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, relative, bytes)?;
    b.into_inner()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_archive_holds_its_parents_then_the_file() {
        let t = super::file_tar("/etc/berth/nginx.conf", b"events {}\n", 0o644).unwrap();
        let mut a = tar::Archive::new(t.as_slice());
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc/", "etc/berth/", "etc/berth/nginx.conf"]);
    }
}
