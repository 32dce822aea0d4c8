//! Search hits as Tempo's JSON, written byte by byte.
//!
//! The `Serialize` forms in `search.rs` run every string through serde_json's escaper, field names, hex IDs and
//! digits included; on a 50k-trace answer (40 MB) that escaper was the largest item of the profile. Here field
//! names are constants written as they are, IDs and numbers are formatted on the stack, and only free text (names,
//! attribute keys and values) is checked for characters to escape. The output is byte for byte the same as the
//! `Serialize` forms' (tested), which stay for the small streamed answers.

use std::io::{self, Write};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::query::search::{SpanHit, SpansetHit, TraceHit};

/// Writes the fields of one JSON object, a comma before each but the first.
struct Object<'w, W: Write> {
    w: &'w mut W,
    first: bool,
}

impl<'w, W: Write> Object<'w, W> {
    fn open(w: &'w mut W) -> io::Result<Self> {
        w.write_all(b"{")?;
        Ok(Object { w, first: true })
    }

    /// Starts field `name` (a constant that needs no escaping).
    fn key(&mut self, name: &str) -> io::Result<&mut W> {
        if !self.first {
            self.w.write_all(b",")?;
        }
        self.first = false;
        self.w.write_all(b"\"")?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(b"\":")?;
        Ok(self.w)
    }

    fn close(self) -> io::Result<()> {
        self.w.write_all(b"}")
    }
}

/// A JSON string of free text: written as is unless a character needs escaping.
fn text(w: &mut impl Write, s: &str) -> io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        w.write_all(b"\"")?;
        w.write_all(s.as_bytes())?;
        w.write_all(b"\"")
    } else {
        serde_json::to_writer(w, s).map_err(io::Error::other)
    }
}

/// A 64-bit integer as a proto3 JSON string.
fn quoted(w: &mut impl Write, digits: &str) -> io::Result<()> {
    w.write_all(b"\"")?;
    w.write_all(digits.as_bytes())?;
    w.write_all(b"\"")
}

fn hex(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 64];
    w.write_all(b"\"")?;
    match buf.get_mut(..bytes.len() * 2) {
        Some(out) => {
            hex::encode_to_slice(bytes, out).map_err(io::Error::other)?;
            w.write_all(out)?;
        }
        None => w.write_all(hex::encode(bytes).as_bytes())?,
    }
    w.write_all(b"\"")
}

/// One search hit, as `TraceJson` serialises it.
pub(super) fn trace(w: &mut impl Write, t: &TraceHit) -> io::Result<()> {
    let id = t.trace_id.to_hex();
    let id = match id.trim_start_matches('0') {
        "" => "0",
        short => short,
    };
    let root_name = t.root_trace_name.as_deref().unwrap_or("");
    let duration_ms = u32::try_from(t.duration_nanos / 1_000_000).unwrap_or(u32::MAX);
    let mut o = Object::open(w)?;
    text(o.key("traceID")?, id)?;
    if !t.root_service_name.is_empty() {
        text(o.key("rootServiceName")?, &t.root_service_name)?;
    }
    if !root_name.is_empty() {
        text(o.key("rootTraceName")?, root_name)?;
    }
    if t.start_unix_nano != 0 {
        quoted(o.key("startTimeUnixNano")?, itoa::Buffer::new().format(t.start_unix_nano))?;
    }
    if duration_ms != 0 {
        o.key("durationMs")?.write_all(itoa::Buffer::new().format(duration_ms).as_bytes())?;
    }
    if let Some(set) = t.spansets.first() {
        spanset(o.key("spanSet")?, set)?;
    }
    if !t.spansets.is_empty() {
        array(o.key("spanSets")?, &t.spansets, spanset)?;
    }
    if !t.service_stats.is_empty() {
        let w = o.key("serviceStats")?;
        let mut stats = Object::open(w)?;
        for (name, (spans, errors)) in &t.service_stats {
            if !stats.first {
                stats.w.write_all(b",")?;
            }
            stats.first = false;
            text(stats.w, name)?;
            stats.w.write_all(b":")?;
            let mut s = Object::open(stats.w)?;
            if *spans != 0 {
                s.key("spanCount")?.write_all(itoa::Buffer::new().format(*spans).as_bytes())?;
            }
            if *errors != 0 {
                s.key("errorCount")?.write_all(itoa::Buffer::new().format(*errors).as_bytes())?;
            }
            s.close()?;
        }
        stats.close()?;
    }
    o.close()
}

fn spanset(w: &mut impl Write, x: &SpansetHit) -> io::Result<()> {
    let mut o = Object::open(w)?;
    if !x.spans.is_empty() {
        array(o.key("spans")?, &x.spans, span)?;
    }
    if x.matched != 0 {
        o.key("matched")?.write_all(itoa::Buffer::new().format(x.matched).as_bytes())?;
    }
    if !x.attributes.is_empty() {
        attributes(o.key("attributes")?, &x.attributes)?;
    }
    o.close()
}

fn span(w: &mut impl Write, x: &SpanHit) -> io::Result<()> {
    let mut o = Object::open(w)?;
    if !x.span_id.is_empty() {
        hex(o.key("spanID")?, &x.span_id)?;
    }
    if !x.name.is_empty() {
        text(o.key("name")?, &x.name)?;
    }
    if x.start_unix_nano != 0 {
        quoted(o.key("startTimeUnixNano")?, itoa::Buffer::new().format(x.start_unix_nano))?;
    }
    if x.duration_nanos != 0 {
        quoted(o.key("durationNanos")?, itoa::Buffer::new().format(x.duration_nanos))?;
    }
    if !x.attributes.is_empty() {
        attributes(o.key("attributes")?, &x.attributes)?;
    }
    o.close()
}

fn attributes<W: Write>(w: &mut W, kvs: &[KeyValue]) -> io::Result<()> {
    array(w, kvs, |w: &mut W, kv: &KeyValue| {
        let mut o = Object::open(w)?;
        text(o.key("key")?, &kv.key)?;
        any(o.key("value")?, kv.value.as_ref())?;
        o.close()
    })
}

/// A JSON array of `items`, each written by `item`.
fn array<W: Write, T>(w: &mut W, items: &[T], item: impl Fn(&mut W, &T) -> io::Result<()>) -> io::Result<()> {
    w.write_all(b"[")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        item(w, x)?;
    }
    w.write_all(b"]")
}

fn any(w: &mut impl Write, v: Option<&AnyValue>) -> io::Result<()> {
    let mut o = Object::open(w)?;
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => text(o.key("stringValue")?, s)?,
        Some(Value::IntValue(i)) => quoted(o.key("intValue")?, itoa::Buffer::new().format(*i))?,
        Some(Value::DoubleValue(d)) => serde_json::to_writer(o.key("doubleValue")?, d).map_err(io::Error::other)?,
        Some(Value::BoolValue(b)) => o.key("boolValue")?.write_all(if *b { b"true" } else { b"false" })?,
        Some(Value::ArrayValue(a)) => {
            let w = o.key("arrayValue")?;
            let mut arr = Object::open(w)?;
            array(arr.key("values")?, &a.values, |w, v| any(w, Some(v)))?;
            arr.close()?;
        }
        _ => {}
    }
    o.close()
}
