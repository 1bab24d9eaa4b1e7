//! `notify:`: where the outcome of every apply is sent.

use schemars::JsonSchema;
use serde::Deserialize;

/// Where outcomes are sent: a URL (berth's JSON), or a Slack incoming webhook.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Notify {
    /// `http(s)://host[:port]/path`: a JSON POST (docs/json.md shows the body).
    Url(String),
    /// `{ slack: URL }`: a Slack incoming webhook, sent a one-line message.
    Slack(SlackHook),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackHook {
    /// The incoming webhook's URL.
    pub slack: String,
}

impl Notify {
    /// The webhook, and what it is sent.
    pub fn hook(&self) -> crate::notify::Hook {
        use crate::notify::{Format, Hook};
        match self {
            Notify::Url(url) => Hook {
                url: url.clone(),
                format: Format::Json,
            },
            Notify::Slack(s) => Hook {
                url: s.slack.clone(),
                format: Format::Slack,
            },
        }
    }
}
