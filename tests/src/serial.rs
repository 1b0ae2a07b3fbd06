//! A serial reader for tests: a pseudo-terminal whose slave side sits at a fixed path (a symlink), as `/dev/serial/by-id` does.
//!
//! The test writes what the reader would send into the master side. Dropping the
//! master is an unplug; a new pty behind the same path is the reader plugged back.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::pty::PtyMaster;

/// A plugged-in (or unplugged) virtual serial reader.
#[derive(Debug)]
pub struct PtyReader {
    link: PathBuf,
    master: Option<PtyMaster>,
}

impl PtyReader {
    /// Plugs a reader in at `link` (a symlink to be created).
    pub fn plug_in(link: &Path) -> PtyReader {
        let mut reader = PtyReader {
            link: link.to_owned(),
            master: None,
        };
        reader.plug();
        reader
    }

    /// Plugs (back) in: a new pty, and the link moved to it atomically.
    pub fn plug(&mut self) {
        // Close-on-exec: a kiosk started later must not inherit the master, or
        // closing it here would not hang the line up.
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("open a pty");
        nix::pty::grantpt(&master).expect("grantpt");
        nix::pty::unlockpt(&master).expect("unlockpt");
        // The test never opens the slave side: only the kiosk does, in raw mode.
        let target = nix::pty::ptsname_r(&master).expect("pty slave name");
        let tmp = self.link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).expect("symlink the pty");
        std::fs::rename(&tmp, &self.link).expect("move the symlink into place");
        self.master = Some(master);
    }

    /// Unplugs: the link goes first (so the kiosk cannot reopen a pty number that
    /// another test gets next), then the master closes, which the kiosk sees as a hang-up.
    pub fn unplug(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        self.master = None;
    }

    /// Sends bytes as the reader would, in one write.
    pub fn send(&mut self, bytes: &[u8]) {
        let master = self.master.as_mut().expect("reader is plugged in");
        master.write_all(bytes).expect("write to the pty");
        master.flush().expect("flush the pty");
    }

    pub fn path(&self) -> &Path {
        &self.link
    }
}

/// An RDM6300 frame (`02`, version + 4-byte number in hex, XOR checksum, `03`).
pub fn rdm6300_frame(version: u8, number: u32) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend_from_slice(&number.to_be_bytes());
    let xor = bytes.iter().fold(0, |acc, b| acc ^ b);
    bytes.push(xor);
    let mut frame = vec![0x02];
    for b in bytes {
        frame.extend_from_slice(format!("{b:02X}").as_bytes());
    }
    frame.push(0x03);
    frame
}

/// A Wiegand-26 frame (even parity, 8-bit facility, 16-bit number, odd parity) as a number.
pub fn wiegand26(facility: u8, number: u16) -> u32 {
    let data = (u32::from(facility) << 16) | u32::from(number);
    let mut frame = data << 1;
    if (data >> 12).count_ones() % 2 == 1 {
        frame |= 1 << 25;
    }
    if (data & 0xFFF).count_ones() % 2 == 0 {
        frame |= 1;
    }
    frame
}

/// Deterministic noise, as a loose cable might produce. It has no STX (0x02), so it
/// can never hold a frame of its own, only spoil one it interrupts.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            match (x >> 24) as u8 {
                0x02 => 0x00,
                b => b,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_documented_examples() {
        // Version 0x3E, card 0x0086F444: checksum 3E^00^86^F4^44 = 0x08.
        assert_eq!(
            rdm6300_frame(0x3E, 0x0086_F444),
            b"\x023E0086F44408\x03".to_vec()
        );
        let f = wiegand26(123, 45678);
        assert_eq!((f >> 17) & 0xFF, 123);
        assert_eq!((f >> 1) & 0xFFFF, 45678);
        assert_eq!(((f >> 13) & 0x1FFF).count_ones() % 2, 0);
        assert_eq!((f & 0x1FFF).count_ones() % 2, 1);
        assert!(!noise(4096, 7).contains(&0x02));
    }
}
