//! The write-ahead log: append-only segment files of checksummed records, one record per accepted request.
//!
//! A segment starts with `magic: 4 bytes | version: u32 LE` (segments written before the header existed start
//! directly with a record and are still read). Record layout: `len: u32 LE | crc32(body): u32 LE | body`, body =
//! `tenant_len: u16 LE | tenant | OTLP ExportTraceServiceRequest protobuf`. Replay stops at the first torn or
//! corrupt record of a segment (the tail of a write that never got its fsync, so it was never acknowledged);
//! after any failed append the log continues in a new segment, so such a tail never hides later records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Largest record replay will accept; anything bigger is corruption.
const MAX_RECORD: u32 = 1 << 30;
/// Longest tenant name a record can carry.
pub const MAX_TENANT: usize = 1024;
/// Largest request body a record can hold: the configured request limit may not exceed it.
pub const MAX_BODY: usize = MAX_RECORD as usize - 2 - MAX_TENANT;

/// First bytes of every segment. Read as a little-endian length they exceed `MAX_RECORD`, so a segment from
/// before the header existed (which starts with a record length) is never mistaken for one with a header.
const MAGIC: [u8; 4] = [0xF7, b'S', b'W', b'L'];
/// Layout version written after the magic.
pub const VERSION: u32 = 1;

/// One open segment being appended to.
pub struct Segment {
    pub seq: u64,
    file: File,
    len: u64,
    /// An append failed: what follows the last good record is unknown, so nothing more is written here.
    failed: bool,
    /// Test hook: the next append writes this many bytes, then fails without cutting them back.
    #[cfg(test)]
    torn_next: Option<usize>,
}

/// The log as the ingester uses it: the current segment, replaced by a fresh one after a failed append.
pub struct Wal {
    dir: PathBuf,
    /// `None` after a failed segment was given up and no new one could be created yet.
    segment: Option<Segment>,
    /// Sequence number of the current (or last) segment.
    seq: u64,
}

impl Wal {
    /// Opens a new segment `seq` in `dir` for appending.
    pub fn open(dir: &Path, seq: u64) -> io::Result<Self> {
        Ok(Wal { dir: dir.to_path_buf(), segment: Some(Segment::create(dir, seq)?), seq })
    }

    /// Sequence number of the segment being appended to (or of the last one, while there is none).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the current segment failed (or was given up) and takes no more records.
    pub fn failed(&self) -> bool {
        self.segment.as_ref().is_none_or(|s| s.failed)
    }

