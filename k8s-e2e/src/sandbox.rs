//! One container as a local process in its own mount and PID namespaces.
//!
//! The agent may not use `unsafe`, so it cannot call `unshare(2)`/`mount(2)` itself. Instead it
//! writes a small shell prelude per container and runs it as
//! `unshare --pid --fork --kill-child --mount --propagation private -- sh PRELUDE`, or, in a pod
//! with `shareProcessNamespace: true`, as `nsenter --target SANDBOX --pid -- unshare --mount …`
//! inside the PID namespace that the pod's sandbox process ([`PodSandbox`], the pause
//! container's part) holds. Either way the container's command runs as a child of the process
//! the agent spawned; [`container_pid`] finds it, and the agent signals it there.
//!
//! The PID namespace is not a nicety: Argo's emissary forwards a signal it receives after its
//! command has exited to process `-1`, which is every process the sender may signal. In a pod
//! that is the pod's own processes; on a host PID namespace it would be the whole machine.
//!
//! The prelude mounts a fresh tmpfs as
//! the container's root, binds the host's system directories read-only into it, adds a `/proc`
//! of the container's PID namespace,
//! `/sys`, a minimal `/dev`, a fresh `/tmp`, the image's binaries at
//! [`IMAGE_BIN_DIR`](crate::config::IMAGE_BIN_DIR), the termination-message file and then the
//! pod's volume mounts in spec order, and finally `exec`s `chroot ROOT sh -c 'cd DIR && exec
//! "$@"'`, so the process the agent spawned becomes the container's command (same PID): the
//! agent signals it directly. Every path is a single-quoted literal in the prelude; the
//! container's environment is the process environment, so nothing of it passes through argv.
//!
//! A subPath mount is decided when the container starts, as the kubelet does: a directory is
//! bound as a directory, an existing file as a single file, and a missing subPath is created as
//! a directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::Pid;

use crate::error::{Error, Result};

/// Absolute paths of the host tools the prelude needs, found once at start.
#[derive(Debug, Clone)]
pub struct HostTools {
    pub unshare: PathBuf,
    pub nsenter: PathBuf,
    pub sh: PathBuf,
    pub sleep: PathBuf,
}

impl HostTools {
    /// Finds the tools on the usual system directories.
    pub fn find() -> Result<Self> {
        Ok(HostTools {
            unshare: find_tool("unshare")?,
            nsenter: find_tool("nsenter")?,
            sh: find_tool("sh")?,
            sleep: find_tool("sleep")?,
        })
    }
}

fn find_tool(tool: &str) -> Result<PathBuf> {
    const DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];
    DIRS.iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingTool {
            tool: tool.to_string(),
            searched: DIRS.join(":"),
        })
}

/// One volume mount of the container.
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// Host path: the volume directory, joined with the subPath if any.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    /// Empty directory on which the container's root tmpfs is mounted (inside its namespace).
    pub root: PathBuf,
    pub host_dirs: Vec<PathBuf>,
    /// Host directory bound at the image binary directory.
    pub image_bin: Option<PathBuf>,
    /// Host file bound at `termination_message_target`.
    pub termination_message_file: PathBuf,
    pub termination_message_target: String,
    pub mounts: Vec<MountPlan>,
    pub working_dir: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the prelude is written.
    pub prelude: PathBuf,
    /// stdout and stderr of the container go here.
    pub log: PathBuf,
}

/// Quotes `text` as one shell word.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn in_root(root: &str, target: &str) -> String {
    sh_quote(&format!("{root}/{}", target.trim_start_matches('/')))
}

