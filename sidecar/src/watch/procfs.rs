//! The few things the watcher reads from `/proc`, each parsed from text by a pure function so
//! the parsing is unit-tested without a process table.
//!
//! Cost matters here: the watcher polls every few milliseconds for the pod's whole life, so the
//! idle path is one `pread` of `/proc/loadavg` on a descriptor kept open ([`PidCursor`]), and
//! everything else (listing pids, reading `stat` and `cmdline`) runs only when that cursor moved.
//! Files are read with a plain `open` + `read` into a small buffer: std's `read_to_end` would
//! add an `fstat` and an `lseek` per file for a size hint that `/proc` files do not have.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the process table is mounted.
pub(crate) const PROC: &str = "/proc";

/// The fields of `/proc/PID/stat` the watcher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// One of `R S D Z T t X I ...`; `Z` (zombie) and `X` (dead) mean the process has exited.
    pub state: char,
    pub ppid: u32,
    /// Start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
    /// The exit status in `waitpid` form (field 52, Linux 3.5+). Only meaningful for a zombie,
    /// and reads 0 when the reader may not `ptrace` the process.
    pub wait_status: Option<i32>,
}

impl ProcStat {
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields after it are found from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(22 - 3)?.parse().ok()?;
    let wait_status = fields.get(52 - 3).and_then(|f| f.parse().ok());
    Some(ProcStat {
        state,
        ppid,
        start_ticks,
        wait_status,
    })
}

/// Splits `/proc/PID/cmdline` (NUL-separated, NUL-terminated) into its arguments. Empty for
/// kernel threads and zombies.
pub(crate) fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Parses a `children` file: pids separated by spaces.
pub(crate) fn parse_pid_list(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split_whitespace().filter_map(|p| p.parse().ok())
}

/// The last field of `/proc/loadavg`: the pid most recently allocated in the reader's pid
/// namespace.
pub(crate) fn parse_loadavg_last_pid(text: &str) -> Option<u64> {
    text.split_whitespace().last()?.parse().ok()
}

/// Decodes a `waitpid` status into an exit code, a signal `N` giving `128 + N` as shells and
/// Kubernetes report it.
pub(crate) fn exit_code_from_wait_status(status: i32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        (status >> 8) & 0xff
    } else {
        128 + signal
    }
}

fn pid_path(pid: u32, file: &str) -> PathBuf {
    Path::new(PROC).join(pid.to_string()).join(file)
}

