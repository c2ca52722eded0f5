//! `edgeimg-agent ready`: run on every boot by edgeimg-ready.service once
//! the node's services are up. Records the boot and announces readiness on
//! stdout and the console, where test harnesses and operators look for it.
//! With K3s it then polls the node's Ready condition (every 2 s, up to
//! `cluster_ready_timeout_secs`) and announces the cluster-ready line.

use crate::config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{
    BOOTS_LOG, CLUSTER_NOT_READY_PREFIX, CLUSTER_READY_LINE, CLUSTER_READY_STAND_IN_LINE, K3S_BIN,
    READY_FILE, READY_LINE,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Contents of [`READY_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Unix seconds when the node became ready.
    pub since: u64,
    /// Boot id of the boot this applies to.
    pub boot_id: String,
    /// With K3s: false while waiting for the node to report Ready (and after
    /// giving up), true once it did. Absent for a plain appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ready: Option<bool>,
    /// Why the cluster is not ready, after `ready` gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
}

/// Knobs of `ready`; [`ReadyOptions::default`] is what the device uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyOptions {
    /// Time between readiness polls (2 s).
    pub poll_interval: Duration,
    /// Longest a single poll may take before it is killed (30 s).
    pub attempt_timeout: Duration,
    /// Replaces `[<root>/usr/local/bin/k3s, "kubectl"]` in the readiness
    /// command (tests point it at a fake); the arguments are appended.
    pub kubectl: Option<Vec<String>>,
    /// Replaces the image's `cluster_ready_timeout_secs` (tests).
    pub timeout: Option<Duration>,
}

impl Default for ReadyOptions {
    fn default() -> Self {
        ReadyOptions {
            poll_interval: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(30),
            kubectl: None,
            timeout: None,
        }
    }
}

/// Outcome of [`wait_cluster_ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWait {
    /// The node reported Ready=True.
    pub ready: bool,
    /// How many times the command ran.
    pub polls: u32,
    /// Why the last poll did not say ready (empty when ready).
    pub last_error: String,
}

/// Append `boot_id` to the boots log text unless it is already the last line
/// (the service may be restarted within one boot).
pub fn append_boot(log: &str, boot_id: &str) -> Option<String> {
    if log.lines().last() == Some(boot_id) {
        return None;
    }
    let mut s = log.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(boot_id);
    s.push('\n');
    Some(s)
}

/// Print `line` on `out` and on every console (appending: a console may be a
/// plain file under a test root).
fn announce(root: &Root, out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    // The consoles may be absent or busy; the journal still has the stdout line.
    for dev in console_devices(root) {
        if let Ok(mut c) = std::fs::OpenOptions::new()
            .append(true)
            .open(root.path(&dev))
        {
            let _ = c.write_all(format!("\r\n{line}\n").as_bytes());
        }
    }
    // And through the kernel log, which the kernel prints on every console by
    // polling: a serial port whose tty path does not deliver user writes (the
    // PL011 of QEMU's raspi4b) still shows it. Level 4 (warning) passes the
    // default console log level.
    if let Ok(mut k) = std::fs::OpenOptions::new()
        .append(true)
        .open(root.path("/dev/kmsg"))
    {
        let _ = k.write_all(format!("<4>{line}\n").as_bytes());
    }
}

/// /dev/console plus every console the kernel has active: /dev/console is
/// only the last `console=`, and an operator may watch another one (a Pi's
/// HDMI tty1 and its serial port; QEMU's raspi4b serial port is ttyAMA0 while
/// the card's last console is the real Pi's mini UART).
fn console_devices(root: &Root) -> Vec<String> {
    let mut devs = vec!["/dev/console".to_string()];
    let active =
        std::fs::read_to_string(root.path("/sys/class/tty/console/active")).unwrap_or_default();
    // Which of them /dev/console is cannot be told reliably from here (the
    // order of `active` differs between setups), so a line may show twice on
    // the console device; never missing on one is what matters.
    for name in active.split_whitespace() {
        let dev = format!("/dev/{name}");
        if !devs.contains(&dev) {
            devs.push(dev);
        }
    }
    devs
}

/// Run `command` once, killing it (and its process group) after `limit`.
/// Ok(stdout, trimmed) when it exits 0; Err(one-line reason) otherwise.
fn probe_once(command: &[String], limit: Duration) -> std::result::Result<String, String> {
    let (program, args) = command.split_first().ok_or("empty readiness command")?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no error output");
            let last: String = last.chars().take(300).collect();
            Err(format!("kubectl failed ({}): {last}", out.status))
        }
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Err(_) => {
            // SAFETY: plain syscall; the child is not reaped yet (the waiting
            // thread has not returned), so the group id is still ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(1));
            Err(format!(
                "kubectl did not answer within {} s",
                limit.as_secs_f64()
            ))
        }
    }
}

