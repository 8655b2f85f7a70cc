//! Reading one chunk of a line-oriented file: the lines whose first byte lies in
//! `[start, end)`. Chunks are fixed byte ranges, so how a file is cut depends only on its size,
//! never on the worker count; every line belongs to exactly one chunk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use alertflow_model::dead_letter::MAX_RAW_BYTES;
use alertflow_model::decode::MAX_LINE_BYTES;

/// One line read from a chunk.
pub enum Line<'a> {
    /// A line without its `\n`.
    Text(&'a [u8]),
    /// A line longer than [`MAX_LINE_BYTES`]: its length and first bytes (it was skipped, not
    /// buffered).
    TooLong(usize, Vec<u8>),
}

/// A line, and the line after it when [`ChunkReader::next_line_peek`] could see it.
pub type Peeked<'a> = (Line<'a>, Option<&'a [u8]>);

/// Streams the lines of one chunk through a fixed-size buffer.
pub struct ChunkReader {
    file: File,
    /// Next file offset to read into the buffer.
    read_pos: u64,
    /// Lines starting at or after this offset belong to the next chunk.
    end: u64,
    /// File length.
    len: u64,
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    head: usize,
    /// File offset of `buf[head]`.
    head_offset: u64,
    /// Whether the start of the chunk must first skip the tail of the previous chunk's line.
    align: bool,
    block: usize,
    done: bool,
    /// Offset of the first line of this chunk, once known.
    first_line_offset: Option<u64>,
    /// Where in `buf` the line at `head` ends (its `\n`), when [`next_line_peek`](Self::next_line_peek)
    /// already found it.
    peeked_end: Option<usize>,
}

impl ChunkReader {
    /// A reader of the chunk `[start, end)` of `file` (length `len`), reading `block` bytes at
    /// a time.
    pub fn new(file: File, start: u64, end: u64, len: u64, block: usize) -> Self {
        Self::with_buffer(file, start, end, len, block, Vec::new())
    }

    /// [`new`](Self::new), reusing `buf`'s allocation (a fresh multi-megabyte buffer per chunk
    /// costs page faults).
    pub fn with_buffer(file: File, start: u64, end: u64, len: u64, block: usize, mut buf: Vec<u8>) -> Self {
        buf.clear();
        let align = start > 0;
        // To know whether a line starts exactly at `start`, look at the byte before it.
        let read_pos = if align { start - 1 } else { 0 };
        ChunkReader {
            file,
            read_pos,
            end,
            len,
            buf,
            head: 0,
            head_offset: read_pos,
            align,
            block: block.max(16),
            done: start >= len,
            first_line_offset: if start == 0 { Some(0) } else { None },
            peeked_end: None,
        }
    }

    /// Gives back the read buffer for the next chunk.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The file offset of the chunk's first line (after the chunk was aligned).
    pub fn first_line_offset(&self) -> Option<u64> {
        self.first_line_offset
    }

    /// Bytes of the file consumed so far by this reader.
    pub fn position(&self) -> u64 {
        self.head_offset
    }

