//! The tools a task runs inside its container: `mcat`, `mpipe`, `msplit`, `mtee`, `mget`,
//! `mls`, `mput`, plus `lackey`, the container's first process that runs `init` and `exec`.
//!
//! One multi-call binary (`jobs-tool`), picked by the name it is called as (or its first
//! argument). It is started inside the container, so it is small, synchronous and uses only
//! the standard library: it speaks HTTP/1.1 over the task's Unix socket
//! (`$MANTA_AGENT_SOCKET`), which the agent serves for that task alone, acting as the job's
//! owner. There is no other way out of the container.
//!
//! Protocol with the agent (paths are URL-encoded Manta paths):
//! - any ordinary request (`GET`, `HEAD`, `PUT`, `DELETE`) is forwarded to the front door;
//! - `PUT <path>` with `x-manta-stream: stdout` stores the body as a task output (`mpipe`);
//!   `x-manta-reducer: N` routes it to reducer N of the next phase; `x-manta-mkdirs: true`
//!   creates missing parents; the path `/_task/output` asks for an automatic name;
//! - `PUT <path>` with `x-manta-reference: true` and no body emits an existing object as an
//!   output without copying it (`mcat`);
//!
//! Lackey, the container's first process, has a channel of its own ([`LACKEY_SOCKET`]): the
//! agent sends it one [`TaskOrder`] per task, with the task's stdin, stdout and stderr as
//! descriptors, and it answers each with a [`LackeyStatus`] line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, Stdio};

/// Where the socket is, inside the container.
pub const SOCKET_ENV: &str = "MANTA_AGENT_SOCKET";

fn socket_path() -> String {
    std::env::var(SOCKET_ENV).unwrap_or_else(|_| "/manta-agent/sock".into())
}

fn encode(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Expands `~~` to `/$MANTA_USER`.
pub fn expand(path: &str) -> String {
    match path.strip_prefix("~~") {
        Some(rest) => format!("/{}{rest}", std::env::var("MANTA_USER").unwrap_or_default()),
        None => path.to_owned(),
    }
}

/// A request in flight: headers sent, body being written (chunked).
pub struct Request {
    stream: UnixStream,
    chunked: bool,
}

/// A response: status, headers, and a body reader.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    body: Box<dyn Read>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The whole body (small answers only).
    ///
    /// # Errors
    /// Read failures.
    pub fn text(mut self) -> io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }

    /// Copies the body to `w`.
    ///
    /// # Errors
    /// Read or write failures.
    pub fn copy_to(mut self, w: &mut dyn Write) -> io::Result<u64> {
        io::copy(&mut self.body, w)
    }

    /// An error for a non-2xx answer: `code: message` from the body.
    pub fn error(self) -> io::Error {
        let status = self.status;
        let text = self.text().unwrap_or_default();
        let msg = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => format!(
                "{}: {}",
                v["code"].as_str().unwrap_or("Error"),
                v["message"].as_str().unwrap_or("")
            ),
            Err(_) => format!("HTTP {status}: {}", text.trim()),
        };
        io::Error::other(msg)
    }
}

