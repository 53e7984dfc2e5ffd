//! Child processes that never outlive the test that started them.

use std::path::PathBuf;
use std::process::Command;

/// A child process killed and reaped when dropped.
pub struct Child {
    name: String,
    inner: std::process::Child,
}

impl Child {
    /// Spawns `cmd`, naming it for error messages.
    pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Child> {
        Ok(Child { name: name.to_string(), inner: cmd.spawn()? })
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Whether the process has exited, with its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.try_wait().ok().flatten()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Child {
    /// Kills the process and waits for it (as dropping it does).
    pub fn stop(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

/// The path of a binary built by this workspace (`target/<profile>/<name>`), next to the running test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // Test executables live in target/<profile>/deps; binaries one level up.
    let dir = exe.parent().and_then(|d| if d.ends_with("deps") { d.parent() } else { Some(d) }).expect("target dir");
    dir.join(name)
}