    /// Refills the buffer, keeping unconsumed bytes. Returns false at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.read_pos >= self.len {
            return Ok(false);
        }
        self.peeked_end = None;
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        // Read whole blocks inside the chunk, then small steps past its end: only the tail of
        // its last line lies beyond it.
        let inside = self.end.saturating_sub(self.read_pos);
        let want = if inside > 0 { (self.block as u64).min(inside + 4096) } else { 64 * 1024 };
        let want = want.min(self.len - self.read_pos) as usize;
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let mut got = 0;
        while got < want {
            let n = self.file.read_at(&mut self.buf[old + got..], self.read_pos + got as u64)?;
            if n == 0 {
                break; // the file shrank while we read it
            }
            got += n;
        }
        self.buf.truncate(old + got);
        self.read_pos += got as u64;
        if got == 0 {
            self.len = self.read_pos;
        }
        Ok(got > 0)
    }

    /// Consumes through the next `\n` without buffering; returns the bytes skipped (including
    /// the newline) and whether a newline was found.
    fn skip_line(&mut self, keep: &mut Vec<u8>) -> io::Result<(u64, bool)> {
        let mut skipped = 0u64;
        loop {
            let avail = &self.buf[self.head..];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                if keep.len() < MAX_RAW_BYTES {
                    let n = i.min(MAX_RAW_BYTES - keep.len());
                    keep.extend_from_slice(&avail[..n]);
                }
                self.head += i + 1;
                self.head_offset += i as u64 + 1;
                return Ok((skipped + i as u64 + 1, true));
            }
            if keep.len() < MAX_RAW_BYTES {
                let n = avail.len().min(MAX_RAW_BYTES - keep.len());
                keep.extend_from_slice(&avail[..n]);
            }
            skipped += avail.len() as u64;
            self.head_offset += avail.len() as u64;
            self.buf.clear();
            self.head = 0;
            if !self.fill()? {
                return Ok((skipped, false));
            }
        }
    }

    /// The next line of the chunk, or `None` when the chunk is done.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        Ok(self.next_range()?.map(|n| match n {
            Next::Text(start, stop) => Line::Text(&self.buf[start..stop]),
            Next::TooLong(len, raw) => Line::TooLong(len, raw),
        }))
    }

    /// [`next_line`](Self::next_line), with the line after it when that one is already in the
    /// buffer whole and starts inside this chunk, so that it is the line the next call
    /// returns: for a decoder to read ahead. Its end is found once: the next call starts there.
    pub fn next_line_peek(&mut self) -> io::Result<Option<Peeked<'_>>> {
        Ok(match self.next_range()? {
            None => None,
            Some(Next::TooLong(len, raw)) => Some((Line::TooLong(len, raw), None)),
            Some(Next::Text(start, stop)) => {
                // After a line that ended the file (no `\n`) `done` is set; the next line must
                // start before the chunk's end, or it is the next chunk's.
                let peek = if self.done || self.head_offset >= self.end {
                    None
                } else {
                    memchr::memchr(b'\n', &self.buf[self.head..]).map(|i| {
                        self.peeked_end = Some(self.head + i);
                        (self.head, self.head + i)
                    })
                };
                Some((Line::Text(&self.buf[start..stop]), peek.map(|(a, b)| &self.buf[a..b])))
            }
        })
    }

    /// The next line as a range of `buf` (or a line too long to buffer).
    fn next_range(&mut self) -> io::Result<Option<Next>> {
        if self.done {
            return Ok(None);
        }
        if self.align {
            self.align = false;
            let mut ignore = Vec::new();
            let (_, found) = self.skip_line(&mut ignore)?;
            if !found {
                self.done = true;
                return Ok(None);
            }
            self.first_line_offset = Some(self.head_offset);
        }
        if self.head_offset >= self.end || (self.head_offset >= self.len && self.head >= self.buf.len()) {
            self.done = true;
            return Ok(None);
        }
        if let Some(stop) = self.peeked_end.take() {
            let start = self.head;
            self.head = stop + 1;
            self.head_offset += (stop + 1 - start) as u64;
            return Ok(Some(Next::Text(start, stop)));
        }
        // Find the end of the line, reading more as needed.
        let mut scan_from = self.head;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scan_from..]) {
                let start = self.head;
                let stop = scan_from + i;
                self.head = stop + 1;
                self.head_offset += (stop + 1 - start) as u64;
                return Ok(Some(Next::Text(start, stop)));
            }
            let pending = self.buf.len() - self.head;
            if pending > MAX_LINE_BYTES {
                // Too long to buffer: skip it and report its length and head.
                let mut raw = Vec::with_capacity(MAX_RAW_BYTES);
                let (n, found) = self.skip_line(&mut raw)?;
                let len = n - found as u64;
                if !found {
                    self.done = true;
                }
                return Ok(Some(Next::TooLong(len as usize, raw)));
            }
            scan_from = self.buf.len();
            let start_rel = self.head;
            if !self.fill()? {
                // End of file: the rest is the last line, without a newline.
                if self.head < self.buf.len() {
                    let start = self.head;
                    let stop = self.buf.len();
                    self.head = stop;
                    self.head_offset += (stop - start) as u64;
                    self.done = true;
                    return Ok(Some(Next::Text(start, stop)));
                }
                self.done = true;
                return Ok(None);
            }
            // `fill` moved unconsumed bytes to the front.
            scan_from -= start_rel;
        }
    }
}