impl Write for Request {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.chunk(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Request {
    /// Sends a request head. With `body`, the body follows in chunks ([`chunk`](Self::chunk)).
    ///
    /// # Errors
    /// When the socket cannot be reached.
    pub fn start(
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: bool,
    ) -> io::Result<Request> {
        let sock = socket_path();
        let mut stream = UnixStream::connect(&sock).map_err(|e| {
            io::Error::new(e.kind(), format!("connect to the agent at {sock}: {e}"))
        })?;
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n",
            encode(path)
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if body {
            head.push_str("transfer-encoding: chunked\r\n");
        } else if method == "PUT" || method == "POST" {
            head.push_str("content-length: 0\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        Ok(Request {
            stream,
            chunked: body,
        })
    }

    /// Writes body bytes.
    ///
    /// # Errors
    /// When the agent closed the connection.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        write!(self.stream, "{:x}\r\n", data.len())?;
        self.stream.write_all(data)?;
        self.stream.write_all(b"\r\n")
    }

    /// Ends the body and reads the response.
    ///
    /// # Errors
    /// I/O failures or a malformed response.
    pub fn finish(mut self) -> io::Result<Response> {
        if self.chunked {
            self.stream.write_all(b"0\r\n\r\n")?;
        }
        self.stream.flush()?;
        read_response(self.stream)
    }
}

fn read_response(stream: UnixStream) -> io::Result<Response> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body: Box<dyn Read> = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Box::new(Chunked {
            r,
            left: 0,
            done: false,
        })
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Box::new(r.take(n))
    } else {
        Box::new(r)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

struct Chunked<R> {
    r: BufReader<R>,
    left: usize,
    done: bool,
}

impl<R: Read> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

fn simple(method: &str, path: &str, headers: &[(&str, String)]) -> io::Result<Response> {
    Request::start(method, path, headers, false)?.finish()
}

fn check(r: Response) -> io::Result<Response> {
    if (200..300).contains(&r.status) {
        Ok(r)
    } else {
        Err(r.error())
    }
}

/// Streams `input` as a request body.
fn upload(
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    input: &mut dyn Read,
    tee: Option<&mut dyn Write>,
) -> io::Result<Response> {
    let mut req = Request::start(method, path, headers, true)?;
    let mut buf = vec![0u8; 128 * 1024];
    let mut tee = tee;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(t) = tee.as_deref_mut() {
            t.write_all(&buf[..n])?;
        }
        req.chunk(&buf[..n])?;
    }
    if let Some(t) = tee {
        t.flush()?;
    }
    check(req.finish()?)
}

struct Args {
    flags: Vec<(char, Option<String>)>,
    rest: Vec<String>,
}

/// Parses short options; `with_value` lists those that take a value.
fn parse_args(args: &[String], with_value: &str, bare: &str) -> io::Result<Args> {
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.extend(it.by_ref().cloned());
            break;
        }
        if let Some(f) = a
            .strip_prefix('-')
            .filter(|f| !f.is_empty() && !a.starts_with("--"))
        {
            let mut chars = f.chars();
            while let Some(c) = chars.next() {
                if with_value.contains(c) {
                    let tail: String = chars.collect();
                    let v = if tail.is_empty() {
                        it.next()
                            .cloned()
                            .ok_or_else(|| io::Error::other(format!("-{c} needs a value")))?
                    } else {
                        tail
                    };
                    flags.push((c, Some(v)));
                    break;
                } else if bare.contains(c) {
                    flags.push((c, None));
                } else {
                    return Err(io::Error::other(format!("unknown option -{c}")));
                }
            }
        } else {
            rest.push(a.clone());
        }
    }
    Ok(Args { flags, rest })
}

impl Args {
    fn has(&self, c: char) -> bool {
        self.flags.iter().any(|(f, _)| *f == c)
    }
    fn value(&self, c: char) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| *f == c)
            .and_then(|(_, v)| v.as_deref())
    }
    fn values(&self, c: char) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(f, _)| *f == c)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
}

fn mpipe(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "rHf", "p")?;
    let path = a.rest.first().map(|p| expand(p));
    let mut headers = vec![("x-manta-stream", "stdout".to_owned())];
    if let Some(r) = a.value('r') {
        let n: u32 = r
            .parse()
            .map_err(|_| io::Error::other(format!("-r {r}: not a reducer number")))?;
        headers.push(("x-manta-reducer", n.to_string()));
    }
    if a.has('p') {
        headers.push(("x-manta-mkdirs", "true".into()));
    }
    let extra = user_headers(&a)?;
    for (k, v) in &extra {
        headers.push((k.as_str(), v.clone()));
    }
    let target = path.unwrap_or_else(|| "/_task/output".into());
    match a.value('f') {
        Some(f) => upload("PUT", &target, &headers, &mut open_input(f)?, None)?,
        None => upload("PUT", &target, &headers, &mut io::stdin().lock(), None)?,
    };
    Ok(())
}

/// The file `-f` names, or why it cannot be read.
fn open_input(f: &str) -> io::Result<std::fs::File> {
    std::fs::File::open(f).map_err(|e| io::Error::new(e.kind(), format!("-f {f}: {e}")))
}

