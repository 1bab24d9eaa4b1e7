//! The engine's errors, the refusals berth tells apart, and the one retry every mutating
//! call goes through.

use super::{Engine, MIN_API};

/// How long berth keeps retrying a call the engine refuses because another operation on
/// the same object is still in progress (a removal, a create holding a name): long enough
/// for the engine to finish what a killed berth had asked of it, bounded so that a stuck
/// engine is reported, not waited on forever.
pub(super) const IN_PROGRESS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The first pause between two tries; it doubles up to [`RETRY_PAUSE_MAX`].
pub(super) const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
pub(super) const RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The newest API version an engine speaks, as it says when refusing a request in a newer
/// one (`client version 1.53 is too new. Maximum supported API version is 1.41`).
pub(super) fn newest_api(e: &bollard::errors::Error) -> Option<bollard::ClientVersion> {
    let bollard::errors::Error::DockerResponseServerError {
        status_code: 400,
        message,
    } = e
    else {
        return None;
    };
    let (_, rest) = message.split_once("Maximum supported API version is ")?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (major, minor) = version.split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.trim_end_matches('.').parse().ok()?,
    })
}

/// Whether an engine refusal only means "not now": another operation on the object is in
/// progress (`removal of container ... is already in progress`, a container that is
/// restarting). Such a call is tried again after a pause.
pub fn in_progress(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            m.contains("in progress") || m.contains("is restarting")
        }
        _ => false,
    }
}

/// Whether an engine's refusal to start a container is runc's race with a process that
/// had not yet started (500 `cannot start a stopped process`), seen now and then under
/// load: the same start succeeds when asked again. A program that really exits at once is
/// still caught by the pod's gates.
pub fn stopped_process_race(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 500, message }
            if message.contains("cannot start a stopped process")
    )
}

/// Whether an engine refusal to remove a network is containers still attached to it (403
/// `network ... has active endpoints`).
pub fn active_endpoints(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 403, message }
            if message.contains("active endpoints")
    )
}

/// Whether an engine refusal is a name held by another container (409 `Conflict. The
/// container name ... is already in use`), maybe one the engine is still creating.
pub fn name_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.to_ascii_lowercase().contains("already in use")
    )
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EngineError {
    #[error("cannot reach the engine of region `{region}` at `{endpoint}`: {reason}")]
    #[diagnostic(code(berth::engine_unreachable))]
    Unreachable {
        region: String,
        endpoint: String,
        reason: String,
        /// What to do, by the kind of endpoint ([`unreachable_help`]).
        #[help]
        help: String,
    },
    #[error("the engine of region `{region}` speaks API {found}; berth needs {}.{} or newer", MIN_API.0, MIN_API.1)]
    #[diagnostic(
        code(berth::engine_too_old),
        help("upgrade Docker to 19.03 or newer, or Podman to 4 or newer")
    )]
    TooOld { region: String, found: String },
    #[error("region `{region}`: `{endpoint}` is not an engine address berth can reach")]
    #[diagnostic(
        code(berth::engine_unsupported),
        help(
            "write `unix:///var/run/docker.sock`, `tcp://HOST:2376` with `tls: {{ ca, cert, key }}`, or `ssh://USER@HOST[:PORT]`"
        )
    )]
    Unsupported { region: String, endpoint: String },
    #[error("region `{region}`: the TLS file `{}` cannot be used: {reason}", path.display())]
    #[diagnostic(code(berth::engine_tls))]
    TlsFile {
        region: String,
        path: std::path::PathBuf,
        reason: String,
        #[help]
        help: String,
    },
    #[error(
        "regions `{first}` and `{second}` are one engine (ID {id}): the project would be deployed twice onto it"
    )]
    #[diagnostic(
        code(berth::same_engine),
        help(
            "give each region an engine of its own (another host, or another daemon), or keep one of the two regions; nothing was changed"
        )
    )]
    SameEngine {
        first: String,
        second: String,
        id: String,
    },
    #[error(
        "the engine of region `{region}` ({endpoint}) holds objects of region `{other}` of project `{project}`: the two regions may be one engine, which a command limited by `--region` cannot check"
    )]
    #[diagnostic(
        code(berth::same_engine),
        help(
            "run the command without `--region`, so that every region's engine is connected and compared; if `{other}` moved to another engine, remove what it left on this one (`docker ps -a --filter label=io.berth.project={project} --filter label=io.berth.region={other}`, and the same for networks and volumes); nothing was changed"
        )
    )]
    HoldsOtherRegion {
        region: String,
        endpoint: String,
        other: String,
        project: String,
    },
    #[error("building image `{image}` on the engine of region `{region}` failed: {reason}")]
    #[diagnostic(
        code(berth::build_failed),
        help("fix the build context or its Dockerfile; nothing was changed")
    )]
    Build {
        region: String,
        image: String,
        reason: String,
    },
    #[error("the engine of region `{region}` refused `{call}`: {reason}")]
    #[diagnostic(
        code(berth::engine_call),
        help("check the engine's logs; nothing was changed by this call")
    )]
    Call {
        region: String,
        call: &'static str,
        reason: String,
    },
    #[error("in region `{region}`, {} containers claim `{address}`: {}", containers.len(), containers.join(", "))]
    #[diagnostic(
        code(berth::duplicate_container),
        help(
            "an interrupted apply can leave one behind: `berth apply` or `berth recover` removes the one with a `-berth-` name and keeps the pod's own; otherwise remove the wrong one by hand (`docker rm -f ID`); nothing was changed"
        )
    )]
    Duplicate {
        region: String,
        address: String,
        /// Each as `ID (NAME)`.
        containers: Vec<String>,
    },
}

