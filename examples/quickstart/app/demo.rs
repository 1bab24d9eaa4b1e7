//! The quickstart's demo web app: a visit counter kept in the pod's volume, that refuses to
//! start without its secret. Standard library only, so that
//! `rustc -O -C target-feature=+crt-static demo.rs` builds a static binary that runs in a
//! `FROM scratch` image (no registry needed).
//!
//! - `GET /`: a greeting, the visit number and the fingerprint-free proof that the key was
//!   read (its length, never its value);
//! - `GET /health`: `ok` when the data directory is writable.
//!
//! Env: `PORT` (default 8080), `DATA_DIR` (default `/data`), `APP_KEY_FILE` (required).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Counts a visit in `DATA_DIR/visits` (survives a new container: the volume keeps it).
fn visit(data: &Path, lock: &Mutex<()>) -> std::io::Result<u64> {
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let file = data.join("visits");
    let n = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let tmp = data.join("visits.tmp");
    std::fs::write(&tmp, n.to_string())?;
    std::fs::rename(&tmp, &file)?;
    Ok(n)
}

fn respond(mut stream: TcpStream, data: &Path, key_len: usize, lock: &Mutex<()>) {
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/health" => match std::fs::metadata(data) {
            Ok(m) if !m.permissions().readonly() => ("200 OK", "ok\n".to_owned()),
            _ => ("503 Service Unavailable", "data directory not writable\n".to_owned()),
        },
        "/" => match visit(data, lock) {
            Ok(n) => (
                "200 OK",
                format!(
                    "Hello from the berth quickstart!\nvisit #{n} (counted in {}, kept across deploys)\napp key: read at start, {key_len} bytes\n",
                    data.display()
                ),
            ),
            Err(e) => ("500 Internal Server Error", format!("cannot count: {e}\n")),
        },
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn main() {
    let port = env("PORT", "8080");
    let data = PathBuf::from(env("DATA_DIR", "/data"));
    let key_file = env("APP_KEY_FILE", "/run/secrets/app_key");
    // Read once at start, like a real app: without it, there is nothing to serve.
    let key_len = match std::fs::read(&key_file) {
        Ok(k) if !k.is_empty() => k.len(),
        Ok(_) => {
            eprintln!("demo: {key_file} is empty");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("demo: cannot read {key_file}: {e}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| {
        eprintln!("demo: cannot listen on {port}: {e}");
        std::process::exit(2);
    });
    println!("demo: listening on {port}, data in {}", data.display());
    let lock: &'static Mutex<()> = Box::leak(Box::new(Mutex::new(())));
    let data: &'static Path = Box::leak(data.into_boxed_path());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || respond(stream, data, key_len, lock));
    }
}
