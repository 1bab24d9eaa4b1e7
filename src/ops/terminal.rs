//! `berth exec` on a terminal, as `docker exec -it` does: the command gets a terminal of its
//! own on the engine, sized as berth's and resized with it (SIGWINCH), and berth's terminal
//! is in raw mode while it runs (keys go through as typed, Ctrl-C to the command), then put
//! back as it was, whatever happens.

use std::io::{Read, Write};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::OpError;
use crate::engine::Engine;

/// Berth's terminal in raw mode; put back as it was when dropped.
struct Raw {
    saved: rustix::termios::Termios,
}

impl Raw {
    /// Raw mode on stdin's terminal (none when it is not one).
    fn enter() -> Option<Raw> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(Raw { saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The size of berth's terminal (rows, columns), when stdout is one.
fn size() -> Option<(u16, u16)> {
    let w = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (w.ws_row > 0 && w.ws_col > 0).then_some((w.ws_row, w.ws_col))
}

/// Runs `cmd` in the container `id` on a terminal; its exit status.
pub(super) async fn exec(
    engine: &Engine,
    id: &str,
    cmd: &[String],
) -> Result<Option<i64>, OpError> {
    let (exec_id, io) = engine.exec(id, cmd, true, true).await?;
    let _raw = Raw::enter();
    if let Some((rows, columns)) = size() {
        // A terminal the engine could not size is still a terminal.
        let _ = engine.resize_exec(&exec_id, rows, columns).await;
    }
    // Keys are read on a thread of their own: a read from a terminal blocks until a key
    // comes, and must not hold berth open once the command has ended.
    let (keys, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || keys.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut input = io.input;
    let feed = async {
        while let Some(bytes) = typed.recv().await {
            if input.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let relay = async {
        let mut output = io.output;
        while let Some(Ok(frame)) = output.next().await {
            let bytes = frame.into_bytes();
            let mut out = std::io::stdout().lock();
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    };
    let resize = async {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return std::future::pending().await;
        };
        while winch.recv().await.is_some() {
            if let Some((rows, columns)) = size() {
                let _ = engine.resize_exec(&exec_id, rows, columns).await;
            }
        }
    };
    // The command's end (its output closing) ends the session.
    tokio::select! {
        () = relay => {}
        () = async { tokio::join!(feed, resize); } => {}
    }
    Ok(engine.exec_exit_code(&exec_id).await?)
}
