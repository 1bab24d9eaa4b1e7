//! `berth logs POD`: the output of every instance of a pod (each replica, in each region),
//! interleaved as it arrives, each line prefixed with the instance, as `docker compose
//! logs` does. Read-only: no lock, no plan.

use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;

use super::OpError;
use crate::engine::names::container_name_of;
use crate::graph::{Address, Kind};

/// What `berth logs` was asked for.
#[derive(Clone, Debug, Default)]
pub struct LogsRequest {
    pub pod: String,
    /// Keep printing what the containers write next, until they stop (or Ctrl-C).
    pub follow: bool,
    /// Only output since this long ago.
    pub since: Option<std::time::Duration>,
    /// Only the last N lines of each instance.
    pub tail: Option<usize>,
}

/// Writes the pod's output to `out`, and to `notes` a line for each instance that has no
/// container.
pub fn logs(
    path: &Path,
    state_dir: Option<&Path>,
    request: &LogsRequest,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), OpError> {
    let project = crate::project::Project::open(path, state_dir)?;
    let spec = &project.spec;
    let name = spec.project.value.as_str();
    if !spec.pods.contains(&request.pod) {
        return Err(no_such_pod(path, spec, &request.pod));
    }
    let instances: Vec<Address> = crate::resources::desired(spec)
        .into_iter()
        .map(|r| r.address)
        .filter(|a| a.kind == Kind::Pod && *a.name == *request.pod)
        .collect();
    let since = request.since.map_or(0, |d| {
        i64::try_from(crate::clock::now().saturating_sub(d.as_secs())).unwrap_or(0)
    });
    project.runtime.block_on(async {
        // The prefix: `api`, `api[1]`, `api[1]@fra`, padded to one width.
        let shown = |a: &Address| a.to_string().trim_start_matches("pod.").to_owned();
        let width = instances.iter().map(|a| shown(a).len()).max().unwrap_or(0);
        let mut streams = Vec::new();
        for a in &instances {
            let region = a.region.as_deref().unwrap_or_else(|| spec.primary_region());
            let Some(engine) = project.engines.get(region) else {
                continue;
            };
            let container = container_name_of(name, a);
            let Some(c) = engine.container_named(&container).await? else {
                let _ = writeln!(notes, "{}: no container `{container}`", shown(a));
                continue;
            };
            let prefix = format!("{:<width$} | ", shown(a));
            // Each chunk, then the end (`None`), which lets out a last unfinished line.
            let stream = engine
                .log_stream(&c.id, since, request.tail, request.follow)
                .map(Some)
                .chain(futures_util::stream::once(std::future::ready(None)))
                .scan(Lines::default(), move |lines, chunk| {
                    std::future::ready(Some(match chunk {
                        Some(Ok(bytes)) => Ok(lines.push(&prefix, &bytes)),
                        Some(Err(e)) => Err(e),
                        None => Ok(lines.finish(&prefix)),
                    }))
                });
            streams.push(stream.boxed());
        }
        let mut all = futures_util::stream::select_all(streams);
        while let Some(text) = all.next().await {
            let text = text?;
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                break; // `berth logs api | head`: the reader is gone.
            }
        }
        Ok::<_, OpError>(())
    })
}

/// The refusal of a pod name the spec does not have, naming those it has.
pub(super) fn no_such_pod(path: &Path, spec: &crate::spec::Spec, pod: &str) -> OpError {
    let pods: Vec<&str> = spec.pods.names().collect();
    OpError::Refused {
        message: format!("`{}` has no pod `{pod}`", path.display()),
        help: format!("name one of the spec's pods: {}", pods.join(", ")),
    }
}

/// Splits an instance's output into lines (a chunk may end mid-line, or hold several).
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The complete lines of `chunk` (with what came before it), each prefixed.
    fn push(&mut self, prefix: &str, chunk: &[u8]) -> String {
        self.partial.extend_from_slice(chunk);
        let mut out = String::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            out.push_str(prefix);
            out.push_str(&String::from_utf8_lossy(&line));
        }
        out
    }

    /// What is left at the end, as a line of its own.
    fn finish(&mut self, prefix: &str) -> String {
        if self.partial.is_empty() {
            return String::new();
        }
        let rest = std::mem::take(&mut self.partial);
        format!("{prefix}{}\n", String::from_utf8_lossy(&rest))
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_are_prefixed_whole_however_the_chunks_fall() {
        let mut l = Lines::default();
        assert_eq!(l.push("a | ", b"one\ntw"), "a | one\n");
        assert_eq!(l.push("a | ", b"o\n\nthree"), "a | two\na | \n");
        assert_eq!(l.push("a | ", b"\n"), "a | three\n");
        assert_eq!(l.finish("a | "), "");
        assert_eq!(l.push("a | ", b"last, unfinished"), "");
        assert_eq!(l.finish("a | "), "a | last, unfinished\n");
    }
}
