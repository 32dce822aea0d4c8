//! The write-ahead log: append-only segment files of checksummed records, one record per accepted request.
//!
//! Record layout: `len: u32 LE | crc32(body): u32 LE | body`, body = `tenant_len: u16 LE | tenant | OTLP
//! ExportTraceServiceRequest protobuf`. Replay stops at the first torn or corrupt record of a segment (the tail of
//! a write that never got its fsync, so it was never acknowledged).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Largest record replay will accept; anything bigger is corruption.
const MAX_RECORD: u32 = 1 << 30;

/// One open segment being appended to.
pub struct Segment {
    pub seq: u64,
    file: File,
    len: u64,
}

/// A record read back during replay.
pub struct Record {
    pub tenant: String,
    pub body: Bytes,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Sequence numbers of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse().ok()))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Encodes one record's header and tenant prefix; the protobuf body follows it unchanged.
pub fn record_header(tenant: &str, body: &[u8]) -> Vec<u8> {
    let tenant = tenant.as_bytes();
    let body_len = 2 + tenant.len() + body.len();
    let mut crc = crc32fast::Hasher::new();
    let tlen = (tenant.len() as u16).to_le_bytes();
    crc.update(&tlen);
    crc.update(tenant);
    crc.update(body);
    let mut h = Vec::with_capacity(8 + 2 + tenant.len());
    h.extend_from_slice(&(body_len as u32).to_le_bytes());
    h.extend_from_slice(&crc.finalize().to_le_bytes());
    h.extend_from_slice(&tlen);
    h.extend_from_slice(tenant);
    h
}

impl Segment {
    /// Creates segment `seq` and makes its directory entry durable.
    pub fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))?;
        let len = file.metadata()?.len();
        File::open(dir)?.sync_all()?;
        Ok(Segment { seq, file, len })
    }

    /// Appends records and fsyncs once for all of them (group commit). On failure the segment is cut back to
    /// its previous length so a half-written group cannot be replayed as if it had been acknowledged.
    pub fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        parts.iter().for_each(|p| buf.extend_from_slice(p));
        let res = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(buf.len() as u64)
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}

/// Reads every intact record of a segment.
pub fn read_segment(dir: &Path, seq: u64) -> io::Result<Vec<Record>> {
    let path = segment_path(dir, seq);
    let mut r = BufReader::new(File::open(&path)?);
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 8];
        if read_full(&mut r, &mut head)? < 8 {
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(2..=MAX_RECORD).contains(&len) {
            tracing::warn!(segment = %path.display(), "corrupt WAL record length; ignoring the rest of the segment");
            break;
        }
        let mut body = vec![0u8; len as usize];
        if read_full(&mut r, &mut body)? < body.len() {
            tracing::warn!(segment = %path.display(), "torn WAL record at end of segment (never acknowledged)");
            break;
        }
        if crc32fast::hash(&body) != crc {
            tracing::warn!(segment = %path.display(), "WAL record checksum mismatch; ignoring the rest of the segment");
            break;
        }
        let tlen = u16::from_le_bytes([body[0], body[1]]) as usize;
        if 2 + tlen > body.len() {
            break;
        }
        let tenant = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
        let body = Bytes::from(body).slice(2 + tlen..);
        out.push(Record { tenant, body });
    }
    Ok(out)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Deletes every segment up to and including `seq`: their spans are all in blocks now.
pub fn remove_through(dir: &Path, seq: u64) -> io::Result<()> {
    for s in list_segments(dir)?.into_iter().filter(|s| *s <= seq) {
        fs::remove_file(segment_path(dir, s))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 7).unwrap();
        let h1 = record_header("t1", b"hello");
        let h2 = record_header("t2", b"world");
        seg.append(&[&h1, b"hello", &h2, b"world"]).unwrap();
        drop(seg);
        // A torn third record.
        let mut f = OpenOptions::new().append(true).open(segment_path(dir.path(), 7)).unwrap();
        f.write_all(&record_header("t3", b"lost")[..6]).unwrap();
        let recs = read_segment(dir.path(), 7).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].tenant.as_str(), &recs[0].body[..]), ("t1", &b"hello"[..]));
        assert_eq!((recs[1].tenant.as_str(), &recs[1].body[..]), ("t2", &b"world"[..]));
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
        remove_through(dir.path(), 7).unwrap();
        assert!(list_segments(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn corrupt_record_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 1).unwrap();
        let mut h = record_header("t", b"abc");
        h[5] ^= 0xff; // break the checksum
        seg.append(&[&h, b"abc"]).unwrap();
        assert!(read_segment(dir.path(), 1).unwrap().is_empty());
    }
}