    /// Appends a group of records with one fsync. After a failed append the next one first moves to a new
    /// segment; if that cannot be created either, the append fails without writing anything.
    pub fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        if self.failed() {
            self.rotate()?;
        }
        match self.segment.as_mut() {
            Some(s) => s.append(parts),
            None => Err(io::Error::other("no WAL segment")),
        }
    }

    /// Starts the next segment; returns the sequence number of the one closed. When that fails and the current
    /// segment had failed, the segment is closed anyway: its file can then be deleted and its space freed once
    /// its records are in blocks (a full disk recovers that way).
    pub fn rotate(&mut self) -> io::Result<u64> {
        let closed = self.seq;
        match Segment::create(&self.dir, closed + 1) {
            Ok(next) => {
                self.segment = Some(next);
                self.seq = closed + 1;
                Ok(closed)
            }
            Err(e) => {
                if self.failed() {
                    self.segment = None;
                }
                Err(e)
            }
        }
    }

    #[cfg(test)]
    fn tear_next_append(&mut self, bytes: usize) {
        if let Some(s) = self.segment.as_mut() {
            s.torn_next = Some(bytes);
        }
    }
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
    /// Creates segment `seq` with its header and makes it and its directory entry durable.
    /// Sequence numbers only grow, so a file already at `seq` is the leftover of a creation that failed (a disk
    /// full while writing the header) and holds no record: it is started over.
    fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        let path = segment_path(dir, seq);
        OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let mut file = OpenOptions::new().append(true).open(&path)?;
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&VERSION.to_le_bytes());
        file.write_all(&head)?;
        file.sync_data()?;
        let len = head.len() as u64;
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            seq,
            file,
            len,
            failed: false,
            #[cfg(test)]
            torn_next: None,
        })
    }

    /// Appends records and fsyncs once for all of them (group commit). On failure the segment is cut back to
    /// its previous length when possible, and marked failed either way: after a failed fsync the file's
    /// contents are unknown, so the log moves on to a new segment.
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        if self.failed {
            return Err(io::Error::other("WAL segment unusable after a failed write"));
        }
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        parts.iter().for_each(|p| buf.extend_from_slice(p));
        #[cfg(test)]
        if let Some(n) = self.torn_next.take() {
            self.failed = true;
            self.file.write_all(&buf[..n.min(buf.len())])?;
            return Err(io::Error::other("torn write (test)"));
        }
        let res = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(buf.len() as u64)
            }
            Err(e) => {
                self.failed = true;
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
    let mut first = [0u8; 8];
    let n = read_full(&mut r, &mut first)?;
    // A segment without the header (written before it existed) starts with its first record.
    let mut pending = None;
    if n == 8 && first[..4] == MAGIC {
        let version = u32::from_le_bytes([first[4], first[5], first[6], first[7]]);
        if version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WAL segment {} has layout version {version}; this build reads {VERSION}", path.display()),
            ));
        }
    } else if n == 8 {
        pending = Some(first);
    } else {
        return Ok(out);
    }
    loop {
        let mut head = [0u8; 8];
        if let Some(h) = pending.take() {
            head = h;
        } else if read_full(&mut r, &mut head)? < 8 {
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

/// The WAL's identity: a UUID kept in `dir/instance`, created on first use. Blocks record it with the segments
/// they came from, so a restart knows which records are already in blocks (and a WAL never claims another's).
///
/// With `renew` (no segment left, so no record can need skipping) a new identity is made, so claims of earlier
/// blocks can never match segments numbered afresh.
pub fn instance_id(dir: &Path, renew: bool) -> io::Result<String> {
    let path = dir.join("instance");
    match fs::read_to_string(&path) {
        Ok(s) if !renew && !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = dir.join("instance.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(id)
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
    fn a_failed_append_never_hides_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1).unwrap();
        let rec = |t: &str, b: &[u8]| [record_header(t, b), b.to_vec()].concat();
        let (a, b, c) = (rec("t", b"first"), rec("t", b"lost"), rec("t", b"after"));
        wal.append(&[&a]).unwrap();
        // A write that fails after putting half a record on disk, which could not be cut back.
        wal.tear_next_append(b.len() / 2);
        assert!(wal.append(&[&b]).is_err());
        wal.append(&[&c]).unwrap();
        let replayed: Vec<Vec<u8>> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .flat_map(|s| read_segment(dir.path(), s).unwrap())
            .map(|r| r.body.to_vec())
            .collect();
        assert_eq!(replayed, vec![b"first".to_vec(), b"after".to_vec()]);
        assert_eq!(wal.seq(), 2, "the log moved to a new segment");
    }

    #[test]
    fn segments_carry_magic_and_version_and_old_ones_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 3).unwrap();
        wal.append(&[&record_header("t", b"x"), b"x"]).unwrap();
        let bytes = fs::read(segment_path(dir.path(), 3)).unwrap();
        assert_eq!(bytes[..4], MAGIC);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), VERSION);
        // A segment from before the header: records only.
        fs::write(segment_path(dir.path(), 4), [record_header("t", b"old"), b"old".to_vec()].concat()).unwrap();
        assert_eq!(&read_segment(dir.path(), 4).unwrap()[0].body[..], b"old");
        // A newer layout is refused rather than misread.
        let mut newer = bytes.clone();
        newer[4] = 9;
        fs::write(segment_path(dir.path(), 5), newer).unwrap();
        assert!(read_segment(dir.path(), 5).is_err());
    }

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