/// A line found by [`ChunkReader::next_range`].
enum Next {
    /// `buf[start..stop]`.
    Text(usize, usize),
    /// Too long to buffer: its length and first bytes.
    TooLong(usize, Vec<u8>),
}

/// Counts the newlines in `[from, to)` of a file.
pub fn count_newlines(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = from;
    let mut count = 0u64;
    while pos < to {
        let want = ((to - pos) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        count += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        pos += n as u64;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Every line of every chunk, read with `next_line`, or with `next_line_peek` (`peek`);
    /// then each line peeked must be the line the reader hands over next, in its chunk.
    fn lines_of(path: &std::path::Path, chunk: u64, block: usize, peek: bool) -> Vec<(u64, Vec<u8>)> {
        let len = std::fs::metadata(path).unwrap().len();
        let mut out = Vec::new();
        let chunks = len.div_ceil(chunk).max(1);
        for k in 0..chunks {
            let f = File::open(path).unwrap();
            let mut r = ChunkReader::new(f, k * chunk, (k + 1) * chunk, len, block);
            let mut idx = 0u64;
            let mut peeked: Option<Vec<u8>> = None;
            loop {
                let l = if peek {
                    let Some((l, next)) = r.next_line_peek().unwrap() else { break };
                    let text = match &l {
                        Line::Text(t) => Some(t.to_vec()),
                        Line::TooLong(..) => None,
                    };
                    if let Some(p) = peeked.take() {
                        assert_eq!(Some(p), text, "chunk {k}, line {idx}: not the line peeked");
                    }
                    peeked = next.map(|n| n.to_vec());
                    l
                } else {
                    let Some(l) = r.next_line().unwrap() else { break };
                    l
                };
                match l {
                    Line::Text(t) => out.push((k * 1_000_000 + idx, t.to_vec())),
                    Line::TooLong(n, raw) => {
                        assert!(n > MAX_LINE_BYTES);
                        out.push((k * 1_000_000 + idx, raw))
                    }
                }
                idx += 1;
            }
            assert_eq!(peeked, None, "chunk {k}: a line was peeked past the chunk's last one");
        }
        out
    }

    #[test]
    fn every_line_is_read_once_whatever_the_chunking() {
        let dir = std::env::temp_dir().join(format!("af-chunk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut seed = 7u64;
        for trial in 0..40 {
            let path = dir.join(format!("t{trial}.txt"));
            let mut want = Vec::new();
            let mut f = File::create(&path).unwrap();
            let n = (trial * 7) % 50;
            for i in 0..n {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let len = (seed >> 33) % 40;
                let line: Vec<u8> = (0..len).map(|j| b'a' + ((i + j as usize) % 26) as u8).collect();
                f.write_all(&line).unwrap();
                want.push(line);
                if i + 1 < n || trial % 2 == 0 {
                    f.write_all(b"\n").unwrap();
                }
            }
            drop(f);
            // A trailing empty "line" after the last newline is not a line.
            for chunk in [1u64, 2, 3, 7, 16, 64, 1000] {
                for block in [16usize, 33, 4096] {
                    for peek in [false, true] {
                        let got: Vec<Vec<u8>> = lines_of(&path, chunk, block, peek).into_iter().map(|(_, l)| l).collect();
                        assert_eq!(got, want, "trial {trial} chunk {chunk} block {block} peek {peek}");
                    }
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_lines_are_skipped_not_buffered() {
        let dir = std::env::temp_dir().join(format!("af-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("long.txt");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"first\n").unwrap();
        f.write_all(&vec![b'x'; 3 * MAX_LINE_BYTES]).unwrap();
        f.write_all(b"\nlast\n").unwrap();
        drop(f);
        for peek in [false, true] {
            let got = lines_of(&path, 1 << 30, 1 << 16, peek);
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].1, b"first");
            assert_eq!(got[1].1.len(), MAX_RAW_BYTES);
            assert_eq!(got[2].1, b"last");
        }
        assert_eq!(count_newlines(&File::open(&path).unwrap(), 0, 6).unwrap(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
