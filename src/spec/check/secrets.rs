//! Secrets: their files, recipients and patterns, and how pods take them.

use std::collections::HashMap;

use super::{Checker, valid_env_name};
use crate::diag::{Diagnostic, Span};
use crate::sensitive::contains_age_secret_key;
use crate::spec::units::{ModeKind, UnitKind};
use crate::spec::{Named, Pod, Secret, SecretUse, Sp};

impl Checker<'_> {
    pub(super) fn recipients_of(&mut self, owner: &str, list: &[Sp<String>]) {
        for r in list {
            let v = r.value.trim();
            if contains_age_secret_key(v) {
                // Never quote it: the snippet masks it, and so must the message.
                self.push(
                    Diagnostic::error("private-key-as-recipient", format!("{owner} lists an age private key as a recipient"))
                        .at(r.span, "this is a secret key, not a public recipient")
                        .help("remove it from the spec at once, rotate it, and list its public key (`age1...`, from `age-keygen -y`)"),
                );
            } else if !(is_age_recipient(v)
                || v.starts_with("ssh-ed25519 ")
                || v.starts_with("ssh-rsa "))
            {
                self.push(
                    Diagnostic::error("invalid-recipient", format!("{owner} lists something that is not an age recipient"))
                        .at(r.span, "not `age1...` or an ssh public key")
                        .help("use the public key printed by `berth secrets init` or `age-keygen -y KEYFILE`"),
                );
            }
        }
        self.no_duplicates(list, "recipient");
    }

    pub(super) fn secrets(&mut self) {
        for s in self.spec.secrets.iter() {
            if s.item.file.value.trim().is_empty() {
                self.push(
                    Diagnostic::error(
                        "empty-path",
                        format!("secret `{}` has an empty `file`", s.name.value),
                    )
                    .at(s.item.file.span, "empty")
                    .help("give the path of the encrypted file, e.g. `secrets/db_password.age`"),
                );
            }
            match &s.item.recipients {
                Some(list) => self.recipients_of(&format!("secret `{}`", s.name.value), list),
                // With an explicit `identity:` and no list, secrets are encrypted to that
                // identity's key alone (a one-person, one-host setup).
                None if self.spec.recipients.is_empty() && self.spec.identity.is_none() => self.push(
                    Diagnostic::error(
                        "no-recipients",
                        format!("secret `{}` has no recipients", s.name.value),
                    )
                    .at(s.name.span, "nobody could decrypt it after a rotation")
                    .help("list the team's public keys under top-level `recipients:`, or name the one `identity:` whose key may decrypt"),
                ),
                None => {}
            }
            self.secret_file_inside(s);
            for (key, p) in [
                ("pattern", &s.item.pattern),
                ("forbid_pattern", &s.item.forbid_pattern),
            ] {
                let Some(p) = p else { continue };
                if let Err(why) = crate::spec::pattern::compile(&p.value) {
                    self.push(
                        Diagnostic::error(
                            "invalid-pattern",
                            format!(
                                "secret `{}` has a `{key}` that is not a regular expression: {why}",
                                s.name.value
                            ),
                        )
                        .at(p.span, "not a regular expression")
                        .help("write it in the syntax of Rust's `regex` crate (like RE2: no look-around or back-references), e.g. `^sk_live_[0-9A-Za-z]{24,}$`"),
                    );
                }
            }
            if s.item.min_length == Some(0) {
                self.push(
                    Diagnostic::warning(
                        "useless-check",
                        format!("secret `{}` has `min_length: 0`", s.name.value),
                    )
                    .at(s.name.span, "checks nothing")
                    .help("remove it or set a real minimum, e.g. 16"),
                );
            }
        }
        if let Some(key) = &self.spec.backup_key
            && !self.spec.secrets.contains(&key.value)
        {
            self.unknown("secret", key, self.spec.secrets.names(), "secrets");
        }
    }

    /// A secret's `file` written so that it leaves the spec's directory (absolute, `~`, or
    /// climbing out with `..`), without `allow_outside: true`. Symlinks are resolved by the
    /// pre-flight and by `berth secrets set`, which see the files.
    fn secret_file_inside(&mut self, s: &Named<Secret>) {
        let file = &s.item.file;
        if s.item.allow_outside || file.value.trim().is_empty() {
            return;
        }
        let v = file.value.as_str();
        let mut depth: i64 = 0;
        let mut climbs = false;
        for part in v.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    climbs |= depth < 0;
                }
                _ => depth += 1,
            }
        }
        if v.starts_with('/') || v.starts_with('~') || climbs {
            self.push(
                Diagnostic::error(
                    "secret-file-outside",
                    format!(
                        "secret `{}` has a `file` outside the spec's directory",
                        s.name.value
                    ),
                )
                .at(file.span, "outside the spec's directory")
                .help("keep secret files beside the spec, e.g. `secrets/NAME.age`; if the file must live elsewhere, add `allow_outside: true` to this secret"),
            );
        }
    }

    pub(super) fn pod_secrets(&mut self, pod_name: &Sp<String>, pod: &Pod) {
        let spec = self.spec;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for use_ in &pod.secrets {
            let secret = use_.value.name();
            let as_sp = Sp::new(secret.to_owned(), use_.span);
            if !spec.secrets.contains(secret) {
                self.unknown("secret", &as_sp, spec.secrets.names(), "secrets");
            }
            if let Some(first) = seen.insert(secret, use_.span) {
                self.push(
                    Diagnostic::error(
                        "duplicate-entry",
                        format!(
                            "secret `{secret}` is given to pod `{}` twice",
                            pod_name.value
                        ),
                    )
                    .at(use_.span, "again here")
                    .related(first, "first here")
                    .help("list each secret once"),
                );
            }
            if let Some(var) = use_.value.env() {
                if !valid_env_name(var) {
                    self.push(
                        Diagnostic::error(
                            "invalid-env-name",
                            format!("`{var}` is not an environment variable name"),
                        )
                        .at(use_.span, "in this secret")
                        .help("use letters, digits and `_`, not starting with a digit"),
                    );
                }
                if pod.env.contains(var) {
                    self.push(
                        Diagnostic::error(
                            "env-conflict",
                            format!("`{var}` is set by both `env` and secret `{secret}`"),
                        )
                        .at(use_.span, "secret delivered as env")
                        .help("remove the plain `env` entry"),
                    );
                }
            }
            if let SecretUse::Detailed(d) = &use_.value
                && let Some(mode) = &d.mode
                && let Err(why) = &mode.parsed
            {
                // Spans inside a short/long-form secret entry are not kept; point at the entry.
                self.push(
                    Diagnostic::error("invalid-unit", format!("`mode`: {why}"))
                        .at(use_.span, "in this secret")
                        .help(format!("write {}", ModeKind::HINT)),
                );
            }
        }
    }
}

/// An age X25519 recipient: `age1` and 58 bech32 characters.
pub fn is_age_recipient(s: &str) -> bool {
    const BECH32: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    s.len() == 62 && s.starts_with("age1") && s[4..].chars().all(|c| BECH32.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients() {
        assert!(is_age_recipient(
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
        ));
        assert!(!is_age_recipient("age1short"));
    }
}
