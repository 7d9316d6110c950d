//! A module zip's file hashes, computed while the zip downloads: each
//! local entry is inflated and hashed as its bytes pass, so checking the
//! whole zip once it has arrived costs a read of its central directory,
//! not a second pass over every byte.
//!
//! What the go command hashes is what the central directory names, so the
//! entries seen on the way are used only when the central directory agrees
//! with every one of them (offset, name, method, sizes, CRC-32). Anything
//! this walk does not follow (encryption, ZIP64, a stored entry of unknown
//! length, an unknown method, a damaged header) leaves the zip to be
//! hashed whole from its file, exactly as before.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use aws_lc_rs::digest;
use crc32fast::Hasher as Crc;
use flate2::{Decompress, FlushDecompress, Status};

use super::dirhash::{HashError, UNZIPPED_LIMIT, hash_zip, hash_zip_bytes, hash1};
use crate::sha256::to_array;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL: u32 = 0x0605_4b50;
const DESCRIPTOR: u32 = 0x0807_4b50;
/// A local header's fixed part.
const FIXED: usize = 30;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
/// The most entries, and bytes of their names, a walk keeps: past them
/// (no module has so many files) the zip is left to be hashed whole.
const MAX_ENTRIES: usize = 200_000;
const MAX_NAMES: usize = 16 << 20;
/// Inflated bytes per step.
const OUT: usize = 64 << 10;

/// One entry as it passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    name: Vec<u8>,
    header_start: u64,
    method: u16,
    compressed: u64,
    size: u64,
    crc: u32,
    sha: [u8; 32],
}

/// The entry being read.
struct Current {
    name: Vec<u8>,
    header_start: u64,
    method: u16,
    compressed: u64,
    size: u64,
    crc: Crc,
    sha: digest::Context,
}

enum State {
    /// Collecting a local header (or meeting the central directory).
    Header,
    /// A stored entry with this many bytes left.
    Stored(u64),
    /// A deflated entry; `true`: a data descriptor follows it.
    Deflated(Box<Decompress>, bool),
    /// Collecting the data descriptor after a deflated entry.
    Descriptor,
    /// The central directory was reached: every entry has passed.
    Done,
    /// Not a zip this walk follows; the file is hashed whole.
    Abandoned,
}

/// Walks a zip's local entries as its bytes arrive, in order.
pub struct ZipWalk {
    state: State,
    /// Header or descriptor bytes collected so far.
    pending: Vec<u8>,
    /// The offset of the next byte fed.
    offset: u64,
    /// Where the header being collected starts.
    header_start: u64,
    current: Option<Current>,
    passed: Vec<Passed>,
    /// Inflated bytes still allowed (the go command's limit).
    left: u64,
    /// Bytes of entry names kept so far.
    names: usize,
    out: Vec<u8>,
}

impl Default for ZipWalk {
    fn default() -> Self {
        ZipWalk::within(UNZIPPED_LIMIT)
    }
}

impl ZipWalk {
    fn within(limit: u64) -> ZipWalk {
        ZipWalk {
            state: State::Header,
            pending: Vec::new(),
            offset: 0,
            header_start: 0,
            current: None,
            passed: Vec::new(),
            left: limit,
            names: 0,
            out: Vec::new(),
        }
    }

    /// Takes the next bytes of the zip.
    pub fn feed(&mut self, mut data: &[u8]) {
        // Steps that took no byte in a row (a state change may take none).
        let mut idle = 0;
        while !data.is_empty() {
            let used = match &mut self.state {
                State::Done | State::Abandoned => return,
                State::Header => self.header(data),
                State::Stored(_) => self.stored(data),
                State::Deflated(..) => self.inflate(data),
                State::Descriptor => self.descriptor(data),
            };
            idle = if used == 0 { idle + 1 } else { 0 };
            if idle > 2 {
                // No progress with bytes in hand: not a stream this walk follows.
                self.state = State::Abandoned;
            }
            self.offset += used as u64;
            data = &data[used..];
        }
    }

    /// The entries, when the whole zip passed and every one was followed.
    pub fn finish(self) -> Option<Vec<Passed>> {
        matches!(self.state, State::Done).then_some(self.passed)
    }