/// What to do when an engine does not answer, by how it is reached.
pub fn unreachable_help(endpoint: &str) -> String {
    let nothing = "nothing was changed";
    if endpoint.starts_with("ssh://") {
        format!(
            "berth runs the system's `ssh` (your ~/.ssh/config, agent and keys, known_hosts; no prompts) and `docker system dial-stdio` on the host: check that `ssh USER@HOST docker version` works from here, that the host key is in known_hosts, and that `docker` is on the PATH of the far side's non-interactive shell; {nothing}"
        )
    } else if endpoint.starts_with("tcp://") {
        format!(
            "check that the engine listens there (`dockerd -H tcp://0.0.0.0:2376 --tlsverify ...`), that its certificate is signed by the region's `tls.ca` and names the host, and that it accepts the client certificate; {nothing}"
        )
    } else {
        format!(
            "start the engine (`systemctl start docker`), or fix the region's `engine:` (or DOCKER_HOST); {nothing}"
        )
    }
}

impl Engine {
    /// Makes a call, and makes it again (with a growing pause, for a bounded time) while
    /// the engine answers that another operation on the object is in progress: the one
    /// place every mutating call goes through, in apply, undo and recover alike.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        name: &'static str,
        mut call: F,
    ) -> Result<T, bollard::errors::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
    {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_RETRY;
        let mut pause = RETRY_PAUSE;
        loop {
            let answer = {
                let _request = self.request(name);
                call().await
            };
            match answer {
                Err(e) if in_progress(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                r => return r,
            }
        }
    }

    /// A call's result with "not found" (404) as `None`: gone is an answer, not an error.
    pub(super) fn found<T>(
        &self,
        call: &'static str,
        r: Result<T, bollard::errors::Error>,
    ) -> Result<Option<T>, EngineError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.call_error(call, e)),
        }
    }

    pub(super) fn call_error(&self, call: &'static str, e: bollard::errors::Error) -> EngineError {
        EngineError::Call {
            region: self.region.clone(),
            call,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn only_runcs_stopped_process_race_is_a_start_worth_asking_again() {
        assert!(stopped_process_race(&refusal(
            500,
            "cannot start a stopped process: unknown"
        )));
        assert!(!stopped_process_race(&refusal(
            500,
            "failed to create task for container: exec: \"/app\": no such file"
        )));
        assert!(!stopped_process_race(&refusal(
            409,
            "cannot start a stopped process"
        )));
    }

    #[test]
    fn an_older_engine_says_the_newest_api_it_speaks() {
        let v = newest_api(&refusal(
            400,
            "client version 1.53 is too new. Maximum supported API version is 1.41",
        ))
        .map(|v| (v.major_version, v.minor_version));
        assert_eq!(v, Some((1, 41)));
        let v = newest_api(&refusal(400, "... Maximum supported API version is 1.9."))
            .map(|v| (v.major_version, v.minor_version));
        assert_eq!(v, Some((1, 9)));
        // Too old is another refusal; so is any other error.
        assert!(newest_api(&refusal(400, "client version 1.40 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version")).is_none());
        assert!(newest_api(&refusal(500, "Maximum supported API version is 1.41")).is_none());
        assert!(newest_api(&refusal(400, "Maximum supported API version is x")).is_none());
    }

    #[test]
    fn an_operation_in_progress_is_retried_and_other_refusals_are_not() {
        assert!(in_progress(&refusal(
            409,
            "removal of container 4f2a is already in progress"
        )));
        assert!(in_progress(&refusal(
            409,
            "Container 4f2a is restarting, wait until the container is running"
        )));
        assert!(!in_progress(&refusal(
            409,
            "Conflict. The container name \"/x\" is already in use by container \"4f2a\""
        )));
        assert!(!in_progress(&refusal(
            404,
            "No such container: in progress"
        )));
        assert!(!in_progress(&refusal(500, "removal is in progress")));
        assert!(name_conflict(&refusal(
            409,
            "Conflict. The container name \"/x\" is already in use by container \"4f2a\""
        )));
        assert!(!name_conflict(&refusal(409, "removal already in progress")));
    }
}
