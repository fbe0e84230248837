//! The data directory as one tar stream, the way Postgres' own base backup sends it.
//!
//! Blocking code: it runs on a blocking thread and writes into any [`Write`] (the compressor,
//! then the uploader's channel).
//!
//! What is left out is what `pg_basebackup` leaves out (Postgres' `basebackup.c`): the
//! content of `pg_wal` (the directory and its `archive_status/` stay: recovery gets WAL from
//! the archive), of `pg_dynshmem`, `pg_notify`, `pg_replslot`, `pg_serial`, `pg_snapshots`,
//! `pg_stat_tmp` and `pg_subtrans` (the directories stay); `postmaster.pid`,
//! `postmaster.opts`, temporary files and relations (`pgsql_tmp*`, `t<n>_<n>`), relcache
//! init files, a stale `backup_label`/`tablespace_map`; and the files this manager writes to
//! steer a start (`standby.signal`, `recovery.signal`, `pgwarden-recovery.conf`,
//! `backup_label.old`).
//!
//! Postgres runs while the files are read:
//! - a file or directory that vanishes during the walk (a dropped relation) is skipped;
//! - a file's size is taken when it is opened and exactly that many bytes are stored: a file
//!   that shrinks is padded with zeros and one that grows is cut, as `pg_basebackup` does
//!   (replaying WAL from the backup's start repairs both);
//! - `global/pg_control` is sent last.
//!
//! With [`DataDirTar::verify_pages`], the pages of relation files are checked against their
//! data checksums as they are read ([`checksum`]); what fails is counted in [`Totals`], and
//! stored as read.
//!
//! Tablespaces, as `pg_basebackup -Ft` stores them: the links `pg_tblspc/<oid>` are left out
//! of the data directory's tar (Postgres recreates them from the `tablespace_map` stored
//! beside `backup_label`), and each tablespace's directory is a tar of its own
//! ([`tablespaces`], [`DataDirTar::append_tree`]), to be unpacked where the map says.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

pub mod checksum;

use checksum::{BLCKSZ, ChecksumTally, FileCheck};

/// Directories whose content is not backed up (the directory itself is).
const EMPTY_DIRS: [&str; 8] =
    ["pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// Files of the data directory's top level that are not backed up.
const SKIPPED_TOP_FILES: [&str; 13] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "standby.signal",
    "recovery.signal",
    crate::pgconf::RECOVERY_CONF,
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_control.tmp",
];

/// The control file, sent last.
const PG_CONTROL: &str = "global/pg_control";

/// Bytes read from a file at once.
const READ_BUFFER: usize = 1024 * 1024;

/// What the walk does with one entry of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (a directory with its content).
    Include,
    /// A directory stored empty.
    EmptyDir,
    /// Not stored.
    Skip,
}

/// The verdict for `rel`, a path relative to the data directory.
pub fn verdict(rel: &Path) -> Verdict {
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some(name) = parts.last().and_then(|n| n.to_str()) else { return Verdict::Skip };
    if parts.len() == 1 {
        if EMPTY_DIRS.contains(&name) {
            return Verdict::EmptyDir;
        }
        if SKIPPED_TOP_FILES.contains(&name) {
            return Verdict::Skip;
        }
    }
    if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") || is_temp_relation(name) {
        return Verdict::Skip;
    }
    Verdict::Include
}

/// `t<backend>_<relfilenode>[_fork][.<segment>]`: a temporary relation's file.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else { return false };
    let (rest, _segment) = match rest.split_once('.') {
        Some((r, s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => (r, Some(s)),
        Some(_) => return false,
        None => (rest, None),
    };
    let mut parts = rest.splitn(3, '_');
    let digits = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let (backend, node, fork) = (parts.next(), parts.next(), parts.next());
    digits(backend) && digits(node) && fork.is_none_or(|f| matches!(f, "fsm" | "vm" | "init"))
}

/// What was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of file content stored.
    pub data_bytes: u64,
    /// Regular files stored.
    pub files: u64,
    /// Data pages checked against their checksums, and those that failed.
    pub pages: ChecksumTally,
}