/// The `-H 'name: value'` headers, names lower-cased.
fn user_headers(a: &Args) -> io::Result<Vec<(String, String)>> {
    a.values('H')
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| io::Error::other(format!("-H {h:?}: expected 'name: value'")))?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_owned();
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if k.is_empty() || !k.chars().all(token) || v.chars().any(|c| c == '\r' || c == '\n') {
                return Err(io::Error::other(format!("-H {h:?}: not a valid header")));
            }
            Ok((k, v))
        })
        .collect()
}

fn mcat(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "r", "")?;
    if a.rest.is_empty() {
        return Err(io::Error::other("usage: mcat [-r reducer] PATH..."));
    }
    for p in &a.rest {
        let mut headers = vec![("x-manta-reference", "true".to_owned())];
        if let Some(r) = a.value('r') {
            headers.push(("x-manta-reducer", r.to_owned()));
        }
        check(simple("PUT", &expand(p), &headers)?)?;
    }
    Ok(())
}

/// Where `mtee` and `mput` write (their first operand, `~~` expanded) and the headers they
/// send: a binary content type unless `-H` gives one, with `-c N` the durability level, and
/// every `-H` header.
fn upload_target(a: &Args, usage: &str) -> io::Result<(String, Vec<(String, String)>)> {
    let path = a
        .rest
        .first()
        .map(|p| expand(p))
        .ok_or_else(|| io::Error::other(usage.to_owned()))?;
    let mut headers = user_headers(a)?;
    if !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/octet-stream".to_owned()));
    }
    if let Some(c) = a.value('c') {
        headers.push(("durability-level".into(), c.to_owned()));
    }
    Ok((path, headers))
}

/// Headers as [`Request::start`] takes them.
fn borrowed(h: &[(String, String)]) -> Vec<(&str, String)> {
    h.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

fn mtee(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "cH", "")?;
    let (path, headers) = upload_target(&a, "usage: mtee [-c durability] [-H 'h: v'] PATH")?;
    let headers = borrowed(&headers);
    let mut out = io::stdout().lock();
    upload(
        "PUT",
        &path,
        &headers,
        &mut io::stdin().lock(),
        Some(&mut out),
    )?;
    Ok(())
}

fn mget(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "o", "q")?;
    if a.rest.is_empty() {
        return Err(io::Error::other("usage: mget [-o file] PATH..."));
    }
    let mut out: Box<dyn Write> = match a.value('o') {
        Some(f) => Box::new(std::fs::File::create(f)?),
        None => Box::new(io::stdout().lock()),
    };
    for p in &a.rest {
        check(simple("GET", &expand(p), &[])?)?.copy_to(&mut out)?;
    }
    out.flush()
}

fn mput(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "fcH", "pq")?;
    let (path, headers) = upload_target(&a, "usage: mput [-f file] PATH")?;
    let headers = borrowed(&headers);
    if a.has('p') {
        let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        mkdirp(parent)?;
    }
    match a.value('f') {
        Some(f) => upload("PUT", &path, &headers, &mut open_input(f)?, None)?,
        None => upload("PUT", &path, &headers, &mut io::stdin().lock(), None)?,
    };
    Ok(())
}

fn mkdirp(path: &str) -> io::Result<()> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for i in 3..=parts.len() {
        let p = format!("/{}", parts[..i].join("/"));
        let r = simple(
            "PUT",
            &p,
            &[("content-type", "application/json; type=directory".into())],
        )?;
        if !(200..300).contains(&r.status) && r.status != 400 {
            return Err(r.error());
        }
    }
    Ok(())
}

fn mls(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "", "l")?;
    let default = expand("~~/stor");
    let paths: Vec<String> = if a.rest.is_empty() {
        vec![default]
    } else {
        a.rest.iter().map(|p| expand(p)).collect()
    };
    let mut out = io::stdout().lock();
    for p in paths {
        let text = check(simple("GET", &p, &[])?)?.text()?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(io::Error::other)?;
            let name = v["name"].as_str().unwrap_or("");
            if v["type"] == "directory" {
                writeln!(out, "{name}/")?;
            } else {
                writeln!(out, "{name}")?;
            }
        }
    }
    Ok(())
}

