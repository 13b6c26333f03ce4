//! Token files: a corpus tokenised once (`rnn prepare`) into a memory-mapped file of token ids,
//! so that language-model training reads its windows in place instead of holding the text, its
//! tokens and their ids in memory (about 100 bytes a token) — the file costs 2 or 4 bytes a token
//! on disk and only the pages a window touches in memory.
//!
//! # Layout (little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `RNNTOKEN` |
//! | 8..12 | format version (u32, [`TOKEN_FILE_VERSION`]) |
//! | 12..16 | id width in bytes (u32: 2 when the vocabulary has at most 65,536 entries, else 4) |
//! | 16..24 | vocabulary entries (u64) |
//! | 24..48 | tokens of the training, validation and test parts (3 x u64) |
//! | 48..56 | FNV-1a 64 checksum of the id bytes |
//! | 56..64 | bytes of the vocabulary JSON (u64) |
//! | 64..72 | bytes of the metadata JSON (u64) |
//! | 72..80 | FNV-1a 64 checksum of the vocabulary and metadata bytes |
//! | 80..88 | FNV-1a 64 checksum of bytes 0..80 (the header itself) |
//! | 88..128 | zero (reserved; checked) |
//! | 128.. | the ids: training part, then validation, then test, each id `width` bytes |
//! | then | the vocabulary, as the `vocab.json` a language-model checkpoint holds |
//! | then | the metadata: a JSON value of the writer's choice (how the parts were made) |
//!
//! [`TokenFile::open`] checks all of it (magic, version, width, length, the three checksums, and
//! every id against the vocabulary) before mapping the file, with errors that name the file and
//! what is wrong. [`TokenFileWriter`] writes a temporary file beside the target and renames it
//! over the target only when complete, so a reader never sees a partial file and a mapped file is
//! never rewritten in place (a rewrite makes a new file; the old map keeps the old one).

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::vocab::Vocab;
use crate::{Error, Result};

/// The first 8 bytes of a token file.
pub const TOKEN_FILE_MAGIC: [u8; 8] = *b"RNNTOKEN";
/// The format version this build writes and reads.
pub const TOKEN_FILE_VERSION: u32 = 1;
/// Bytes of the fixed header; the ids start here.
pub const TOKEN_FILE_HEADER_BYTES: usize = 128;

/// Bytes read at a time when checking a file's ids.
const CHECK_BLOCK: usize = 1 << 20;

/// FNV-1a, 64 bits (<http://www.isthe.com/chongo/tech/comp/fnv/>): the checksums of a token
/// file. Not cryptographic; it catches truncation, bit flips and mixed-up files.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The empty hash.
    pub fn new() -> Self {
        Self(Self::OFFSET)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// The hash of what was added.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of `bytes`.
    pub fn hash(bytes: &[u8]) -> u64 {
        let mut h = Self::new();
        h.update(bytes);
        h.finish()
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

/// How many bytes one id takes in a token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdWidth {
    /// 2 bytes: vocabularies of at most 65,536 entries.
    U16,
    /// 4 bytes.
    U32,
}

impl IdWidth {
    /// The narrowest width that holds every id of a vocabulary of `entries`.
    pub fn for_vocab(entries: usize) -> Self {
        if entries <= 1 << 16 {
            IdWidth::U16
        } else {
            IdWidth::U32
        }
    }

    /// Bytes per id.
    pub fn bytes(self) -> usize {
        match self {
            IdWidth::U16 => 2,
            IdWidth::U32 => 4,
        }
    }

    fn from_bytes(n: u32) -> Option<Self> {
        match n {
            2 => Some(IdWidth::U16),
            4 => Some(IdWidth::U32),
            _ => None,
        }
    }

    /// Appends the ids encoded in `bytes` (a whole number of ids) to `out`.
    fn decode_into(self, bytes: &[u8], out: &mut Vec<u32>) {
        match self {
            IdWidth::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
            ),
            IdWidth::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }
}

/// The three parts of a token file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenPart {
    /// The training tokens (the only ones the vocabulary was built from).
    Train = 0,
    /// The validation tokens.
    Valid = 1,
    /// The test tokens (may be empty).
    Test = 2,
}

impl TokenPart {
    /// All parts in file order.
    pub const ALL: [TokenPart; 3] = [TokenPart::Train, TokenPart::Valid, TokenPart::Test];