impl Totals {
    /// Adds what another object of the same backup read.
    pub fn add(&mut self, other: Totals) {
        self.data_bytes += other.data_bytes;
        self.files += other.files;
        self.pages.add(other.pages);
    }
}

/// Page checksum verification of a tree's relation files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageChecks {
    /// The backup's start LSN: pages changed at or after it are not checked.
    pub start_lsn: u64,
    /// The tree is a tablespace's directory, not the data directory.
    pub in_tablespace: bool,
    /// What the tree's paths are prefixed with in reports (`pg_tblspc/<oid>` for a
    /// tablespace; empty for the data directory).
    pub report_prefix: PathBuf,
}

/// A tar stream of a data directory being written into `W`.
pub struct DataDirTar<W: Write> {
    builder: tar::Builder<BufWriter<W>>,
    data_dir: PathBuf,
    totals: Totals,
    buf: Vec<u8>,
    checks: Option<PageChecks>,
}

fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl<W: Write> DataDirTar<W> {
    /// A tar stream of `data_dir` into `out`.
    pub fn new(out: W, data_dir: &Path) -> Self {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(256 * 1024, out));
        builder.mode(tar::HeaderMode::Complete);
        Self {
            builder,
            data_dir: data_dir.to_path_buf(),
            totals: Totals::default(),
            buf: vec![0; READ_BUFFER],
            checks: None,
        }
    }

    /// Verifies the checksums of the relation files' pages as they are read.
    pub fn verify_pages(mut self, checks: PageChecks) -> Self {
        self.checks = Some(checks);
        self
    }

    /// Appends the data directory (without what Postgres excludes), `global/pg_control` last.
    pub fn append_data_dir(&mut self) -> io::Result<()> {
        let root = self.data_dir.clone();
        self.walk(&root, Path::new(""))?;
        let control = root.join(PG_CONTROL);
        self.append_file(&control, Path::new(PG_CONTROL))
    }

    /// Appends the whole tree (a tablespace's directory), with the same exclusions inside.
    pub fn append_tree(&mut self) -> io::Result<()> {
        let root = self.data_dir.clone();
        self.walk(&root, Path::new(""))
    }

    /// Appends a file of `content` at the root of the archive (`backup_label`).
    pub fn append_bytes(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(jiff::Timestamp::now().as_second().max(0) as u64);
        self.builder.append_data(&mut header, name, content)
    }

    /// Ends the archive and flushes; gives back the writer and what was read.
    pub fn finish(self) -> io::Result<(W, Totals)> {
        let totals = self.totals;
        let out = self.builder.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        Ok((out, totals))
    }

    fn walk(&mut self, dir: &Path, rel: &Path) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) => return Err(context("cannot list", dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(e) if vanished(&e) => {}
                Err(e) => return Err(context("cannot list", dir, e)),
            }
        }
        names.sort();
        for name in names {
            let abs = dir.join(&name);
            let child = rel.join(&name);
            if child == Path::new(PG_CONTROL) {
                continue;
            }
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(context("cannot stat", &abs, e)),
            };
            match verdict(&child) {
                Verdict::Skip => continue,
                Verdict::EmptyDir => {
                    // pg_wal may be a link to another volume: store a plain directory.
                    let target = fs::metadata(&abs).unwrap_or(meta);
                    if target.is_dir() {
                        self.append_dir(&child, &target)?;
                        if child == Path::new("pg_wal") {
                            self.append_dir(&child.join("archive_status"), &target)?;
                        }
                    }
                    continue;
                }
                Verdict::Include => {}
            }
            let kind = meta.file_type();
            if kind.is_dir() {
                self.append_dir(&child, &meta)?;
                self.walk(&abs, &child)?;
            } else if kind.is_file() {
                self.append_file(&abs, &child)?;
            } else if kind.is_symlink() {
                if rel == Path::new("pg_tblspc") {
                    // A tablespace: stored apart, linked again from tablespace_map.
                    continue;
                }
                self.append_symlink(&abs, &child, &meta)?;
            }
            // Sockets and FIFOs are not data.
        }
        Ok(())
    }

    fn append_symlink(&mut self, abs: &Path, rel: &Path, meta: &Metadata) -> io::Result<()> {
        let target = match fs::read_link(abs) {
            Ok(t) => t,
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) => return Err(context("cannot read the link", abs, e)),
        };
        let mut header = header_for(meta, tar::EntryType::Symlink, 0);
        self.builder.append_link(&mut header, rel, target)
    }

    fn append_dir(&mut self, rel: &Path, meta: &Metadata) -> io::Result<()> {
        let mut header = header_for(meta, tar::EntryType::Directory, 0);
        self.builder.append_data(&mut header, rel, io::empty())
    }

    /// Appends one regular file: exactly the size it had when opened.
    fn append_file(&mut self, abs: &Path, rel: &Path) -> io::Result<()> {
        let mut file = match File::open(abs) {
            Ok(f) => f,
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) => return Err(context("cannot open", abs, e)),
        };
        let meta = file.metadata().map_err(|e| context("cannot stat", abs, e))?;
        self.append_content(&mut file, &meta, rel, abs)
    }

    /// Appends `content` as a file of `meta.len()` bytes: cut when it holds more, padded with
    /// zeros when it holds less.
    fn append_content(&mut self, content: &mut File, meta: &Metadata, rel: &Path, abs: &Path) -> io::Result<()> {
        let size = meta.len();
        let mut check = self.checks.as_ref().and_then(|c| {
            let segno = checksum::relation_segment(rel, c.in_tablespace)?;
            Some(FileCheck::new(c.report_prefix.join(rel).display().to_string(), segno, c.start_lsn))
        });
        let mut header = header_for(meta, tar::EntryType::Regular, size);
        // The header (with a long-name extension if needed), then the content written here,
        // in large reads, and the padding to a whole block.
        self.builder.append_data(&mut header, rel, io::empty())?;
        let out = self.builder.get_mut();
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = match content.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context("cannot read", abs, e)),
            };
            out.write_all(&self.buf[..n])?;
            if let Some(check) = &mut check {
                let mut reread = |offset, page: &mut [u8; BLCKSZ]| reread_page(content, offset, page);
                check.feed(&self.buf[..n], &mut reread, &mut self.totals.pages);
            }
            remaining -= n as u64;
        }
        if let Some(check) = check {
            check.finish();
        }
        if remaining > 0 {
            // The file shrank while it was read: the size in the header stands.
            tracing::debug!(file = %abs.display(), missing = remaining, "file shrank during the backup; padded");
            write_zeros(out, remaining)?;
        }
        write_zeros(out, (512 - size % 512) % 512)?;
        self.totals.data_bytes += size;
        self.totals.files += 1;
        Ok(())
    }
}

/// The tablespaces of `data_dir`: the links in `pg_tblspc`, as (oid, location), by oid.
pub fn tablespaces(data_dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let dir = data_dir.join("pg_tblspc");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if vanished(&e) => return Ok(out),
        Err(e) => return Err(context("cannot list", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| context("cannot list", &dir, e))?;
        let path = entry.path();
        match fs::read_link(&path) {
            Ok(location) => out.push((entry.file_name().to_string_lossy().into_owned(), location)),
            // A directory (an in-place tablespace) is part of the data directory's tar.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(context("cannot read the link", &path, e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the page at `offset` of `file` again; false when the file ends before it.
fn reread_page(file: &File, offset: u64, page: &mut [u8; BLCKSZ]) -> io::Result<bool> {
    match file.read_exact_at(page, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 8192] = [0; 8192];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn header_for(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(meta.mtime().max(0) as u64);
    header
}

#[cfg(test)]
mod tests;