/// One reducer's stream of `msplit` output: an output request, gzip-compressed with `-z`.
enum Sink {
    Plain(io::BufWriter<Request>),
    Gz(flate2::write::GzEncoder<io::BufWriter<Request>>),
}

impl Sink {
    fn open(reducer: u32, gz: bool) -> io::Result<Sink> {
        let req = Request::start(
            "PUT",
            "/_task/output",
            &[
                ("x-manta-stream", "stdout".into()),
                ("x-manta-reducer", reducer.to_string()),
            ],
            true,
        )?;
        let w = io::BufWriter::with_capacity(64 * 1024, req);
        Ok(if gz {
            Sink::Gz(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::fast(),
            ))
        } else {
            Sink::Plain(w)
        })
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(b),
            Sink::Gz(w) => w.write_all(b),
        }
    }

    fn finish(self) -> io::Result<()> {
        let w = match self {
            Sink::Plain(w) => w,
            Sink::Gz(g) => g.finish()?,
        };
        let req = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        check(req.finish()?).map(|_| ())
    }
}

/// The reducer a line with `key` goes to: the key's hash modulo `n`, or with `literal` (`-i`)
/// the key itself as a number.
fn reducer_of(key: &str, n: u32, literal: bool) -> io::Result<usize> {
    if literal {
        let k = key.trim();
        let i = k
            .parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < f64::from(n))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "-i: key {k:?} is not a reducer index from 0 to {}",
                    n - 1
                ))
            })?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Ok(i as usize);
    }
    Ok((crate::supervisor::crc(key) % u64::from(n)) as usize)
}

/// The key of a JSON record: the `fields` it has, each a string as it is or other JSON as its
/// text, joined by tabs.
fn json_key(line: &str, fields: &[&str], number: u64) -> io::Result<String> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| io::Error::other(format!("-j: line {number} is not JSON: {e}")))?;
    Ok(fields
        .iter()
        .filter_map(|f| v.get(f))
        .map(|x| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\t"))
}

/// The key of a text record: its `fields` (from 1) split by `delim`, those out of range left
/// out.
fn text_key(line: &str, delim: &str, fields: &[usize]) -> String {
    let cols: Vec<&str> = line.split(delim).collect();
    fields
        .iter()
        .filter_map(|f| cols.get(f - 1).copied())
        .collect::<Vec<_>>()
        .join(delim)
}

/// What `msplit -e` runs under node: the expression becomes the body of `function (line)`
/// (wrapped in `return (...)` when it has no `return`), bound to the parsed record with `-j`.
/// Lines go in and keys come out as JSON strings, one per line, in order.
const MSPLIT_JS: &str = r#"
const body = process.env.MSPLIT_EXPR;
const f = new Function('line', /\breturn\b/.test(body) ? body : 'return (' + body + ');');
const json = process.env.MSPLIT_JSON === '1';
let rest = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  const parts = (rest + d).split('\n');
  rest = parts.pop();
  const out = [];
  for (const p of parts) {
    const line = JSON.parse(p);
    out.push(JSON.stringify(String(f.call(json ? JSON.parse(line) : undefined, line))));
  }
  if (out.length) process.stdout.write(out.join('\n') + '\n');
});
"#;

