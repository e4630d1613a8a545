//! `rpsctl healthcheck [URL]`: one GET of a component's `/readyz` (or
//! `/healthz`), for container health checks. The image has no curl; this
//! needs neither a config file nor a runtime.
//!
//! Exits 0 on a 2xx answer and 1 otherwise (not ready, unreachable, no
//! answer in time): Docker reads 1 as unhealthy.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `http://HOST:PORT/PATH` to GET.
    #[arg(default_value = "http://127.0.0.1:9184/readyz")]
    url: String,
    /// Give up after this long (connect, send and answer together).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (host, path) = split_url(&args.url).map_err(crate::failure::usage)?;
    match get(host, path, args.timeout) {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!("{status} {}", body.trim());
            Ok(())
        }
        Ok((status, body)) => Err(crate::failure::differences(format!(
            "{}: {status} {}",
            args.url,
            body.trim()
        ))),
        Err(e) => Err(crate::failure::differences(format!("{}: {e}", args.url))),
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if host.is_empty() || !host.contains(':') {
        return Err(format!("{url}: the URL needs HOST:PORT"));
    }
    Ok((host, path))
}

fn get(host: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = host.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
    })?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9184/readyz").unwrap(),
            ("127.0.0.1:9184", "/readyz")
        );
        assert_eq!(
            split_url("http://localhost:9184").unwrap(),
            ("localhost:9184", "/")
        );
        assert!(split_url("https://x:1/").is_err());
        assert!(split_url("http://x/readyz").is_err());
    }
}