/// Reads a small file whole, with `open` + `read` only.
pub(crate) fn read_small(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut file = File::open(path)?;
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(crate) fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let mut buf = Vec::with_capacity(512);
    read_small(&pid_path(pid, "stat"), &mut buf)?;
    parse_stat(&String::from_utf8_lossy(&buf)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

pub(crate) fn read_cmdline(pid: u32) -> io::Result<Vec<String>> {
    let mut buf = Vec::with_capacity(256);
    read_small(&pid_path(pid, "cmdline"), &mut buf)?;
    Ok(parse_cmdline(&buf))
}

/// Whether this process may read `pid`'s exit status from `/proc/PID/stat` (the kernel writes 0
/// there unless `ptrace` read access is allowed, the same check as for the `exe` link).
pub(crate) fn exit_status_readable(pid: u32) -> bool {
    std::fs::read_link(pid_path(pid, "exe")).is_ok()
}

/// Every process (thread-group leader) in the pid namespace.
pub(crate) fn list_all_pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(PROC)? {
        let entry = entry?;
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The direct children of `pid`, from `/proc/PID/task/*/children` (each thread lists the
/// children it forked). Empty when `pid` is gone.
pub(crate) fn list_children(pid: u32, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
    let Ok(tasks) = std::fs::read_dir(pid_path(pid, "task")) else {
        return;
    };
    for task in tasks.flatten() {
        if read_small(&task.path().join("children"), buf).is_ok() {
            out.extend(parse_pid_list(&String::from_utf8_lossy(buf)));
        }
    }
}

/// All descendants of `root` (not `root` itself), parents before their children.
pub(crate) fn list_descendants(root: u32) -> Vec<u32> {
    let mut buf = Vec::with_capacity(256);
    let mut out = Vec::new();
    list_children(root, &mut buf, &mut out);
    let mut next = 0;
    while next < out.len() {
        let pid = out[next];
        next += 1;
        let before = out.len();
        let mut children = Vec::new();
        list_children(pid, &mut buf, &mut children);
        // A pid listed twice (a race with reparenting) would make the walk loop.
        children.retain(|c| *c != root && !out[..before].contains(c));
        out.extend(children);
    }
    out
}

/// Whether the kernel has `/proc/PID/task/TID/children` (`CONFIG_PROC_CHILDREN`).
pub(crate) fn children_files_supported() -> bool {
    let own = std::process::id();
    pid_path(own, "task")
        .join(own.to_string())
        .join("children")
        .exists()
}

/// The pid namespace's allocation cursor (the last field of `/proc/loadavg`), read with one
/// `pread` on a descriptor kept open. Any fork or thread creation in the namespace moves it, so
/// an unchanged cursor means no new process appeared since the last read.
#[derive(Debug)]
pub(crate) struct PidCursor {
    file: File,
}

impl PidCursor {
    pub fn open() -> io::Result<PidCursor> {
        let cursor = PidCursor {
            file: File::open(Path::new(PROC).join("loadavg"))?,
        };
        // Refuse a file that does not parse, or that does not re-read from offset 0.
        cursor.read()?;
        cursor.read()?;
        Ok(cursor)
    }

    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(parse_loadavg_last_pid)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/loadavg"))
    }
}

/// How long ago a process started, from its `start_ticks` and the boot clock. `None` if the
/// clocks disagree (a start in the future).
pub(crate) fn age_of(start_ticks: u64) -> Option<Duration> {
    let ticks_per_second = rustix::param::clock_ticks_per_second().max(1);
    let started = Duration::from_secs(start_ticks / ticks_per_second)
        + Duration::from_nanos((start_ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    );
    now.checked_sub(started)
}

/// The chain of parents of this process, nearest first (not including itself, nor pid 0).
pub(crate) fn own_ancestors() -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    while let Ok(stat) = read_stat(pid) {
        if stat.ppid == 0 || out.contains(&stat.ppid) {
            break;
        }
        out.push(stat.ppid);
        pid = stat.ppid;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces_and_parentheses() {
        let text = "4242 (my (odd) cmd) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 \
                    0 0 0 0 0 0 0 256";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!(stat.wait_status, Some(256));
        assert!(!stat.exited());
    }

    #[test]
    fn stat_of_an_old_kernel_has_no_exit_status() {
        let stat = parse_stat("1 (init) Z 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5").unwrap();
        assert_eq!(stat.wait_status, None);
        assert!(stat.exited());
        assert_eq!(parse_stat("1 (init) Z"), None);
    }

    #[test]
    fn own_stat_parses() {
        let stat = read_stat(std::process::id()).unwrap();
        assert!(!stat.exited());
        assert!(age_of(stat.start_ticks).is_some());
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(
            parse_cmdline(b"argoexec\0emissary\0--\0python\0train.py\0"),
            ["argoexec", "emissary", "--", "python", "train.py"]
        );
        assert!(parse_cmdline(b"").is_empty());
        // A process that rewrote its title without NULs.
        assert_eq!(parse_cmdline(b"nginx: worker"), ["nginx: worker"]);
    }

    #[test]
    fn loadavg_last_field_is_the_pid_cursor() {
        assert_eq!(
            parse_loadavg_last_pid("0.52 0.58 0.59 2/385 23133\n"),
            Some(23133)
        );
        assert_eq!(parse_loadavg_last_pid(""), None);
        let cursor = PidCursor::open().unwrap();
        let before = cursor.read().unwrap();
        std::process::Command::new("true").status().unwrap();
        assert_ne!(cursor.read().unwrap(), before, "a fork moves the cursor");
    }

    #[test]
    fn wait_status_decodes_like_a_shell() {
        assert_eq!(exit_code_from_wait_status(0), 0);
        assert_eq!(exit_code_from_wait_status(3 << 8), 3);
        assert_eq!(exit_code_from_wait_status(9), 137);
        assert_eq!(exit_code_from_wait_status(15), 143);
    }

    #[test]
    fn pid_lists_parse() {
        assert_eq!(
            parse_pid_list("12 13 200 ").collect::<Vec<_>>(),
            [12, 13, 200]
        );
    }
}