/// Reads stdin's lines and hands each with its key, computed by the JavaScript `expr` under
/// node, to `put`.
fn js_keys(
    expr: &str,
    json: bool,
    put: &mut dyn FnMut(&[u8], &str) -> io::Result<()>,
) -> io::Result<()> {
    let mut child = Command::new("node")
        .args(["-e", MSPLIT_JS])
        .env("MSPLIT_EXPR", expr)
        .env("MSPLIT_JSON", if json { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::other(format!(
                "-e runs its expression with node, which this task cannot run ({e}): use an \
                 image that has node, or -f"
            ))
        })?;
    let (Some(to_node), Some(from_node)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("node's pipes"));
    };
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    // Lines go to node from a thread of their own, so that node's output is always read.
    let feeder = std::thread::spawn(move || -> io::Result<()> {
        let mut w = io::BufWriter::new(to_node);
        let mut input = io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            serde_json::to_writer(&mut w, text.trim_end_matches('\n'))?;
            w.write_all(b"\n")?;
            if tx.send(line.clone()).is_err() {
                break;
            }
        }
        w.flush()
    });
    let mut routed = Ok(());
    for key in BufReader::new(from_node).lines() {
        let step = key.and_then(|k| {
            let key: String = serde_json::from_str(&k).map_err(io::Error::other)?;
            let line = rx
                .recv()
                .map_err(|_| io::Error::other("node gave more keys than lines"))?;
            put(&line, &key)
        });
        if let Err(e) = step {
            routed = Err(e);
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    let fed = feeder
        .join()
        .map_err(|_| io::Error::other("the feeding thread panicked"))?;
    routed?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "the -e expression failed (node: {status})"
        )));
    }
    fed?;
    if rx.try_recv().is_ok() {
        return Err(io::Error::other("node gave fewer keys than lines"));
    }
    Ok(())
}

fn msplit(args: &[String]) -> io::Result<()> {
    let a = parse_args(args, "dfne", "jiz")?;
    let n: u32 = match a.value('n') {
        Some(v) => v
            .parse()
            .map_err(|_| io::Error::other(format!("-n {v}: not a number")))?,
        None => std::env::var("MANTA_NEXT_REDUCERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    };
    if n == 0 {
        return Err(io::Error::other("-n must be at least 1"));
    }
    let (json, literal) = (a.has('j'), a.has('i'));
    let delim = a.value('d').unwrap_or("\t").to_owned();
    let field_list = a.value('f');
    let mut sinks = (0..n)
        .map(|r| Sink::open(r, a.has('z')))
        .collect::<io::Result<Vec<_>>>()?;
    let mut put = |line: &[u8], key: &str| -> io::Result<()> {
        let r = reducer_of(key, n, literal)?;
        sinks[r].write_all(line)?;
        if !line.ends_with(b"\n") {
            sinks[r].write_all(b"\n")?;
        }
        Ok(())
    };
    if let Some(expr) = a.value('e') {
        js_keys(expr, json, &mut put)?;
    } else {
        let json_fields: Vec<&str> = match (json, field_list) {
            (true, Some(f)) => f.split(',').map(str::trim).collect(),
            (true, None) => return Err(io::Error::other("-j needs -f FIELDS or -e EXPR")),
            (false, _) => Vec::new(),
        };
        let text_fields: Vec<usize> = match field_list.filter(|_| !json) {
            Some(f) => f
                .split(',')
                .map(|x| x.trim().parse::<usize>().ok().filter(|i| *i >= 1))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| io::Error::other(format!("-f {f}: fields are numbers from 1")))?,
            None => vec![1],
        };
        let mut input = io::stdin().lock();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            let text = String::from_utf8_lossy(&line);
            let body = text.trim_end_matches('\n');
            let key = if json {
                json_key(body, &json_fields, number)?
            } else {
                text_key(body, &delim, &text_fields)
            };
            put(&line, &key)?;
        }
    }
    for s in sinks {
        s.finish()?;
    }
    Ok(())
}

/// How a task's `init` and `exec` ended, as lackey reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LackeyStatus {
    /// `init` failed (with this exit code).
    #[serde(default)]
    pub init_failed: Option<i32>,
    /// Exit code of `exec`.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal that ended `exec`.
    #[serde(default)]
    pub signal: Option<i32>,
    /// OOM kills in the task's memory cgroup.
    #[serde(default)]
    pub oom_kills: u64,
    /// Where the core file a failed task left was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<String>,
    /// How long the user's command ran, in microseconds (from its start to its exit).
    #[serde(default)]
    pub micros: u64,
}

/// Where lackey reaches the agent, inside the container: a socket the agent accepts one
/// connection on (lackey's, made before any user code runs) and then removes.
pub const LACKEY_SOCKET: &str = "/manta-agent/lackey";