/// The prelude for `plan` (pure; unit-tested).
pub fn prelude(plan: &ContainerPlan) -> String {
    let root = plan.root.display().to_string();
    let r = sh_quote(&root);
    let mut s = String::new();
    let _ = writeln!(s, "# kfcache node agent: container {}", plan.name);
    s.push_str("set -e\nKFCACHE_SAVED_PATH=${PATH-}\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
    let _ = writeln!(s, "mount -t tmpfs -o mode=0755 kfcache-root {r}");
    for dir in &plan.host_dirs {
        let d = dir.display().to_string();
        let target = in_root(&root, &d);
        match std::fs::read_link(dir) {
            Ok(link) => {
                let _ = writeln!(
                    s,
                    "ln -s {} {target}",
                    sh_quote(&link.display().to_string())
                );
            }
            Err(_) => {
                let _ = writeln!(
                    s,
                    "mkdir -p {target}\nmount --rbind {src} {target}\nmount -o remount,bind,ro {target}",
                    src = sh_quote(&d)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "mkdir -p {0} {1} {2} {3} {4} {5} {6}",
        in_root(&root, "/proc"),
        in_root(&root, "/sys"),
        in_root(&root, "/dev"),
        in_root(&root, "/tmp"),
        in_root(&root, "/run"),
        in_root(&root, "/var/tmp"),
        in_root(&root, "/root")
    );
    let _ = writeln!(s, "mount -t proc proc {}", in_root(&root, "/proc"));
    let _ = writeln!(s, "mount --rbind /sys {}", in_root(&root, "/sys"));
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=0755,nosuid kfcache-dev {}",
        in_root(&root, "/dev")
    );
    for device in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = in_root(&root, &format!("/dev/{device}"));
        let _ = writeln!(s, ": > {target}\nmount --bind /dev/{device} {target}");
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = writeln!(s, "ln -s {to} {}", in_root(&root, &format!("/dev/{link}")));
    }
    let _ = writeln!(
        s,
        "mkdir -p {0}\nmount -t tmpfs -o mode=1777 kfcache-shm {0}",
        in_root(&root, "/dev/shm")
    );
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=1777 kfcache-tmp {}",
        in_root(&root, "/tmp")
    );
    if let Some(bin) = &plan.image_bin {
        let target = in_root(&root, crate::config::IMAGE_BIN_DIR);
        let _ = writeln!(
            s,
            "mkdir -p {target}\nmount --bind {src} {target}\nmount -o remount,bind,ro {target}",
            src = sh_quote(&bin.display().to_string())
        );
    }
    write_mount(
        &mut s,
        &root,
        &plan.termination_message_file,
        &plan.termination_message_target,
        false,
    );
    for mount in &plan.mounts {
        write_mount(&mut s, &root, &mount.source, &mount.target, mount.read_only);
    }
    s.push_str("KFCACHE_CHROOT=$(command -v chroot)\nPATH=$KFCACHE_SAVED_PATH\nunset KFCACHE_SAVED_PATH\ncd /\n");
    let mut exec = format!(
        "exec \"$KFCACHE_CHROOT\" {r} /bin/sh -c 'cd \"$1\" || exit 128; shift; exec \"$@\"' kfcache-container {}",
        sh_quote(&plan.working_dir)
    );
    for arg in &plan.argv {
        exec.push(' ');
        exec.push_str(&sh_quote(arg));
    }
    s.push_str(&exec);
    s.push('\n');
    s
}

fn write_mount(s: &mut String, root: &str, source: &Path, target: &str, read_only: bool) {
    let src = sh_quote(&source.display().to_string());
    let dst = in_root(root, target);
    let _ = writeln!(
        s,
        "if [ -d {src} ]; then mkdir -p {dst}; elif [ -e {src} ]; then mkdir -p \"$(dirname {dst})\"; \
         [ -e {dst} ] || : > {dst}; else mkdir -p {src} {dst}; fi\nmount --rbind {src} {dst}"
    );
    if read_only {
        let _ = writeln!(s, "mount -o remount,bind,ro {dst}");
    }
}

/// The PID namespace a container runs in.
#[derive(Debug, Clone, Copy)]
pub enum PidNamespace {
    /// One of its own, as Kubernetes gives each container by default: its command is PID 1.
    Own,
    /// The pod's, held by the pod's sandbox process (its host PID), for a pod with
    /// `shareProcessNamespace: true`.
    Pod(Pid),
}

/// The process that holds a pod's shared PID namespace, as the pause container does: PID 1 of
/// the namespace. Dropping it kills it, and with it every process left in the namespace.
#[derive(Debug)]
pub struct PodSandbox {
    /// `unshare --pid --fork --kill-child`, whose death kills the namespace's PID 1.
    _holder: tokio::process::Child,
    pid: Pid,
}

impl PodSandbox {
    /// Starts the holder and waits until its PID 1 is there.
    pub async fn start(tools: &HostTools) -> Result<PodSandbox> {
        let mut command = tokio::process::Command::new(&tools.unshare);
        command
            .args(["--pid", "--fork", "--kill-child", "--"])
            .arg(&tools.sleep)
            .arg("infinity")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let holder = command.spawn().map_err(|source| Error::Spawn {
            container: "pod sandbox".into(),
            program: tools.unshare.display().to_string(),
            source,
        })?;
        let pid = match holder.id() {
            Some(id) => container_pid(id).await,
            None => None,
        };
        let pid = pid.ok_or_else(|| Error::Spawn {
            container: "pod sandbox".into(),
            program: tools.unshare.display().to_string(),
            source: std::io::Error::other("the sandbox's PID 1 did not appear"),
        })?;
        Ok(PodSandbox {
            _holder: holder,
            pid,
        })
    }

    pub fn namespace(&self) -> PidNamespace {
        PidNamespace::Pod(self.pid)
    }
}

/// The host PID of the process that `wrapper` (`unshare --fork` or `nsenter`) forked to run the
/// container, waiting up to 5 s for it; `None` when it is gone before it could be seen.
pub async fn container_pid(wrapper: u32) -> Option<Pid> {
    let children = format!("/proc/{wrapper}/task/{wrapper}/children");
    for _ in 0..500 {
        match std::fs::read_to_string(&children) {
            Ok(text) => {
                if let Some(pid) = text
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
                {
                    return Pid::from_raw(pid);
                }
            }
            // The wrapper is gone: so is its child.
            Err(_) => return None,
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}

/// Waits (up to 10 s) until the container's process has left the prelude, that is until it
/// runs the container's command: the moment a kubelet reports the container running. Before
/// it, the process is the prelude shell, PID 1 of its namespace, which ignores signals.
pub async fn wait_started(pid: Pid, plan: &ContainerPlan) {
    let cmdline = format!("/proc/{}/cmdline", pid.as_raw_nonzero());
    let prelude = plan.prelude.display().to_string();
    for _ in 0..1000 {
        match std::fs::read(&cmdline) {
            Ok(bytes) if String::from_utf8_lossy(&bytes).contains(&prelude) => {}
            _ => return,
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Writes the prelude and starts the container's process in `pid_namespace`; stdout and stderr
/// go to the log. The returned child is the wrapper; [`container_pid`] finds the container.
pub fn spawn(
    plan: &ContainerPlan,
    tools: &HostTools,
    pid_namespace: PidNamespace,
) -> Result<tokio::process::Child> {
    std::fs::create_dir_all(&plan.root).map_err(Error::io("create directory", &plan.root))?;
    std::fs::write(&plan.prelude, prelude(plan)).map_err(Error::io("write", &plan.prelude))?;
    if let Some(parent) = plan.termination_message_file.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
    }
    std::fs::write(&plan.termination_message_file, b"")
        .map_err(Error::io("create", &plan.termination_message_file))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.log)
        .map_err(Error::io("open", &plan.log))?;
    let log_err = log.try_clone().map_err(Error::io("open", &plan.log))?;
    let mut command = match pid_namespace {
        PidNamespace::Own => {
            let mut command = tokio::process::Command::new(&tools.unshare);
            command.args(["--pid", "--fork", "--kill-child"]);
            command
        }
        PidNamespace::Pod(sandbox) => {
            let mut command = tokio::process::Command::new(&tools.nsenter);
            command
                .arg("--target")
                .arg(sandbox.as_raw_nonzero().to_string())
                .args(["--pid", "--"])
                .arg(&tools.unshare);
            command
        }
    };
    command
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&tools.sh)
        .arg(&plan.prelude)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    command.spawn().map_err(|source| Error::Spawn {
        container: plan.name.clone(),
        program: tools.unshare.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn prelude_mounts_in_order_and_execs_the_command() {
        let plan = ContainerPlan {
            name: "main".into(),
            root: "/state/root".into(),
            host_dirs: vec!["/usr".into()],
            image_bin: Some("/opt/argo/bin".into()),
            termination_message_file: "/state/term".into(),
            termination_message_target: "/dev/termination-log".into(),
            mounts: vec![
                MountPlan {
                    source: "/state/v/a".into(),
                    target: "/var/run/argo".into(),
                    read_only: false,
                },
                MountPlan {
                    source: "/state/v/b/data".into(),
                    target: "/tmp/inputs/data".into(),
                    read_only: true,
                },
            ],
            working_dir: "/".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
            env: vec![],
            prelude: "/state/prelude.sh".into(),
            log: "/state/log".into(),
        };
        let text = prelude(&plan);
        let argo = text.find("'/state/root/var/run/argo'").expect("argo mount");
        let input = text
            .find("'/state/root/tmp/inputs/data'")
            .expect("input mount");
        assert!(argo < input, "{text}");
        assert!(
            text.contains("mount -o remount,bind,ro '/state/root/tmp/inputs/data'"),
            "{text}"
        );
        assert!(
            text.ends_with("kfcache-container '/' 'sh' '-c' 'echo '\\''hi'\\'''\n"),
            "{text}"
        );
    }
}