    /// Collects `want` bytes into `pending`; how many of `data` it took.
    fn collect(&mut self, data: &[u8], want: usize) -> usize {
        let take = want.saturating_sub(self.pending.len()).min(data.len());
        self.pending.extend_from_slice(&data[..take]);
        take
    }

    fn header(&mut self, data: &[u8]) -> usize {
        if self.pending.is_empty() {
            self.header_start = self.offset;
        }
        let mut used = self.collect(data, FIXED);
        if self.pending.len() < 4 {
            return used;
        }
        match u32_at(&self.pending, 0) {
            LOCAL_HEADER => {}
            CENTRAL_HEADER | END_OF_CENTRAL => {
                self.state = State::Done;
                return used;
            }
            _ => {
                self.state = State::Abandoned;
                return used;
            }
        }
        if self.pending.len() < FIXED {
            return used;
        }
        let name_len = u16_at(&self.pending, 26) as usize;
        let extra_len = u16_at(&self.pending, 28) as usize;
        used += self.collect(&data[used..], FIXED + name_len + extra_len);
        if self.pending.len() == FIXED + name_len + extra_len {
            self.start_entry(name_len);
        }
        used
    }

    /// Begins the entry whose whole local header is in `pending`.
    fn start_entry(&mut self, name_len: usize) {
        let header = std::mem::take(&mut self.pending);
        let flags = u16_at(&header, 6);
        let method = u16_at(&header, 8);
        let compressed = u32_at(&header, 18);
        let encrypted = flags & 1 != 0;
        let descriptor = flags & 8 != 0;
        self.names += name_len;
        let too_many = self.passed.len() >= MAX_ENTRIES || self.names > MAX_NAMES;
        self.state = match method {
            _ if encrypted || too_many => State::Abandoned,
            STORED if !descriptor && compressed != u32::MAX => State::Stored(compressed.into()),
            DEFLATED => State::Deflated(Box::new(Decompress::new(false)), descriptor),
            _ => State::Abandoned,
        };
        self.current = Some(Current {
            name: header[FIXED..FIXED + name_len].to_vec(),
            header_start: self.header_start,
            method,
            compressed: 0,
            size: 0,
            crc: Crc::new(),
            sha: digest::Context::new(&digest::SHA256),
        });
        if matches!(self.state, State::Stored(0)) {
            self.end_entry();
        }
    }

    fn stored(&mut self, data: &[u8]) -> usize {
        let State::Stored(left) = &mut self.state else {
            return 0;
        };
        let take = (*left).min(data.len() as u64) as usize;
        *left -= take as u64;
        let ended = *left == 0;
        if !self.hash(&data[..take], take) {
            return take;
        }
        if ended {
            self.end_entry();
        }
        take
    }

    /// Inflates what `data` carries; how many of its bytes were taken.
    fn inflate(&mut self, data: &[u8]) -> usize {
        let mut out = std::mem::take(&mut self.out);
        out.resize(OUT, 0);
        let used = loop {
            let State::Deflated(inflater, descriptor) = &mut self.state else {
                break 0;
            };
            let descriptor = *descriptor;
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater.decompress(data, &mut out, FlushDecompress::None);
            let used = (inflater.total_in() - before_in) as usize;
            let made = (inflater.total_out() - before_out) as usize;
            if !self.hash(&out[..made], used) {
                break used;
            }
            match status {
                Ok(Status::StreamEnd) if descriptor => self.state = State::Descriptor,
                Ok(Status::StreamEnd) => self.end_entry(),
                // Output made from what the inflater held: more may follow.
                Ok(_) if used == 0 && made > 0 => continue,
                Ok(_) if used > 0 => {}
                _ => self.state = State::Abandoned,
            }
            break used;
        };
        self.out = out;
        used
    }

    fn descriptor(&mut self, data: &[u8]) -> usize {
        let mut used = self.collect(data, 4);
        if self.pending.len() < 4 {
            return used;
        }
        let want = if u32_at(&self.pending, 0) == DESCRIPTOR {
            16
        } else {
            12
        };
        used += self.collect(&data[used..], want);
        if self.pending.len() == want {
            self.pending.clear();
            self.end_entry();
        }
        used
    }