/// What the agent hands lackey for one task, with the task's stdin, stdout and stderr as
/// descriptors beside it (in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskOrder {
    /// The task's whole environment.
    pub env: Vec<(String, String)>,
    /// The phase's `init`, given with the container's first task only.
    #[serde(default)]
    pub init: Option<String>,
    /// The path (inside the container) at which the task's input object appears: its stdin,
    /// held open by lackey.
    #[serde(default)]
    pub input: Option<String>,
    /// Where a core file left by the task, if it fails, is saved (a Manta path).
    #[serde(default)]
    pub core_to: Option<String>,
}

/// Most bytes of one order on the wire (an environment with the phase's commands in it).
pub const MAX_ORDER: usize = 4 << 20;

fn oom_kills() -> u64 {
    std::fs::read_to_string("/sys/fs/cgroup/memory/memory.oom_control")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Reads the next order and its three descriptors; `None` when the agent closed the channel.
/// An order is its length (4 bytes, big-endian) and its JSON; the descriptors ride with the
/// length.
fn next_order(chan: &mut UnixStream) -> io::Result<Option<(TaskOrder, Vec<std::os::fd::OwnedFd>)>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut len = [0u8; 4];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &*chan,
        &mut [io::IoSliceMut::new(&mut len)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?
    .bytes;
    if got == 0 {
        return Ok(None);
    }
    let fds: Vec<std::os::fd::OwnedFd> = ancillary
        .drain()
        .filter_map(|m| match m {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    chan.read_exact(&mut len[got..])?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_ORDER {
        return Err(io::Error::other(format!(
            "an order of {n} bytes is too long"
        )));
    }
    let mut body = vec![0u8; n];
    chan.read_exact(&mut body)?;
    let order = serde_json::from_slice(&body).map_err(io::Error::other)?;
    if fds.len() != 3 {
        return Err(io::Error::other(format!(
            "an order came with {} descriptors, not 3",
            fds.len()
        )));
    }
    Ok(Some((order, fds)))
}

/// Ends every process in the container but this one (lackey is the first process of its pid
/// namespace) and reaps them: what one task left running never meets the next.
fn end_leftovers() {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-1),
        nix::sys::signal::Signal::SIGKILL,
    );
    while rustix::process::wait(rustix::process::WaitOptions::empty()).is_ok() {}
}

/// Removes what a task left outside `/tmp` that the next one could see: its input's link
/// under `/manta` and shared memory under `/dev/shm`. (`/tmp` stays, as it did between tasks
/// of one job and phase in the original.)
fn tidy() {
    for dir in ["/manta", "/dev/shm"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
}

/// Runs one task: `init` first when the order carries it, then `exec`; reports how they
/// ended.
fn run_order(order: &TaskOrder, fds: Vec<std::os::fd::OwnedFd>) -> io::Result<LackeyStatus> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        return Err(io::Error::other("an order needs three descriptors"));
    };
    if let Some(path) = &order.input {
        // The input is the task's stdin, held open here: the path leads to it.
        use std::os::fd::AsRawFd as _;
        let link = std::path::Path::new(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let target = format!("/proc/{}/fd/{}", std::process::id(), stdin.as_raw_fd());
        std::os::unix::fs::symlink(target, link)?;
    }
    let before = oom_kills();
    let cores = core_files();
    // bash, as in the original; an image without it gets its POSIX shell.
    let shell = if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let command = |script: &str| {
        let mut c = Command::new(shell);
        c.args(["-c", script])
            .env_clear()
            .envs(order.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/tmp");
        c
    };
    if let Some(init) = order.init.as_deref().filter(|i| !i.trim().is_empty()) {
        let st = command(init)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr.try_clone()?))
            .stderr(Stdio::from(stderr.try_clone()?))
            .status()?;
        end_leftovers();
        if !st.success() {
            return Ok(LackeyStatus {
                init_failed: Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))),
                oom_kills: oom_kills().saturating_sub(before),
                ..LackeyStatus::default()
            });
        }
    }
    let exec = order
        .env
        .iter()
        .find_map(|(k, v)| (k == "MANTA_EXEC").then_some(v.as_str()))
        .unwrap_or_default();
    // Lackey's own word on the task (a core it could not save) goes to the task's stderr.
    let mut said = std::fs::File::from(stderr.try_clone()?);
    let started = std::time::Instant::now();
    let st = command(exec)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .status()?;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    end_leftovers();
    let core = match (&order.core_to, st.success()) {
        (Some(to), false) => save_core(&cores, to, &mut said),
        _ => None,
    };
    Ok(LackeyStatus {
        init_failed: None,
        code: st.code(),
        signal: st.signal(),
        oom_kills: oom_kills().saturating_sub(before),
        core,
        micros,
    })
}