/// Poll `command` every `interval` until it prints `True` (the node's Ready
/// condition) or `timeout` has passed; at least one poll is made.
pub fn wait_cluster_ready(
    command: &[String],
    hostname: &str,
    interval: Duration,
    timeout: Duration,
    attempt_timeout: Duration,
) -> ClusterWait {
    let deadline = Instant::now() + timeout;
    let mut polls = 0;
    loop {
        polls += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let last_error = match probe_once(
            command,
            attempt_timeout.min(left.max(Duration::from_secs(1))),
        ) {
            Ok(s) if s == "True" => {
                return ClusterWait {
                    ready: true,
                    polls,
                    last_error: String::new(),
                };
            }
            Ok(s) if s.is_empty() => format!("node {hostname} has no Ready condition yet"),
            Ok(s) => format!("node {hostname} is not Ready (Ready={s})"),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            return ClusterWait {
                ready: false,
                polls,
                last_error,
            };
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// Mark this boot ready; fails when first boot has not completed.
pub fn run(root: &Root) -> Result<()> {
    run_with(root, &ReadyOptions::default(), &mut std::io::stdout())
}

/// [`run`] with explicit options and output (tests).
pub fn run_with(root: &Root, opts: &ReadyOptions, out: &mut dyn Write) -> Result<()> {
    let Some(stamp) = crate::firstboot::read_stamp(root)? else {
        crate::bail!(
            "first boot did not complete (no {})",
            crate::schema::FIRSTBOOT_STAMP
        );
    };
    let boot_id = config::boot_id(root)?;
    let image = config::load_image(root)?;
    // Finishes what first boot could not when the boot partition was not
    // mounted yet (a no-op once the token is gone).
    crate::scrub::scrub_and_log(root, &image);
    let mut info = ReadyInfo {
        since: config::now_secs(),
        boot_id: boot_id.clone(),
        cluster_ready: image.k3s.as_ref().map(|_| false),
        cluster_error: None,
    };
    let write_info = |info: &ReadyInfo| -> Result<()> {
        let json = serde_json::to_string(info).expect("ready info serializes");
        fsutil::write_atomic(
            &root.path(READY_FILE),
            format!("{json}\n").as_bytes(),
            0o644,
        )
    };
    write_info(&info)?;

    let log_path = root.path(BOOTS_LOG);
    let log = fsutil::read_opt(&log_path)?.unwrap_or_default();
    if let Some(new) = append_boot(&log, &boot_id) {
        fsutil::write_atomic(&log_path, new.as_bytes(), 0o644)?;
    }
    announce(root, out, READY_LINE);

    let Some(k3s) = &image.k3s else { return Ok(()) };
    let role = stamp.k3s_role.unwrap_or(k3s.role);
    let mut command = match &opts.kubectl {
        Some(prefix) => prefix.clone(),
        None => vec![
            root.path(K3S_BIN).to_string_lossy().into_owned(),
            "kubectl".into(),
        ],
    };
    command.extend(crate::k3s::kubectl_ready_args(role, &stamp.hostname));
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(k3s.cluster_ready_timeout_secs));
    crate::log(format!(
        "waiting up to {} s for node {} ({role}) to report Ready",
        timeout.as_secs(),
        stamp.hostname
    ));
    let w = wait_cluster_ready(
        &command,
        &stamp.hostname,
        opts.poll_interval,
        timeout,
        opts.attempt_timeout,
    );
    info.cluster_ready = Some(w.ready);
    if w.ready {
        write_info(&info)?;
        crate::log(format!(
            "node {} reported Ready after {} poll(s)",
            stamp.hostname, w.polls
        ));
        // The stand-in bundle is labelled as such wherever it shows.
        announce(
            root,
            out,
            if k3s.stand_in {
                CLUSTER_READY_STAND_IN_LINE
            } else {
                CLUSTER_READY_LINE
            },
        );
        Ok(())
    } else {
        let reason = format!(
            "{} (gave up after {} s, {} polls)",
            w.last_error,
            timeout.as_secs(),
            w.polls
        );
        info.cluster_error = Some(reason.clone());
        write_info(&info)?;
        announce(root, out, &format!("{CLUSTER_NOT_READY_PREFIX}{reason}"));
        Err(Error::msg(format!("cluster not ready: {reason}")))
    }
}

#[cfg(test)]
mod tests {
    use super::{append_boot, wait_cluster_ready};
    use std::time::{Duration, Instant};

    #[test]
    fn hung_probe_is_killed_and_reported() {
        let t = Instant::now();
        // The shell's child `sleep` holds the pipes: the whole group must die.
        let cmd = [
            "/bin/sh".to_string(),
            "-c".into(),
            "sleep 30; echo True".into(),
        ];
        let w = wait_cluster_ready(
            &cmd,
            "n",
            Duration::from_millis(50),
            Duration::from_millis(300),
            Duration::from_millis(200),
        );
        assert!(!w.ready);
        assert!(w.last_error.contains("did not answer"), "{w:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let w = wait_cluster_ready(
            &["/nonexistent/k3s".to_string()],
            "n",
            Duration::from_millis(10),
            Duration::ZERO,
            Duration::from_secs(1),
        );
        assert_eq!((w.ready, w.polls), (false, 1));
        assert!(
            w.last_error.starts_with("cannot run /nonexistent/k3s"),
            "{w:?}"
        );
    }

    #[test]
    fn boots_log_appends_once() {
        assert_eq!(append_boot("", "a").as_deref(), Some("a\n"));
        assert_eq!(append_boot("a\n", "a"), None);
        assert_eq!(append_boot("a\nb", "a").as_deref(), Some("a\nb\na\n"));
    }
}
