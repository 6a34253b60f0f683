//! Reading another process's memory (`/proc/PID/maps` and `/proc/PID/mem`, Linux): where a
//! secret's bytes are, at a moment the test chooses (a SnapStart snapshot point).
//!
//! The reader must be allowed to trace the process: a child of the test is (Yama's
//! `ptrace_scope` 1 lets a parent read its descendants).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// One place the bytes were found.
#[derive(Debug, Clone)]
pub struct Copy {
    /// Address in the process.
    pub address: u64,
    /// The mapping it is in (`[heap]`, `[stack]`, a file, or `anonymous`).
    pub mapping: String,
    /// Up to 40 bytes either side, printable ASCII kept, the rest as `.`, the bytes themselves as
    /// `<value>`: what surrounds the copy (an HTTP response, JSON, a bare string).
    pub context: String,
}

/// Every place `needle` occurs in the readable memory of process `pid` (no overlaps). Fails if a
/// writable mapping (heap, stacks, anonymous memory: where a value could be) cannot be read.
pub fn find(pid: u32, needle: &[u8]) -> Result<Vec<Copy>, String> {
    assert!(!needle.is_empty());
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("reading /proc/{pid}/maps: {e}"))?;
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(|e| format!("opening /proc/{pid}/mem: {e}"))?;
    let mut copies = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let mapping = fields.nth(3).unwrap_or("anonymous").to_owned();
        if !perms.starts_with('r')
            || mapping == "[vvar]"
            || mapping == "[vsyscall]"
            || mapping == "[vvar_vclock]"
        {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else {
            continue;
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        // Read-only mappings that cannot be read (device mappings) are skipped; writable ones,
        // where a value could be, must be read.
        if let Err(e) = read_fully(&mem, &mut bytes, start) {
            if perms.contains('w') {
                return Err(format!("reading {range} ({mapping}) of process {pid}: {e}"));
            }
            continue;
        }
        let mut at = 0;
        while let Some(found) = position(&bytes[at..], needle) {
            let offset = at + found;
            copies.push(Copy {
                address: start + offset as u64,
                mapping: mapping.clone(),
                context: context(&bytes, offset, needle.len()),
            });
            at = offset + needle.len();
        }
    }
    Ok(copies)
}

fn read_fully(mem: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match mem.read_at(&mut buf[done..], at + done as u64)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => done += n,
        }
    }
    Ok(())
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn context(bytes: &[u8], offset: usize, len: usize) -> String {
    let show = |range: &[u8]| -> String {
        range
            .iter()
            .map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' })
            .collect()
    };
    let before = &bytes[offset.saturating_sub(40)..offset];
    let after = &bytes[offset + len..(offset + len + 40).min(bytes.len())];
    format!("{}<value>{}", show(before), show(after))
}