/// A core file as found: its path, inode and modification time.
type CoreFile = (std::path::PathBuf, u64, Option<std::time::SystemTime>);

/// The core files in `/tmp` (the kernel names one `core` or `core.<pid>`, in the crashing
/// process's directory).
fn core_files() -> Vec<CoreFile> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == "core"
                || name
                    .strip_prefix("core.")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| (e.path(), m.ino(), m.modified().ok()))
        })
        .collect()
}

/// Saves at `to` a core file the failed task left in `/tmp` (one not among `before`, or
/// rewritten since: file times are too coarse to compare with the clock), at most the size the
/// container's core limit allows, and removes it. The path, when one was saved.
fn save_core(before: &[CoreFile], to: &str, said: &mut dyn Write) -> Option<String> {
    let (found, _, _) = core_files().into_iter().find(|c| !before.contains(c))?;
    let saved = (|| {
        if let Some((dir, _)) = to.rsplit_once('/') {
            mkdirp(dir)?;
        }
        upload(
            "PUT",
            to,
            &[("content-type", "application/octet-stream".into())],
            &mut std::fs::File::open(&found)?,
            None,
        )
    })();
    let _ = std::fs::remove_file(&found);
    match saved {
        Ok(_) => Some(to.to_owned()),
        Err(e) => {
            let _ = writeln!(said, "lackey: cannot save the core file: {e}");
            None
        }
    }
}

/// The container's first process: takes tasks from the agent one after another, runs each and
/// reports how it ended, until the agent closes the channel (or a task's `init` fails).
/// Where the store answers inside a task (`MANTA_URL`): a loopback listener in the
/// container's own network namespace, which has no other interface.
pub const STORE_LISTEN: &str = "127.0.0.1:80";

/// Serves [`STORE_LISTEN`] for the container's life: each connection is relayed byte for
/// byte to the task's socket, so `curl $MANTA_URL/...` and the npm tools reach the store as
/// the job's owner through the agent, exactly as our own tools do. Failing to listen is said
/// on lackey's stderr (the agent's log) and leaves the tools' socket working.
fn serve_store() {
    let listener = match std::net::TcpListener::bind(STORE_LISTEN) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lackey: cannot listen on {STORE_LISTEN} for MANTA_URL: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                if let Err(e) = relay(conn) {
                    eprintln!("lackey: MANTA_URL connection: {e}");
                }
            });
        }
    });
}

/// Copies `tcp` to the task's socket and back until both sides are done.
fn relay(tcp: std::net::TcpStream) -> io::Result<()> {
    let unix = UnixStream::connect(socket_path())?;
    let (mut tcp_r, mut unix_w) = (tcp.try_clone()?, unix.try_clone()?);
    let up = std::thread::spawn(move || {
        let r = io::copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(std::net::Shutdown::Write);
        r
    });
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    let down = io::copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(std::net::Shutdown::Write);
    let up = up
        .join()
        .map_err(|_| io::Error::other("relay thread panicked"))?;
    up.and(down).map(|_| ())
}

fn lackey() -> io::Result<i32> {
    serve_store();
    // Every process of the container is the OOM killer's first choice, lackey included: at
    // the memory limit it picks the largest, which is a task's, not lackey, so lackey lives to
    // report what happened. (Set here, once, it is inherited: a task need not set it itself.)
    std::fs::write("/proc/self/oom_score_adj", "1000")?;
    let mut chan = UnixStream::connect(LACKEY_SOCKET)?;
    while let Some((order, fds)) = next_order(&mut chan)? {
        let status = run_order(&order, fds)?;
        tidy();
        let mut line = serde_json::to_vec(&status).map_err(io::Error::other)?;
        line.push(b'\n');
        chan.write_all(&line)?;
        if status.init_failed.is_some() {
            return Ok(1);
        }
    }
    Ok(0)
}

