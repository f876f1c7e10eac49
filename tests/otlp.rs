//! The binary's trace export, end to end on a real broker (`deploy/local/up`): `switchboard run`
//! with `log.otlp_endpoint` set, over the example trace (every other record carrying a
//! `traceparent`), must POST its spans to that endpoint over OTLP/HTTP, and the spans still
//! batched when SIGTERM stops it must be sent as it exits. The collector is a fake one on a
//! loopback port that keeps what it is sent; the spans themselves are checked in
//! `tests/traces.rs`.

mod kafka_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_support::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use switchboard::core::event::Topic;
use switchboard::runtime::pipeline::{Header, Headers};

/// The trace ID the traced records carry.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// One request the collector was sent: (method, path, body).
type Request = (String, String, Vec<u8>);

/// A fake OTLP/HTTP collector on a loopback port: it keeps every request and answers each
/// with an empty protobuf `200 OK`.
struct Collector {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&requests);
        // Left running: the test process ends it.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &kept) {
                        eprintln!("collector: {e}");
                    }
                });
            }
        });
        Collector { port, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Requests on one connection (the exporter keeps it alive) until the client closes it.
fn serve(stream: TcpStream, kept: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader)? {
        kept.lock().unwrap().push(request);
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
        writer.flush()?;
    }
    Ok(())
}

/// One HTTP/1.1 request, its body by `Content-Length` or chunked; `None` at end of stream.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut length, mut chunked) = (0, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(std::io::Error::other)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some((method, path, body)))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
        if size == 0 {
            // Trailers, if any, up to the blank line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The example trace, the records at even lines carrying [`TRACEPARENT`]; how many do.
fn produce_half_traced(setup: &Setup) -> usize {
    let producer: BaseProducer = producer_config().create().unwrap();
    let input = setup.topic(Topic::Input);
    let traced = Headers::new(vec![Header::new("traceparent", TRACEPARENT)])
        .to_kafka()
        .unwrap();
    let mut count = 0;
    for (i, line) in std::fs::read_to_string(TRACE).unwrap().lines().enumerate() {
        let key = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["conversation"].as_str().map(str::to_string));
        let mut record = BaseRecord::<str, str>::to(&input).payload(line);
        if i % 2 == 0 {
            record = record.headers(traced.clone());
            count += 1;
        }
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn run_exports_its_spans_to_the_otlp_endpoint_and_flushes_them_on_sigterm() {
    let collector = Collector::start();
    let setup = Setup::create("otlp").await;
    let traced = produce_half_traced(&setup);
    assert!(traced > 0);

    let mut cmd = setup.command(&["run"]);
    cmd.env("SWITCHBOARD_HTTP__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_LOG__OTLP_ENDPOINT", collector.endpoint())
        .env(
            "SWITCHBOARD_KAFKA__TRANSACTIONAL_ID",
            format!("sb-{}-1", setup.name),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = Proc::spawn(&mut cmd);
    let trace = std::path::Path::new(TRACE);
    wait_for_results(&setup, expected_results(trace), Duration::from_secs(120));
    // The batch exporter sends every 5 s: what is left is sent by the shutdown after `serve`.
    terminate(child);

    let requests = collector.requests();
    assert!(
        !requests.is_empty(),
        "no request reached the collector at {}",
        collector.endpoint()
    );
    for (method, path, _) in &requests {
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/v1/traces"),
            "every request posts traces"
        );
    }
    let bodies: Vec<u8> = requests.iter().flat_map(|(_, _, b)| b.clone()).collect();
    // Protobuf holds a trace ID as its 16 raw bytes and a span name as its UTF-8 bytes.
    let trace_id = hex::decode(TRACE_ID).unwrap();
    assert!(
        contains(&bodies, &trace_id),
        "no span of the records' trace {TRACE_ID} in {} bytes",
        bodies.len()
    );
    for name in ["message", "batch", "switchboard"] {
        assert!(
            contains(&bodies, name.as_bytes()),
            "no {name:?} in the spans"
        );
    }
    eprintln!(
        "{} POSTs to /v1/traces, {} bytes, {traced} records traced",
        requests.len(),
        bodies.len()
    );
}