    /// `train`, `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            TokenPart::Train => "train",
            TokenPart::Valid => "valid",
            TokenPart::Test => "test",
        }
    }
}

/// Where a [`TokenIds`] view reads from.
enum Store {
    Owned(Vec<u32>),
    /// `map[offset..]` holds the ids, `width` bytes each.
    Mapped {
        map: Mmap,
        offset: usize,
        width: IdWidth,
    },
}

/// A read-only sequence of token ids, owned or read in place from a token file's map. Cloning
/// and slicing share the storage (no copy). Reads widen to `u32`.
#[derive(Clone)]
pub struct TokenIds {
    store: Arc<Store>,
    start: usize,
    len: usize,
}

impl fmt::Debug for TokenIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.store {
            Store::Owned(_) => "owned",
            Store::Mapped { .. } => "mapped",
        };
        write!(
            f,
            "TokenIds({kind}, {}..{})",
            self.start,
            self.start + self.len
        )
    }
}

impl From<Vec<u32>> for TokenIds {
    fn from(ids: Vec<u32>) -> Self {
        let len = ids.len();
        Self {
            store: Arc::new(Store::Owned(ids)),
            start: 0,
            len,
        }
    }
}

impl TokenIds {
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids of `range` (indices into this view) as a view of the same storage.
    ///
    /// # Panics
    /// When `range` is not within `0..self.len()`, as slice indexing does.
    pub fn slice(&self, range: Range<usize>) -> TokenIds {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "TokenIds::slice: {range:?} out of 0..{}",
            self.len
        );
        Self {
            store: self.store.clone(),
            start: self.start + range.start,
            len: range.len(),
        }
    }

    /// Appends the ids of `range` (indices into this view) to `out`.
    ///
    /// # Panics
    /// When `range` is not within `0..self.len()`, as slice indexing does.
    pub fn extend_into(&self, range: Range<usize>, out: &mut Vec<u32>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "TokenIds::extend_into: {range:?} out of 0..{}",
            self.len
        );
        let (a, b) = (self.start + range.start, self.start + range.end);
        match &*self.store {
            Store::Owned(v) => out.extend_from_slice(&v[a..b]),
            Store::Mapped { map, offset, width } => {
                let w = width.bytes();
                width.decode_into(&map[offset + a * w..offset + b * w], out);
            }
        }
    }

    /// All ids, copied into a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        self.extend_into(0..self.len, &mut out);
        out
    }

    /// Whether the ids are read in place from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.store, Store::Mapped { .. })
    }

    /// A hint that the ids of `range` will not be read again soon: a mapped view lets the
    /// kernel drop the whole pages inside it from this process's memory (they are read back
    /// from the file if touched again). Keeps the resident memory of a pass over a large file
    /// bounded. Owned ids are untouched. Errors of the hint are ignored (it is only a hint).
    pub fn release(&self, range: Range<usize>) {
        let Store::Mapped { map, offset, width } = &*self.store else {
            return;
        };
        if range.start >= range.end || range.end > self.len {
            return;
        }
        let w = width.bytes();
        let page = RELEASE_ALIGN;
        let a = (offset + (self.start + range.start) * w).div_ceil(page) * page;
        let b = (offset + (self.start + range.end) * w) / page * page;
        if a < b {
            // SAFETY: the map is a read-only shared mapping of a file; MADV_DONTNEED only drops
            // this process's page-table entries for the range, and the next read faults the
            // same bytes back in from the file, so every slice of the map stays valid and
            // unchanged.
            let _ =
                unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
        }
    }
}

/// The unit of [`TokenIds::release`]: a multiple of every common page size (4, 16, 64 KiB), so
/// the advised range is page-aligned without asking the system.
const RELEASE_ALIGN: usize = 64 << 10;

/// What a token file holds besides its ids.
#[derive(Debug, Clone)]
pub struct TokenFileInfo {
    /// The id width.
    pub width: IdWidth,
    /// Tokens per part, in [`TokenPart`] order.
    pub counts: [u64; 3],
    /// The file's size in bytes.
    pub bytes: u64,
    /// The checksum of the ids.
    pub checksum: u64,
}

/// A token file, checked and mapped: its parts as [`TokenIds`], its vocabulary and metadata.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    vocab: Vocab,
    vocab_json: Vec<u8>,
    meta: serde_json::Value,
    info: TokenFileInfo,
    ids: TokenIds,
}