/// Runs the tool `name` with `args`; the multi-call entry point.
pub fn main(name: &str, args: &[String]) -> ExitCode {
    let r = match name {
        "mpipe" => mpipe(args).map(|()| 0),
        "mcat" => mcat(args).map(|()| 0),
        "msplit" => msplit(args).map(|()| 0),
        "mtee" => mtee(args).map(|()| 0),
        "mget" => mget(args).map(|()| 0),
        "mput" => mput(args).map(|()| 0),
        "mls" => mls(args).map(|()| 0),
        "maggr" => crate::maggr::run(args, io::stdin().lock(), io::stdout().lock()).map(|()| 0),
        "lackey" => lackey(),
        other => Err(io::Error::other(format!(
            "unknown tool {other:?} ({})",
            TOOLS.join(", ")
        ))),
    };
    match r {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) if manta_util::cli::is_broken_pipe(&e) => {
            ExitCode::from(manta_util::cli::CLOSED_PIPE_STATUS as u8)
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// The tool names the agent links to the binary.
pub const TOOLS: &[&str] = &[
    "mcat", "mpipe", "msplit", "mtee", "mget", "mput", "mls", "maggr",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn msplit_keys_and_reducers() {
        assert_eq!(text_key("a,b,c", ",", &[3, 1]), "c,a");
        assert_eq!(
            text_key("a,b", ",", &[5]),
            "",
            "out of range fields are left out"
        );
        assert_eq!(
            json_key(
                r#"{"id":"x","n":2,"o":{"a":1}}"#,
                &["n", "id", "missing"],
                1
            )
            .unwrap(),
            "2\tx"
        );
        assert!(
            json_key("not json", &["id"], 7)
                .unwrap_err()
                .to_string()
                .contains("line 7")
        );
        assert_eq!(reducer_of("3", 4, true).unwrap(), 3);
        assert_eq!(reducer_of(" 0 ", 4, true).unwrap(), 0);
        for bad in ["4", "-1", "1.5", "x", ""] {
            assert!(reducer_of(bad, 4, true).is_err(), "{bad}");
        }
        // Hashing: the same key always lands on the same reducer, and within range.
        for k in ["a", "b", "ccc"] {
            let r = reducer_of(k, 5, false).unwrap();
            assert!(r < 5);
            assert_eq!(reducer_of(k, 5, false).unwrap(), r);
        }
    }

    #[test]
    fn user_headers_are_checked() {
        let a = parse_args(
            &s(&["-H", "Content-Type: text/plain", "-H", "x-a:b"]),
            "H",
            "",
        )
        .unwrap();
        assert_eq!(
            user_headers(&a).unwrap(),
            vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("x-a".to_owned(), "b".to_owned())
            ]
        );
        for bad in ["no colon", "bad name: v", "x: a\r\ny: b", ": v"] {
            let a = parse_args(&s(&["-H", bad]), "H", "").unwrap();
            assert!(user_headers(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_short_options() {
        let a = parse_args(&s(&["-p", "-r", "2", "/a/b"]), "r", "p").unwrap();
        assert!(a.has('p'));
        assert_eq!(a.value('r'), Some("2"));
        assert_eq!(a.rest, s(&["/a/b"]));
        let a = parse_args(&s(&["-r3", "-d,", "--", "-x"]), "rd", "").unwrap();
        assert_eq!(a.value('r'), Some("3"));
        assert_eq!(a.value('d'), Some(","));
        assert_eq!(a.rest, s(&["-x"]));
        assert!(parse_args(&s(&["-z"]), "", "").is_err());
        assert!(parse_args(&s(&["-r"]), "r", "").is_err());
    }

    #[test]
    fn encodes_paths_for_the_request_line() {
        assert_eq!(encode("/jill/stor/a b%"), "/jill/stor/a%20b%25");
    }
}
