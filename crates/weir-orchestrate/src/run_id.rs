//! Run ids as users give them, and run ids and task names as folders of the logs.
//!
//! A run id comes from the API or the command line and names a folder under the logs
//! directory, so it is checked before anything is stored and turned into a folder name by
//! an encoding that is one-to-one (two runs never share a log) and can never leave its
//! parent (no `/`, never `.` or `..`).

use sha2::{Digest, Sha256};

/// The longest run id accepted, in characters.
pub const MAX_LEN: usize = 250;

/// Whether a run id may be used: 1 to 250 characters, not `.` or `..`, without `/` or
/// control characters (NUL would fail every attempt; a line break would let a caller forge
/// lines in the server's log).
pub fn check(id: &str) -> Result<(), String> {
    let len = id.chars().count();
    if len == 0 || len > MAX_LEN {
        return Err(format!("a run id has 1 to {MAX_LEN} characters (this one has {len})"));
    }
    if id == "." || id == ".." {
        return Err(format!("'{id}' is not a run id"));
    }
    if let Some(c) = id.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!("a run id may not hold {c:?}"));
    }
    Ok(())
}

/// The folder name for a run id or a task name. Letters, digits, `-`, `_`, `+` and a `.`
/// that does not start the name stay as they are; every other byte becomes `%XX`. A name
/// whose encoding would pass 150 bytes keeps its first 150, then `~` (which the encoding
/// never writes) and the SHA-256 of the whole name, so it stays within file-name limits.
pub fn folder(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'+' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 150 {
        let digest = Sha256::digest(name.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        out.truncate(150);
        out.push('~');
        out.push_str(&hex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_that_could_leave_their_folder_or_forge_lines_are_refused() {
        for bad in ["", ".", "..", "a/b", "nul\0", "line\nforged", "tab\there", &"x".repeat(251)] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["manual__2026-12-02T14:55:25.054321Z", "coll:x", "coll x", "été", "..a", &"x".repeat(250)] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn similar_ids_get_their_own_folders() {
        let names: Vec<String> = ["coll:x", "coll_x", "coll x", "coll%3Ax", ".", "..", ".a", "a.b"].iter().map(|n| folder(n)).collect();
        assert_eq!(names, ["coll%3Ax", "coll_x", "coll%20x", "coll%253Ax", "%2E", "%2E.", "%2Ea", "a.b"]);
    }

    proptest! {
        /// Different names never share a folder, and a folder is one safe path component.
        #[test]
        fn folders_are_one_to_one_and_stay_in_their_parent(a in "\\PC{0,200}", b in "\\PC{0,200}") {
            let (fa, fb) = (folder(&a), folder(&b));
            prop_assert_eq!(fa == fb, a == b);
            for f in [&fa, &fb] {
                prop_assert!(!f.contains('/') && f != "." && f != ".." && f.len() <= 215);
            }
        }
    }
}