/// The parsed fixed header.
struct Header {
    width: IdWidth,
    vocab_len: u64,
    counts: [u64; 3],
    checksum: u64,
    vocab_bytes: u64,
    meta_bytes: u64,
    tail_checksum: u64,
}

impl Header {
    fn encode(&self) -> [u8; TOKEN_FILE_HEADER_BYTES] {
        let mut h = [0u8; TOKEN_FILE_HEADER_BYTES];
        h[0..8].copy_from_slice(&TOKEN_FILE_MAGIC);
        h[8..12].copy_from_slice(&TOKEN_FILE_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(self.width.bytes() as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.vocab_len.to_le_bytes());
        for (i, c) in self.counts.iter().enumerate() {
            h[24 + 8 * i..32 + 8 * i].copy_from_slice(&c.to_le_bytes());
        }
        h[48..56].copy_from_slice(&self.checksum.to_le_bytes());
        h[56..64].copy_from_slice(&self.vocab_bytes.to_le_bytes());
        h[64..72].copy_from_slice(&self.meta_bytes.to_le_bytes());
        h[72..80].copy_from_slice(&self.tail_checksum.to_le_bytes());
        let own = Fnv64::hash(&h[0..80]);
        h[80..88].copy_from_slice(&own.to_le_bytes());
        h
    }

    fn decode(path: &Path, h: &[u8; TOKEN_FILE_HEADER_BYTES]) -> Result<Self> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if h[0..8] != TOKEN_FILE_MAGIC {
            return Err(Error::file(
                path,
                format!(
                    "not a token file (wrong magic {:?}, expected {:?}); make one with `rnn prepare`",
                    String::from_utf8_lossy(&h[0..8]),
                    String::from_utf8_lossy(&TOKEN_FILE_MAGIC)
                ),
            ));
        }
        let own = u64_at(80);
        let computed = Fnv64::hash(&h[0..80]);
        if own != computed {
            return Err(Error::file(
                path,
                format!("header checksum mismatch (stored {own:016x}, computed {computed:016x}): the header is corrupt; prepare the file again"),
            ));
        }
        if h[88..].iter().any(|&b| b != 0) {
            return Err(Error::file(
                path,
                "the reserved header bytes 88..128 are not zero: the header is corrupt; prepare the file again",
            ));
        }
        let version = u32_at(8);
        if version != TOKEN_FILE_VERSION {
            return Err(Error::file(
                path,
                format!("token file format version {version}; this build reads version {TOKEN_FILE_VERSION} (prepare the file again with this build)"),
            ));
        }
        let width = IdWidth::from_bytes(u32_at(12)).ok_or_else(|| {
            Error::file(
                path,
                format!("id width {} bytes: expected 2 or 4", u32_at(12)),
            )
        })?;
        Ok(Self {
            width,
            vocab_len: u64_at(16),
            counts: [u64_at(24), u64_at(32), u64_at(40)],
            checksum: u64_at(48),
            vocab_bytes: u64_at(56),
            meta_bytes: u64_at(64),
            tail_checksum: u64_at(72),
        })
    }

