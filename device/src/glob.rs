//! Reader-name globs from the config: `*` matches any run of characters, `?` exactly one.

/// True when `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for the last `*`: linear enough for reader names.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_as_a_table() {
        let cases = [
            ("*", "ACS ACR122U PICC Interface 00 00", true),
            ("ACS ACR122U*", "ACS ACR122U PICC Interface 00 00", true),
            ("ACS ACR122U*", "ACS ACR1252 Dual Reader PICC 00 00", false),
            ("*PICC*", "ACS ACR1252 Dual Reader PICC 00 00", true),
            ("Virtual PCD 00 0?", "Virtual PCD 00 01", true),
            ("Virtual PCD 00 0?", "Virtual PCD 00 011", false),
            ("Virtual PCD 00 00", "Virtual PCD 00 00", true),
            ("Virtual PCD 00 00", "Virtual PCD 00 01", false),
            ("", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                super::matches(pattern, name),
                expected,
                "{pattern:?} vs {name:?}"
            );
        }
    }
}