    /// Adds inflated bytes to the current entry (`used` of the zip's bytes
    /// carried them); `false` when the limit is passed.
    fn hash(&mut self, inflated: &[u8], used: usize) -> bool {
        let Some(current) = &mut self.current else {
            self.state = State::Abandoned;
            return false;
        };
        if inflated.len() as u64 > self.left {
            self.state = State::Abandoned;
            return false;
        }
        self.left -= inflated.len() as u64;
        current.compressed += used as u64;
        current.size += inflated.len() as u64;
        current.crc.update(inflated);
        current.sha.update(inflated);
        true
    }

    fn end_entry(&mut self) {
        self.state = State::Header;
        if let Some(current) = self.current.take() {
            let sha = to_array(current.sha.finish());
            self.passed.push(Passed {
                name: current.name,
                header_start: current.header_start,
                method: current.method,
                compressed: current.compressed,
                size: current.size,
                crc: current.crc.finalize(),
                sha,
            });
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The `h1:` hash of the zip at `path`: from the entries `passed` on the
/// way when its central directory agrees with each of them, else by
/// reading the whole zip again.
pub fn hash_zip_passed(path: &Path, passed: Option<Vec<Passed>>) -> Result<String, HashError> {
    hash_passed(std::fs::File::open(path)?, passed, || hash_zip(path))
}

/// `hash_zip_passed` for a zip in memory.
pub fn hash_bytes_passed(zip: &[u8], passed: Option<Vec<Passed>>) -> Result<String, HashError> {
    hash_passed(Cursor::new(zip), passed, || {
        hash_zip_bytes(zip, UNZIPPED_LIMIT)
    })
}

fn hash_passed<R: Read + Seek>(
    zip: R,
    passed: Option<Vec<Passed>>,
    whole: impl FnOnce() -> Result<String, HashError>,
) -> Result<String, HashError> {
    if let Some(passed) = passed
        && let Some(files) = agreed(zip, passed)?
    {
        return Ok(hash1(files));
    }
    whole()
}

/// A file's name in the zip and the SHA-256 of its content.
type Named = (String, [u8; 32]);

/// The named file hashes, when the central directory lists exactly the
/// entries that passed.
fn agreed<R: Read + Seek>(zip: R, passed: Vec<Passed>) -> Result<Option<Vec<Named>>, HashError> {
    use zip::CompressionMethod;
    let mut archive = zip::ZipArchive::new(zip)?;
    if archive.len() != passed.len() {
        return Ok(None);
    }
    let mut files = Vec::with_capacity(passed.len());
    for (i, seen) in passed.into_iter().enumerate() {
        let entry = archive.by_index_raw(i)?;
        let method = match entry.compression() {
            CompressionMethod::Stored => STORED,
            CompressionMethod::Deflated => DEFLATED,
            _ => return Ok(None),
        };
        let same = entry.header_start() == seen.header_start
            && entry.name_raw() == seen.name.as_slice()
            && method == seen.method
            && entry.compressed_size() == seen.compressed
            && entry.size() == seen.size
            && entry.crc32() == seen.crc;
        if !same {
            return Ok(None);
        }
        let name = entry.name()?.to_string();
        if name.contains('\n') {
            return Err(HashError::BadName);
        }
        files.push((name, seen.sha));
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::CompressionMethod::{Deflated, Stored};
    use zip::write::SimpleFileOptions;

    use super::*;

    /// Files of a module zip: small text, an empty file, and a larger
    /// blob that compresses (so a deflated entry spans many steps).
    fn files() -> Vec<(&'static str, Vec<u8>)> {
        let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        vec![
            ("m@v1.0.0/go.mod", b"module m\n".to_vec()),
            ("m@v1.0.0/empty.txt", Vec::new()),
            ("m@v1.0.0/blob.bin", blob),
            ("m@v1.0.0/m.go", b"package m\n".to_vec()),
        ]
    }

    /// A zip as a seekable writer makes it (sizes in the local headers).
    fn seekable(method: zip::CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        for (name, content) in files() {
            zip.start_file(name, options).unwrap();
            zip.write_all(&content).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// A zip as a streaming writer makes it, as the go command's module
    /// zips are: deflated, each entry followed by a data descriptor.
    fn streamed() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new_stream(Vec::new());
        let options = SimpleFileOptions::default().compression_method(Deflated);
        for (name, content) in files() {
            zip.start_file(name, options).unwrap();
            zip.write_all(&content).unwrap();
        }
        let zip = zip.finish().unwrap().into_inner();
        assert_ne!(u16_at(&zip, 6) & 8, 0, "a data descriptor follows");
        assert_eq!(u16_at(&zip, 28), 0, "no extra field");
        zip
    }

    fn walk(zip: &[u8], piece: usize) -> Option<Vec<Passed>> {
        let mut walk = ZipWalk::default();
        for chunk in zip.chunks(piece) {
            walk.feed(chunk);
        }
        walk.finish()
    }

    fn write(dir: &Path, zip: &[u8]) -> std::path::PathBuf {
        let path = dir.join("m.zip");
        std::fs::write(&path, zip).unwrap();
        path
    }

    #[test]
    fn every_kind_of_zip_is_walked_to_the_hash_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let zips = [
            ("stored", seekable(Stored)),
            ("deflated", seekable(Deflated)),
            ("streamed", streamed()),
        ];
        for (kind, zip) in zips {
            let path = write(dir.path(), &zip);
            let whole = hash_zip(&path).unwrap();
            for piece in [1, 7, 30, 4096, 65_536, zip.len()] {
                let passed = walk(&zip, piece);
                let entries = passed.as_ref().map(Vec::len);
                assert_eq!(entries, Some(4), "{kind} in pieces of {piece}");
                let agreed =
                    agreed(std::fs::File::open(&path).unwrap(), passed.clone().unwrap()).unwrap();
                assert!(agreed.is_some(), "{kind}: the central directory agrees");
                assert_eq!(hash_bytes_passed(&zip, passed.clone()).unwrap(), whole);
                assert_eq!(hash_zip_passed(&path, passed).unwrap(), whole, "{kind}");
            }
        }
    }

    #[test]
    fn a_local_header_the_central_directory_disagrees_with_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let mut zip = seekable(Stored);
        // The first local header names another file (same length); the
        // central directory, which the go command reads, is unchanged.
        let at = FIXED + "m@v1.0.0/go.mo".len();
        zip[at] = b'x';
        let path = write(dir.path(), &zip);
        let passed = walk(&zip, 4096);
        assert!(passed.is_some(), "the walk itself sees a valid zip");
        assert_eq!(
            agreed(std::fs::File::open(&path).unwrap(), passed.clone().unwrap()).unwrap(),
            None
        );
        // Hashed whole instead: what the central directory names.
        let whole = hash_zip(&path);
        assert_eq!(
            hash_zip_passed(&path, passed).map_err(|e| e.to_string()),
            whole.map_err(|e| e.to_string())
        );
    }

    #[test]
    fn what_the_walk_cannot_follow_is_left_to_the_whole_file() {
        let zip = streamed();
        // Cut short: no central directory seen.
        assert_eq!(walk(&zip[..zip.len() / 2], 4096), None);
        // Not a zip.
        assert_eq!(walk(b"<html>not a zip</html>", 5), None);
        // A damaged deflate stream.
        let mut bad = zip.clone();
        let data = FIXED + "m@v1.0.0/go.mod".len() + 2;
        bad[data..data + 8].copy_from_slice(&[0xff; 8]);
        assert_eq!(walk(&bad, 4096), None);
        // More entries than a walk keeps: empty files, 30 bytes each.
        let mut many = ZipWalk::default();
        let mut empty = vec![0u8; FIXED];
        empty[..4].copy_from_slice(&LOCAL_HEADER.to_le_bytes());
        for _ in 0..=MAX_ENTRIES {
            many.feed(&empty);
        }
        assert!(matches!(many.state, State::Abandoned));
        assert!(many.passed.len() <= MAX_ENTRIES);
        // More inflated bytes than allowed.
        let mut small = ZipWalk::within(1000);
        small.feed(&zip);
        assert_eq!(small.finish(), None);
    }
}