    /// The file length the header implies, `None` when it overflows.
    fn expected_len(&self) -> Option<u64> {
        let ids = self
            .counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))?;
        (TOKEN_FILE_HEADER_BYTES as u64)
            .checked_add(ids.checked_mul(self.width.bytes() as u64)?)?
            .checked_add(self.vocab_bytes)?
            .checked_add(self.meta_bytes)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` starts with the token-file magic (`false` when it cannot be read: the caller's
/// own reading then reports why).
pub fn is_token_file(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == TOKEN_FILE_MAGIC
}

impl TokenFile {
    /// Opens, checks and maps the token file `path`: magic, version, width, the length the
    /// header implies, the header, vocabulary and id checksums, and that every id is below the
    /// vocabulary size. Reading the ids for the check goes through a small buffer, not the map,
    /// so it does not add the file to this process's resident memory.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let actual = file.metadata().map_err(|e| io_error(path, e))?.len();
        if actual < TOKEN_FILE_HEADER_BYTES as u64 {
            return Err(Error::file(
                path,
                format!("truncated: {actual} bytes, shorter than the {TOKEN_FILE_HEADER_BYTES}-byte header of a token file"),
            ));
        }
        let mut raw = [0u8; TOKEN_FILE_HEADER_BYTES];
        file.read_exact(&mut raw).map_err(|e| io_error(path, e))?;
        let header = Header::decode(path, &raw)?;
        let expected = header.expected_len().ok_or_else(|| {
            Error::file(path, "the header's sizes overflow: the header is corrupt")
        })?;
        let n_ids: u64 = header.counts.iter().sum();
        let ids_end = TOKEN_FILE_HEADER_BYTES as u64 + n_ids * header.width.bytes() as u64;
        if actual < ids_end {
            return Err(Error::file(
                path,
                format!("truncated: {actual} bytes, but its {n_ids} ids of {} bytes end at byte {ids_end}; prepare the file again", header.width.bytes()),
            ));
        }
        if actual < expected {
            return Err(Error::file(
                path,
                format!("truncated: {actual} bytes, the header describes {expected}; prepare the file again"),
            ));
        }
        if actual > expected {
            return Err(Error::file(
                path,
                format!("{actual} bytes, but the header describes {expected}: trailing data, the file is corrupt"),
            ));
        }
        let ids_bytes = n_ids * header.width.bytes() as u64;
        let total = usize::try_from(expected)
            .map_err(|_| Error::file(path, "too large to map on this machine"))?;

        // Vocabulary and metadata (small): read and checked first.
        file.seek(SeekFrom::Start(TOKEN_FILE_HEADER_BYTES as u64 + ids_bytes))
            .map_err(|e| io_error(path, e))?;
        let mut tail = vec![0u8; (header.vocab_bytes + header.meta_bytes) as usize];
        file.read_exact(&mut tail).map_err(|e| io_error(path, e))?;
        let computed = Fnv64::hash(&tail);
        if computed != header.tail_checksum {
            return Err(Error::file(
                path,
                format!("vocabulary/metadata checksum mismatch (stored {:016x}, computed {computed:016x}): the file is corrupt; prepare it again", header.tail_checksum),
            ));
        }
        let (vocab_json, meta_json) = tail.split_at(header.vocab_bytes as usize);
        let vocab = std::str::from_utf8(vocab_json)
            .map_err(|e| Error::file(path, format!("vocabulary: {e}")))
            .and_then(|s| Vocab::from_json(s).map_err(|e| Error::file(path, e.to_string())))?;
        if vocab.len() as u64 != header.vocab_len {
            return Err(Error::file(
                path,
                format!(
                    "the vocabulary has {} entries, the header says {}",
                    vocab.len(),
                    header.vocab_len
                ),
            ));
        }
        let meta: serde_json::Value = serde_json::from_slice(meta_json)
            .map_err(|e| Error::file(path, format!("metadata JSON: {e}")))?;

        // The ids: checksum and range, read through a buffer.
        file.seek(SeekFrom::Start(TOKEN_FILE_HEADER_BYTES as u64))
            .map_err(|e| io_error(path, e))?;
        let w = header.width.bytes();
        let mut hash = Fnv64::new();
        let mut buf = vec![0u8; CHECK_BLOCK / w * w];
        let mut ids = Vec::with_capacity(buf.len() / w);
        let (mut done, mut bad) = (0u64, None);
        while done < ids_bytes {
            let n = buf.len().min((ids_bytes - done) as usize);
            file.read_exact(&mut buf[..n])
                .map_err(|e| io_error(path, e))?;
            hash.update(&buf[..n]);
            if bad.is_none() {
                ids.clear();
                header.width.decode_into(&buf[..n], &mut ids);
                if let Some(i) = ids.iter().position(|&id| u64::from(id) >= header.vocab_len) {
                    bad = Some((done / w as u64 + i as u64, ids[i]));
                }
            }
            done += n as u64;
        }
        if hash.finish() != header.checksum {
            return Err(Error::file(
                path,
                format!("ids checksum mismatch (stored {:016x}, computed {:016x}): the file is corrupt; prepare it again", header.checksum, hash.finish()),
            ));
        }
        if let Some((at, id)) = bad {
            return Err(Error::file(
                path,
                format!(
                    "id {id} at token {at} is out of the vocabulary range (0..{})",
                    header.vocab_len
                ),
            ));
        }

        // SAFETY: the map is read-only. Token files are only ever replaced by renaming a new
        // file over them (TokenFileWriter), never written in place, so the mapped bytes do not
        // change while mapped; a file changed in place by another program is outside that
        // contract (as for every mapped file).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
        if map.len() != total {
            return Err(Error::file(
                path,
                format!(
                    "changed while being opened ({} bytes mapped, {total} checked)",
                    map.len()
                ),
            ));
        }
        let ids = TokenIds {
            store: Arc::new(Store::Mapped {
                map,
                offset: TOKEN_FILE_HEADER_BYTES,
                width: header.width,
            }),
            start: 0,
            len: n_ids as usize,
        };
        Ok(Self {
            path: path.to_path_buf(),
            vocab,
            vocab_json: vocab_json.to_vec(),
            meta,
            info: TokenFileInfo {
                width: header.width,
                counts: header.counts,
                bytes: expected,
                checksum: header.checksum,
            },
            ids,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vocabulary (ids are below its length).
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The vocabulary's bytes as stored (the `vocab.json` of a checkpoint).
    pub fn vocab_json(&self) -> &[u8] {
        &self.vocab_json
    }

    /// The metadata the writer stored.
    pub fn meta(&self) -> &serde_json::Value {
        &self.meta
    }

    /// Width, counts, size and checksum.
    pub fn info(&self) -> &TokenFileInfo {
        &self.info
    }

    /// The ids of one part, read in place.
    pub fn part(&self, part: TokenPart) -> TokenIds {
        let c = self.info.counts.map(|c| c as usize);
        let start: usize = c[..part as usize].iter().sum();
        self.ids.slice(start..start + c[part as usize])
    }
}

/// Writes a token file part by part, streaming: ids go through a buffer into a temporary file
/// beside the target, which [`TokenFileWriter::finish`] completes and renames over the target.
/// Dropped unfinished, it removes the temporary file.
pub struct TokenFileWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    vocab: Vocab,
    width: IdWidth,
    counts: [u64; 3],
    part: TokenPart,
    hash: Fnv64,
    buf: Vec<u8>,
}

impl TokenFileWriter {
    /// Starts the token file `path` for ids of `vocab` (which sets the id width).
    pub fn create(path: &Path, vocab: Vocab) -> Result<Self> {
        let tmp = super::temp_beside(path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                Error::file(
                    path,
                    format!("creating the temporary file {}: {e}", tmp.display()),
                )
            })?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; TOKEN_FILE_HEADER_BYTES])
            .map_err(|e| io_error(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(out),
            width: IdWidth::for_vocab(vocab.len()),
            vocab,
            counts: [0; 3],
            part: TokenPart::Train,
            hash: Fnv64::new(),
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// The id width of the file.
    pub fn width(&self) -> IdWidth {
        self.width
    }

    /// Tokens written so far per part.
    pub fn counts(&self) -> [u64; 3] {
        self.counts
    }

    /// Appends `id` to `part`. Parts come in file order (train, valid, test): an id of an
    /// earlier part after a later one, or an id outside the vocabulary, is an error.
    pub fn push(&mut self, part: TokenPart, id: u32) -> Result<()> {
        if part < self.part {
            return Err(Error::Invalid(format!(
                "{}: a {} token after the {} part began (parts are written in order train, valid, test)",
                self.path.display(),
                part.name(),
                self.part.name()
            )));
        }
        if id as usize >= self.vocab.len() {
            return Err(Error::Invalid(format!(
                "{}: id {id} is out of the vocabulary range (0..{})",
                self.path.display(),
                self.vocab.len()
            )));
        }
        self.part = part;
        self.counts[part as usize] += 1;
        match self.width {
            IdWidth::U16 => self.buf.extend_from_slice(&(id as u16).to_le_bytes()),
            IdWidth::U32 => self.buf.extend_from_slice(&id.to_le_bytes()),
        }
        if self.buf.len() >= 1 << 16 {
            self.flush_ids()?;
        }
        Ok(())
    }

    fn flush_ids(&mut self) -> Result<()> {
        self.hash.update(&self.buf);
        if let Some(out) = self.out.as_mut() {
            out.write_all(&self.buf)
                .map_err(|e| io_error(&self.tmp, e))?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes the vocabulary, `meta` and the header, syncs the file and renames it to the
    /// target path.
    pub fn finish(mut self, meta: &serde_json::Value) -> Result<TokenFileInfo> {
        self.flush_ids()?;
        let vocab_json = serde_json::to_vec(&self.vocab)
            .map_err(|e| Error::Invalid(format!("serialising the vocabulary: {e}")))?;
        let meta_json = serde_json::to_vec(meta)
            .map_err(|e| Error::Invalid(format!("serialising the metadata: {e}")))?;
        let mut tail = Fnv64::new();
        tail.update(&vocab_json);
        tail.update(&meta_json);
        let header = Header {
            width: self.width,
            vocab_len: self.vocab.len() as u64,
            counts: self.counts,
            checksum: self.hash.finish(),
            vocab_bytes: vocab_json.len() as u64,
            meta_bytes: meta_json.len() as u64,
            tail_checksum: tail.finish(),
        };
        let bytes = header.expected_len().unwrap_or(u64::MAX);
        let mut out = self
            .out
            .take()
            .ok_or_else(|| Error::Invalid(format!("{}: already finished", self.path.display())))?;
        let tmp = self.tmp.clone();
        let written = (|| -> std::io::Result<()> {
            out.write_all(&vocab_json)?;
            out.write_all(&meta_json)?;
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header.encode())?;
            file.sync_all()
        })();
        written.map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io_error(&self.path, e))?;
        Ok(TokenFileInfo {
            width: self.width,
            counts: self.counts,
            bytes,
            checksum: header.checksum,
        })
    }
}

impl Drop for TokenFileWriter {
    fn drop(&mut self) {
        // Unfinished (an error, or dropped early): leave nothing behind. After `finish` the
        // temporary file has been renamed away and this does nothing.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(entries: usize) -> Vocab {
        let mut tokens: Vec<String> = ["<pad>", "<unk>", "<bos>", "<eos>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokens.extend((4..entries).map(|i| format!("w{i}")));
        Vocab::from_tokens(tokens)
    }

    fn write(path: &Path, entries: usize, parts: [&[u32]; 3]) -> TokenFileInfo {
        let mut w = TokenFileWriter::create(path, vocab(entries)).unwrap();
        for (part, ids) in TokenPart::ALL.into_iter().zip(parts) {
            for &id in ids {
                w.push(part, id).unwrap();
            }
        }
        w.finish(&serde_json::json!({"level": "word"})).unwrap()
    }

    #[test]
    fn both_widths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (entries, width) in [
            (10, IdWidth::U16),
            (1 << 16, IdWidth::U16),
            ((1 << 16) + 1, IdWidth::U32),
        ] {
            let path = dir.path().join(format!("t{entries}.tokens"));
            let top = entries as u32 - 1;
            let train: Vec<u32> = (0..1000).map(|i| (i * 7919) % (top + 1)).collect();
            let info = write(&path, entries, [&train, &[top, 0, 5], &[]]);
            assert_eq!(info.width, width);
            let f = TokenFile::open(&path).unwrap();
            assert_eq!(f.info().width, width);
            assert_eq!(f.info().counts, [1000, 3, 0]);
            assert_eq!(f.info().bytes, std::fs::metadata(&path).unwrap().len());
            assert_eq!(f.part(TokenPart::Train).to_vec(), train);
            assert_eq!(f.part(TokenPart::Valid).to_vec(), vec![top, 0, 5]);
            assert!(f.part(TokenPart::Test).is_empty());
            assert!(f.part(TokenPart::Train).is_mapped());
            assert_eq!(f.vocab().len(), entries);
            assert_eq!(f.vocab_json(), serde_json::to_vec(f.vocab()).unwrap());
            assert_eq!(f.meta()["level"], "word");
            let mut some = Vec::new();
            f.part(TokenPart::Train)
                .slice(10..20)
                .extend_into(2..5, &mut some);
            assert_eq!(some, train[12..15]);
            // Releasing pages changes nothing that is read afterwards.
            f.part(TokenPart::Train).release(0..1000);
            assert_eq!(f.part(TokenPart::Train).to_vec(), train);
        }
        assert!(is_token_file(&dir.path().join("t10.tokens")));
        let text = dir.path().join("text.txt");
        std::fs::write(&text, "the cat sat\n").unwrap();
        assert!(!is_token_file(&text));
        assert!(!is_token_file(&dir.path().join("missing")));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn open_err(path: &Path) -> String {
        let e = TokenFile::open(path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        e
    }

    #[test]
    fn corruption_and_truncation_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tokens");
        let train: Vec<u32> = (0..500).map(|i| i % 10).collect();
        write(&path, 10, [&train, &[1, 2], &[3]]);
        let good = std::fs::read(&path).unwrap();
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            std::fs::write(&path, &b).unwrap();
            open_err(&path)
        };
        let e = bad(&|b| b.truncate(good.len() - 7));
        assert!(
            e.contains("truncated") && e.contains("the header describes"),
            "{e}"
        );
        let e = bad(&|b| b.truncate(TOKEN_FILE_HEADER_BYTES + 100));
        assert!(
            e.contains("truncated: 228 bytes, but its 503 ids of 2 bytes end at byte 1134"),
            "{e}"
        );
        let e = bad(&|b| b.truncate(50));
        assert!(e.contains("truncated") && e.contains("header"), "{e}");
        let e = bad(&|b| b[0] = b'X');
        assert!(
            e.contains("wrong magic") && e.contains("rnn prepare"),
            "{e}"
        );
        let e = bad(&|b| b[30] ^= 1);
        assert!(e.contains("header checksum mismatch"), "{e}");
        let e = bad(&|b| b[TOKEN_FILE_HEADER_BYTES + 10] ^= 1);
        assert!(e.contains("ids checksum mismatch"), "{e}");
        let e = bad(&|b| {
            let n = b.len();
            b[n - 3] ^= 1
        });
        assert!(e.contains("vocabulary/metadata checksum mismatch"), "{e}");
        let e = bad(&|b| b.push(0));
        assert!(e.contains("trailing data"), "{e}");
        // A version from the future, with a header checksum that matches it.
        let e = bad(&|b| {
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            let own = Fnv64::hash(&b[0..80]);
            b[80..88].copy_from_slice(&own.to_le_bytes());
        });
        assert!(
            e.contains("version 2") && e.contains("reads version 1"),
            "{e}"
        );
        // An id outside the vocabulary, with checksums that match it.
        let e = bad(&|b| {
            let at = TOKEN_FILE_HEADER_BYTES + 2 * 7;
            b[at..at + 2].copy_from_slice(&10u16.to_le_bytes());
            let ids_end = TOKEN_FILE_HEADER_BYTES + 2 * 503;
            let sum = Fnv64::hash(&b[TOKEN_FILE_HEADER_BYTES..ids_end]);
            b[48..56].copy_from_slice(&sum.to_le_bytes());
            let own = Fnv64::hash(&b[0..80]);
            b[80..88].copy_from_slice(&own.to_le_bytes());
        });
        assert!(
            e.contains("id 10 at token 7 is out of the vocabulary range (0..10)"),
            "{e}"
        );
    }

    #[test]
    fn any_damage_is_an_error_never_a_panic() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.tokens");
        let train: Vec<u32> = (0..300).map(|i| i % 9).collect();
        write(&path, 9, [&train, &[1, 2], &[3, 4]]);
        let good = std::fs::read(&path).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for round in 0..300 {
            let mut b = good.clone();
            match round % 3 {
                0 => b.truncate(rng.random_range(0..good.len())),
                1 => {
                    let at = rng.random_range(0..good.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                _ => {
                    // A random header whose own checksum matches: sizes, counts and width.
                    for x in &mut b[16..80] {
                        *x = rng.random();
                    }
                    if round % 2 == 0 {
                        // Plausible sizes, so that the length checks (not only overflow) run.
                        for at in (16..72).step_by(8) {
                            b[at + 3..at + 8].fill(0);
                        }
                    }
                    let own = Fnv64::hash(&b[0..80]);
                    b[80..88].copy_from_slice(&own.to_le_bytes());
                }
            }
            std::fs::write(&path, &b).unwrap();
            let e = TokenFile::open(&path).unwrap_err().to_string();
            assert!(e.contains("d.tokens"), "round {round}: {e}");
        }
    }

    #[test]
    fn the_writer_refuses_bad_ids_and_order_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.tokens");
        let mut w = TokenFileWriter::create(&path, vocab(6)).unwrap();
        w.push(TokenPart::Valid, 4).unwrap();
        let e = w.push(TokenPart::Train, 4).unwrap_err().to_string();
        assert!(e.contains("w.tokens") && e.contains("in order"), "{e}");
        let e = w.push(TokenPart::Test, 6).unwrap_err().to_string();
        assert!(e.contains("out of the vocabulary range (0..6)"), "{e}");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!path.exists());
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // From the FNV reference test suite (fnv1a64 of "" and "a", "foobar").
        assert_eq!(Fnv64::hash(b""), 0xcbf29ce484222325);
        assert_eq!(Fnv64::hash(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(Fnv64::hash(b"foobar"), 0x85944171f73967e8);
    }
}
